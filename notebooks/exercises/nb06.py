"""Checks for the exercises of notebook 6 (other data sets).

Each check prints a line starting "passed", or raises AssertionError saying what is
wrong; a function that still raises NotImplementedError is reported as not written
yet. Reference solutions: ../solutions/nb06.py.
"""

import tempfile
from pathlib import Path

import numpy as np
from scipy import stats

from npskip.harness.data import read_cifar_bin
from npskip.engine.model import SkipCNN


def _not_written(name):
    print(f"{name}: not written yet (raise NotImplementedError is still there); "
          f"a reference solution is in solutions/nb06.py")


def check_cost_with_router(fn):
    """fn(route_counts, model, router) -> mean multiply-adds per image of router + routed model,
    as a fraction of the model's full route."""
    model = SkipCNN((28, 28, 1), 10, (16, 16, 32))
    for counts, router in (([804, 587, 8609], SkipCNN((28, 28, 1), 3, (16, 16, 32))),
                           ([10000, 0, 0], SkipCNN((14, 14, 1), 3, (8, 16))),
                           ([1, 2, 3], SkipCNN((28, 28, 1), 3, (4, 4, 4)))):
        try:
            got = fn(counts, model, router)
        except NotImplementedError:
            return _not_written("cost_with_router")
        per_route = np.array([model.multiply_adds(r)["total"] for r in range(model.depth)])
        want = (np.dot(counts, per_route) / np.sum(counts) + router.multiply_adds()["total"]) \
            / model.multiply_adds()["total"]
        assert abs(float(got) - want) < 1e-9, (
            f"cost_with_router({counts}, ...): expected {want:.4f} of the full route, received "
            f"{float(got):.4f}"
            + (" (the router runs on every image: add its multiply-adds once per image)"
               if abs(float(got) - (want - router.multiply_adds()["total"] / model.multiply_adds()["total"])) < 1e-9
               else ""))
    print("passed: cost_with_router; the paper's router, as large as CNN1, adds 1.0 to every mix")


def _write_records(path, coarse, fine, planes):
    """Write CIFAR-100 binary records: per image its coarse and fine label bytes, then its
    (3, 32, 32) planes row-major."""
    labels = np.stack([coarse, fine], axis=1).astype(np.uint8)
    recs = np.concatenate([labels, np.asarray(planes, np.uint8).reshape(len(labels), -1)], axis=1)
    recs.tofile(path)
    return recs


def check_cifar_record(fn):
    """fn(record (3074,) uint8) -> (image (32, 32, 3) uint8, coarse label, fine label)."""
    rng = np.random.default_rng(6)
    n = 4
    planes = rng.integers(0, 256, size=(n, 3, 32, 32))
    # record 0, where a wrong reading is caught first, has pixels one can reason about:
    # red = 8 x row, green = 8 x column, blue 0
    planes[0, 0] = np.arange(32)[:, None] * 8
    planes[0, 1] = np.arange(32)[None, :] * 8
    planes[0, 2] = 0
    coarse, fine = np.array([3, 19, 0, 11]), np.array([97, 0, 55, 12])
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "four.bin"
        records = _write_records(path, coarse, fine, planes)
        images, fines = read_cifar_bin(path, "fine")        # npskip's parser is the reference
        _, coarses = read_cifar_bin(path, "coarse")
    for i, record in enumerate(records):
        try:
            got = fn(record.copy())
        except NotImplementedError:
            return _not_written("cifar_record")
        assert isinstance(got, tuple) and len(got) == 3, (
            f"cifar_record: expected a tuple (image, coarse, fine), received {type(got).__name__}")
        image, c, f = np.asarray(got[0]), got[1], got[2]
        assert image.shape == (32, 32, 3), (
            f"cifar_record: expected an image of shape (32, 32, 3), height, width, channels "
            f"like every image in npskip, received {image.shape}")
        assert (int(c), int(f)) == (coarses[i], fines[i]), (
            f"cifar_record: record {i} has coarse label {coarses[i]} and fine label {fines[i]}, "
            f"received coarse {int(c)} and fine {int(f)}"
            + (" (the first byte is the coarse label, the second the fine one)"
               if (int(c), int(f)) == (fines[i], coarses[i]) else ""))
        if not np.array_equal(image, images[i]):
            hint = ""
            if np.array_equal(image, record[2:].reshape(32, 32, 3)):
                hint = (" (the 3072 bytes are not pixel by pixel, R G B R G B ...: they are three "
                        "planes, all 1024 red bytes, then green, then blue; each plane a 32x32 "
                        "image row by row)")
            elif np.array_equal(image, images[i].transpose(1, 0, 2)):
                hint = " (rows and columns are swapped: each plane is stored row by row)"
            r, col = np.argwhere(image != images[i])[0][:2]
            raise AssertionError(
                f"cifar_record: record {i}, pixel (row {r}, column {col}): expected RGB "
                f"{images[i][r, col].tolist()}, received {image[r, col].tolist()}" + hint)
        assert image.dtype == np.uint8, (
            f"cifar_record: expected the image as uint8 bytes (0..255), as the file holds them, "
            f"received {image.dtype}")
    print("passed: cifar_record reads the labels and the three colour planes as npskip.data does")


def check_seed_gap(fn):
    """fn(a (n,), b (n,)) -> (mean, low, high): the mean of a - b over n seeds and its 95% interval
    from Student's t with n - 1 degrees of freedom."""
    # the three-seed tables of docs/results.md: CNN1 and CNN3-deploy, Fashion-MNIST then MNIST
    cases = [([90.81, 90.69, 90.71], [89.68, 90.05, 90.59]),
             ([98.78, 98.73, 98.79], [98.68, 98.27, 98.24]),
             ([1.0, 2.0, 4.0, 7.0, 5.0], [0.5, 2.5, 3.0, 5.0, 5.5]),
             ([10.0, 12.0], [9.0, 9.5])]
    results = []
    for a, b in cases:
        try:
            got = fn(np.array(a), np.array(b))
        except NotImplementedError:
            return _not_written("seed_gap")
        d = np.subtract(a, b)
        n = len(d)
        mean, se = d.mean(), d.std(ddof=1) / np.sqrt(n)
        t = stats.t.ppf(0.975, n - 1)
        want = (mean, mean - t * se, mean + t * se)
        got = tuple(float(v) for v in got)
        assert len(got) == 3, f"seed_gap: expected (mean, low, high), received {len(got)} numbers"
        if not np.allclose(got, want, rtol=0, atol=1e-9):
            half = (got[2] - got[1]) / 2
            hint = ""
            if abs(got[0] - mean) > 1e-9:
                hint = " (the mean of the differences a - b, seed by seed)"
            elif abs(half - 1.96 * se) < 1e-9:
                hint = (f" (1.96 is the normal quantile, for many samples; with {n} seeds the "
                        f"interval needs Student's t with {n - 1} degrees of freedom, {t:.3f})")
            elif abs(half - stats.t.ppf(0.95, n - 1) * se) < 1e-9:
                hint = " (a 95% interval leaves 2.5% out on each side: the 0.975 quantile)"
            elif abs(half - t * d.std() / np.sqrt(n)) < 1e-9:
                hint = " (the sample standard deviation divides by n - 1: ddof=1)"
            elif abs(half - t * np.sqrt(np.var(a, ddof=1) / n + np.var(b, ddof=1) / n)) < 1e-9:
                hint = (" (the seeds pair the two networks: take the differences seed by seed and "
                        "their standard deviation, not the two spreads separately)")
            raise AssertionError(
                f"seed_gap({a}, {b}): expected mean {want[0]:.4f}, interval {want[1]:.4f} to "
                f"{want[2]:.4f}; received {got[0]:.4f}, {got[1]:.4f} to {got[2]:.4f}" + hint)
        results.append(want)
    (m, lo, hi), (m2, lo2, hi2) = results[:2]
    held = [low <= 0 <= high for low, high in ((lo, hi), (lo2, hi2))]
    verdict = ("both intervals hold zero, so three seeds cannot tell these gaps from seed noise"
               if all(held) else "neither interval holds zero: the gap is more than seed noise on "
               "both" if not any(held) else
               f"only the {'MNIST' if held[0] else 'Fashion-MNIST'} interval excludes zero")
    print(f"passed: seed_gap. On the three seeds of docs/results.md CNN1 beats CNN3-deploy by {m:.2f} points "
          f"on Fashion-MNIST (95% interval {lo:.2f} to {hi:.2f}) and by {m2:.2f} on MNIST "
          f"({lo2:.2f} to {hi2:.2f}): {verdict}")
