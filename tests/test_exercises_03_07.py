"""The exercises of notebooks 3-7: every check passes on its reference solution
(notebooks/solutions/) and fails, with an AssertionError, on a deliberately wrong answer."""

import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from scipy import stats

from npskip.engine.losses import softmax_cross_entropy
from npskip.engine.model import SkipCNN
from npskip.engine.optim import RMSprop

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
sys.path.insert(0, str(NOTEBOOKS))   # the notebooks import `from exercises import nb03`

from exercises import nb03 as ex3    # noqa: E402
from solutions import nb03 as sol3   # noqa: E402


def passes(check, *args, capsys):
    check(*args)
    assert capsys.readouterr().out.startswith("passed")


def fails(check, *args, hint=None):
    """The check raises AssertionError on this answer (with ``hint`` in its message)."""
    with pytest.raises(AssertionError, match=hint):
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


def test_nb05_route_multiply_adds(capsys):
    passes(ex5.check_route_multiply_adds, sol5.route_multiply_adds, capsys=capsys)

    def dense_at_full_width(shape, widths, classes, route):   # multiplies the zero padding too
        h, w, _ = shape
        return (sol5.route_multiply_adds(shape, widths, classes, route)
                - h * w * widths[route] * classes + h * w * max(widths) * classes)
    fails(ex5.check_route_multiply_adds, dense_at_full_width)


def test_nb05_dense_rows(capsys):
    passes(ex5.check_dense_rows, sol5.dense_rows, capsys=capsys)
    fails(ex5.check_dense_rows, lambda h, w, c, m: np.arange(h * w * c))   # the first rows, not per pixel


def test_nb05_routed_train_step(capsys):
    passes(ex5.check_routed_train_step, sol5.routed_train_step, capsys=capsys)

    def routes_forgotten(model, optimizer, xb, yb, routes):   # every image runs every layer
        loss, dlogits = softmax_cross_entropy(model.forward(xb), yb)
        model.backward(dlogits)
        optimizer.step(model.ran_layers())
        return loss

    def every_layer(model, optimizer, xb, yb, routes):        # the skipped layers too
        loss, dlogits = softmax_cross_entropy(model.forward(xb, routes), yb)
        model.backward(dlogits)
        optimizer.step(model.layers)
        return loss

    def step_before_backward(model, optimizer, xb, yb, routes):   # updates with stale grads
        loss, dlogits = softmax_cross_entropy(model.forward(xb, routes), yb)
        optimizer.step(model.ran_layers())
        model.backward(dlogits)
        return loss

    def fresh_optimizer(model, optimizer, xb, yb, routes):    # forgets RMSprop's averages
        return sol5.routed_train_step(model, RMSprop(), xb, yb, routes)
    fails(ex5.check_routed_train_step, routes_forgotten, hint="pass the routes")
    fails(ex5.check_routed_train_step, every_layer, hint="model.ran_layers")
    fails(ex5.check_routed_train_step, step_before_backward, hint="differs from a reference")
    fails(ex5.check_routed_train_step, fresh_optimizer, hint="differs from a reference")
    ex5.check_routed_train_step(not_written)
    assert "not written yet" in capsys.readouterr().out


# -- notebook 6 -------------------------------------------------------------

from exercises import nb06 as ex6    # noqa: E402
from solutions import nb06 as sol6   # noqa: E402


def test_nb06_cost_with_router(capsys):
    passes(ex6.check_cost_with_router, sol6.cost_with_router, capsys=capsys)

    def router_left_out(counts, model, router):
        per_route = np.array([model.multiply_adds(r)["total"] for r in range(model.depth)])
        return np.dot(counts, per_route) / np.sum(counts) / model.multiply_adds()["total"]
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
    fails(ex6.check_cifar_record, interleaved, hint="three planes")
    fails(ex6.check_cifar_record, fine_first, hint="first byte is the coarse")
    fails(ex6.check_cifar_record, columns_first, hint="rows and columns are swapped")


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
    fails(ex6.check_seed_gap, normal_quantile, hint="Student's t")
    fails(ex6.check_seed_gap, unpaired, hint="seeds pair")
    ex6.check_seed_gap(not_written)
    assert "not written yet" in capsys.readouterr().out


# -- notebook 7 -------------------------------------------------------------

from exercises import nb07 as ex7    # noqa: E402
from solutions import nb07 as sol7   # noqa: E402


def _top(z):
    p = np.exp(z - z.max(axis=2, keepdims=True))
    return (p / p.sum(axis=2, keepdims=True)).max(axis=2)        # (depth, N)


def test_nb07_exits_taken(capsys):
    passes(ex7.check_exits_taken, sol7.exits_taken, capsys=capsys)

    def first_of(sure, depth):         # row k - 1 of ``sure`` is exit k
        return np.where(sure.any(axis=0), sure.argmax(axis=0) + 1, depth)

    def from_zero(z, t):               # counts the exits from 0, as rows of the array
        return sol7.exits_taken(z, t) - 1

    def strict(z, t):                  # "above" where the rule says "reaches"
        return np.full(z.shape[1], len(z)) if t >= 1 else first_of(_top(z)[:-1] > t, len(z))

    def no_t1_case(z, t):              # trusts a probability rounded to 1.0 at t = 1
        return first_of(_top(z)[:-1] >= t, len(z))

    def most_confident(z, t):          # the surest head, not the first sure one
        top = _top(z)[:-1]
        return np.where((top >= t).any(axis=0) & (t < 1), top.argmax(axis=0) + 1, len(z))

    def on_logits(z, t):               # thresholds the largest logit, not the probability
        return np.full(z.shape[1], len(z)) if t >= 1 else \
            first_of(z[:-1].max(axis=2) >= t, len(z))
    for wrong, words in ((from_zero, "counted from 1"), (strict, "a probability equal to t"),
                         (no_t1_case, "t >= 1"), (most_confident, "first confident exit wins"),
                         (on_logits, "not on the logit")):
        with pytest.raises(AssertionError, match=words):
            ex7.check_exits_taken(wrong)
    ex7.check_exits_taken(not_written)
    assert "not written yet" in capsys.readouterr().out


def _head_multiply_adds(shape, widths, classes, hidden, pool, k, pooled_inputs=True, sums=True):
    """Exit k's own cost (1..depth; CNN1's dense layer for the last exit), for the wrong answers."""
    h, w, _ = shape
    if k == len(widths):
        return h * w * widths[k - 1] * classes
    inputs = (h // pool) * (w // pool) * widths[k - 1] if pooled_inputs else h * w * widths[k - 1]
    dense = inputs * hidden + hidden * classes if hidden else inputs * classes
    return dense + (h * w * widths[k - 1] if pool > 1 and sums else 0)


def test_nb07_exit_multiply_adds(capsys):
    passes(ex7.check_exit_multiply_adds, sol7.exit_multiply_adds, capsys=capsys)

    def convs(shape, widths, classes, exit):
        f = SkipCNN(shape, classes, widths).multiply_adds()
        return sum(f[f"conv{k}"] for k in range(1, exit + 1))

    def only_its_head(shape, widths, classes, hidden, pool, exit):   # forgets the heads passed
        return convs(shape, widths, classes, exit) + _head_multiply_adds(
            shape, widths, classes, hidden, pool, exit)

    def cnn1_at_the_end(shape, widths, classes, hidden, pool, exit):   # the last exit: CNN1
        if exit == len(widths):
            return SkipCNN(shape, classes, widths).multiply_adds()["total"]
        return sol7.exit_multiply_adds(shape, widths, classes, hidden, pool, exit)

    def no_pooling_cost(shape, widths, classes, hidden, pool, exit):   # the sums left out
        return convs(shape, widths, classes, exit) + sum(
            _head_multiply_adds(shape, widths, classes, hidden, pool, k, sums=False)
            for k in range(1, exit + 1))

    def unpooled_inputs(shape, widths, classes, hidden, pool, exit):   # dense on H*W*C
        return convs(shape, widths, classes, exit) + sum(
            _head_multiply_adds(shape, widths, classes, hidden, pool, k, pooled_inputs=False)
            for k in range(1, exit + 1))

    def from_zero(shape, widths, classes, hidden, pool, exit):   # exit k taken as conv k + 1
        return sol7.exit_multiply_adds(shape, widths, classes, hidden, pool,
                                       min(exit + 1, len(widths)))
    fails(ex7.check_exit_multiply_adds, only_its_head, hint="every head before it")
    fails(ex7.check_exit_multiply_adds, cnn1_at_the_end, hint="every head it passed")
    fails(ex7.check_exit_multiply_adds, no_pooling_cost, hint="one addition per map value")
    fails(ex7.check_exit_multiply_adds, unpooled_inputs, hint="reads the pooled maps")
    fails(ex7.check_exit_multiply_adds, from_zero, hint="counted from 1")


def test_nb07_loss_upper_bound(capsys):
    passes(ex7.check_loss_upper_bound, sol7.loss_upper_bound, capsys=capsys)

    def unpaired(cascade, cnn1, conf):    # two separate accuracies' standard errors
        a, b, n = cascade.mean(), cnn1.mean(), len(cascade)
        return b - a + NormalDist().inv_cdf(conf) * np.sqrt(a * (1 - a) / n + b * (1 - b) / n)

    def two_sided(cascade, cnn1, conf):   # 1.96 where the rule bounds one side
        d = cascade.astype(float) - cnn1.astype(float)
        return -d.mean() + 1.959964 * d.std(ddof=1) / np.sqrt(len(d))
    def population_std(cascade, cnn1, conf):   # np.std's default ddof=0
        d = cascade.astype(float) - cnn1.astype(float)
        return -d.mean() + NormalDist().inv_cdf(conf) * d.std() / np.sqrt(len(d))

    def plus_mean(cascade, cnn1, conf):   # the cascade's lead where CNN1's is asked
        d = cascade.astype(float) - cnn1.astype(float)
        return d.mean() + NormalDist().inv_cdf(conf) * d.std(ddof=1) / np.sqrt(len(d))
    fails(ex7.check_loss_upper_bound, unpaired, hint="two separate accuracies")
    fails(ex7.check_loss_upper_bound, two_sided, hint="1.645")
    fails(ex7.check_loss_upper_bound, population_std, hint="ddof=1")
    fails(ex7.check_loss_upper_bound, plus_mean, hint="CNN1's lead")
    ex7.check_loss_upper_bound(not_written)
    assert "not written yet" in capsys.readouterr().out


def test_nb07_exact_loss_upper(capsys):
    passes(ex7.check_exact_loss_upper, sol7.exact_loss_upper, capsys=capsys)

    def share_only(a, b, n, conf):       # p_u itself, not the lead it bounds
        return 0.0 if a + b == 0 else 1.0 if a == 0 else stats.beta.ppf(conf, b + 1, a)

    def two_sided(a, b, n, conf):        # (1 + confidence) / 2 where one side is bounded
        d = a + b
        return 0.0 if d == 0 else d / n if a == 0 else \
            d * (2 * stats.beta.ppf((1 + conf) / 2, b + 1, a) - 1) / n

    def no_all_cnn1_case(a, b, n, conf):   # Beta(b + 1, 0) gives nan
        d = a + b
        return 0.0 if d == 0 else d * (2 * stats.beta.ppf(conf, b + 1, a) - 1) / n

    def normal(a, b, n, conf):           # part a's approximation
        d = np.r_[np.ones(a), -np.ones(b), np.zeros(n - a - b)]
        return 0.0 if a + b == 0 else \
            -d.mean() + NormalDist().inv_cdf(conf) * d.std(ddof=1) / np.sqrt(n)
    for wrong, words in ((share_only, "the lead is D"), (two_sided, "one-sided"),
                         (no_all_cnn1_case, "every disagreement"),
                         (normal, "normal approximation")):
        with pytest.raises(AssertionError, match=words):
            ex7.check_exact_loss_upper(wrong)
    ex7.check_exact_loss_upper(not_written)
    assert "not written yet" in capsys.readouterr().out
