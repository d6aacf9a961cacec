"""The exercises of notebooks 3-7: every check passes on its reference solution
(notebooks/solutions/) and fails, with an AssertionError, on a deliberately wrong answer."""

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))   # the notebooks import `from exercises import nb03`

from exercises import nb03 as ex3    # noqa: E402
from solutions import nb03 as sol3   # noqa: E402


def passes(check, *args, capsys):
    check(*args)
    assert capsys.readouterr().out.startswith("passed")


def fails(check, *args):
    with pytest.raises(AssertionError):
        check(*args)


def not_written(*args):
    raise NotImplementedError


# -- notebook 3 -------------------------------------------------------------

def test_nb03_top_images(capsys):
    passes(ex3.check_top_images, sol3.top_images, capsys=capsys)
    # argsort does not send ties to the lower index
    fails(ex3.check_top_images, lambda s, k: np.argsort(s, axis=0, kind="stable")[::-1][:k].T)
    fails(ex3.check_top_images, lambda s, k: np.argsort(s, axis=0)[:k].T)     # the worst, not the best


def test_nb03_label_counts(capsys):
    tops = np.random.default_rng(0).integers(0, 80, size=(3, 10, 10))
    passes(ex3.check_label_counts, sol3.label_counts, tops, capsys=capsys)

    def every_pick(tops, maps):        # counts picks, not unique images
        return [int(np.asarray(t)[:maps].size) for t in tops]

    def lowest_wins(tops, maps):       # keeps the lowest layer on repeats
        label = {}
        for layer, grid in enumerate(tops):
            for i in np.asarray(grid)[:maps].ravel().tolist():
                label.setdefault(i, layer)
        return np.bincount(list(label.values()), minlength=len(tops)).tolist()
    fails(ex3.check_label_counts, every_pick, tops)
    fails(ex3.check_label_counts, lowest_wins, tops)


def test_a_stub_is_reported_not_failed(capsys):
    ex3.check_label_counts(not_written)
    assert "not written yet" in capsys.readouterr().out


# -- notebook 4 -------------------------------------------------------------

from exercises import nb04 as ex4    # noqa: E402
from solutions import nb04 as sol4   # noqa: E402


def test_nb04_wilson(capsys):
    passes(ex4.check_wilson, sol4.wilson, capsys=capsys)

    def normal_approximation(correct, n):
        p = correct / n
        half = 1.96 * np.sqrt(p * (1 - p) / n)
        return max(0.0, p - half), min(1.0, p + half)
    fails(ex4.check_wilson, normal_approximation)


def test_nb04_images_needed(capsys):
    passes(ex4.check_images_needed, sol4.images_needed, capsys=capsys)
    fails(ex4.check_images_needed, lambda p, w: int(np.ceil(1.96 * np.sqrt(p * (1 - p)) / w)))


# -- notebook 5 -------------------------------------------------------------

from exercises import nb05 as ex5    # noqa: E402
from solutions import nb05 as sol5   # noqa: E402


def test_nb05_route_flops(capsys):
    passes(ex5.check_route_flops, sol5.route_flops, capsys=capsys)

    def dense_at_full_width(shape, widths, classes, route):   # multiplies the zero padding too
        h, w, _ = shape
        return (sol5.route_flops(shape, widths, classes, route)
                - h * w * widths[route] * classes + h * w * max(widths) * classes)
    fails(ex5.check_route_flops, dense_at_full_width)


def test_nb05_dense_rows(capsys):
    passes(ex5.check_dense_rows, sol5.dense_rows, capsys=capsys)
    fails(ex5.check_dense_rows, lambda h, w, c, m: np.arange(h * w * c))   # the first rows, not per pixel


# -- notebook 6 -------------------------------------------------------------

from exercises import nb06 as ex6    # noqa: E402
from solutions import nb06 as sol6   # noqa: E402


def test_nb06_cost_with_router(capsys):
    passes(ex6.check_cost_with_router, sol6.cost_with_router, capsys=capsys)

    def router_left_out(counts, model, router):
        per_route = np.array([model.flops(r)["total"] for r in range(model.depth)])
        return np.dot(counts, per_route) / np.sum(counts) / model.flops()["total"]
    fails(ex6.check_cost_with_router, router_left_out)


def test_nb06_cifar_record(capsys):
    passes(ex6.check_cifar_record, sol6.cifar_record, capsys=capsys)

    def interleaved(record):          # reads the pixels as R G B R G B ..., not as planes
        return record[2:].reshape(32, 32, 3), int(record[0]), int(record[1])

    def fine_first(record):           # swaps the two label bytes
        image, coarse, fine = sol6.cifar_record(record)
        return image, fine, coarse

    def columns_first(record):        # moves the channels last but swaps rows and columns
        return record[2:].reshape(3, 32, 32).T, int(record[0]), int(record[1])
    with pytest.raises(AssertionError, match="three planes"):
        ex6.check_cifar_record(interleaved)
    with pytest.raises(AssertionError, match="first byte is the coarse"):
        ex6.check_cifar_record(fine_first)
    with pytest.raises(AssertionError, match="rows and columns are swapped"):
        ex6.check_cifar_record(columns_first)


def test_nb06_seed_gap(capsys):
    passes(ex6.check_seed_gap, sol6.seed_gap, capsys=capsys)

    def normal_quantile(a, b):        # 1.96, right for many samples, not for three seeds
        d = np.subtract(a, b)
        se = d.std(ddof=1) / np.sqrt(len(d))
        return d.mean(), d.mean() - 1.96 * se, d.mean() + 1.96 * se

    def unpaired(a, b):               # ignores that the seeds pair the two networks
        d = np.subtract(a, b)
        se = np.sqrt(np.var(a, ddof=1) / len(a) + np.var(b, ddof=1) / len(b))
        half = stats.t.ppf(0.975, len(d) - 1) * se
        return d.mean(), d.mean() - half, d.mean() + half
    with pytest.raises(AssertionError, match="Student's t"):
        ex6.check_seed_gap(normal_quantile)
    with pytest.raises(AssertionError, match="seeds pair"):
        ex6.check_seed_gap(unpaired)
    ex6.check_seed_gap(not_written)
    assert "not written yet" in capsys.readouterr().out


# -- notebook 7 -------------------------------------------------------------

from exercises import nb07 as ex7    # noqa: E402
from solutions import nb07 as sol7   # noqa: E402


def test_nb07_threshold_routes(capsys):
    passes(ex7.check_threshold_routes, sol7.threshold_routes, capsys=capsys)

    def strict(p, t):                  # "above" where the rule says "reaches"
        if t >= 1:
            return np.full(len(p), p.shape[1] - 1)
        return np.count_nonzero(np.cumsum(p, axis=1)[:, :-1] <= t, axis=1)

    def no_t1_case(p, t):              # trusts the float sum at t = 1
        return np.count_nonzero(np.cumsum(p, axis=1)[:, :-1] < t, axis=1)
    fails(ex7.check_threshold_routes, strict)
    fails(ex7.check_threshold_routes, no_t1_case)
    fails(ex7.check_threshold_routes, lambda p, t: p.argmax(axis=1))   # the likeliest route


def test_nb07_behaviour_labels(capsys):
    passes(ex7.check_behaviour_labels, sol7.behaviour_labels, capsys=capsys)

    def none_is_zero(probs, y, conf):  # argmax alone gives route 0 where no route is confident
        return (probs[:, np.arange(len(y)), y] >= conf).argmax(axis=0)
    fails(ex7.check_behaviour_labels, none_is_zero)
