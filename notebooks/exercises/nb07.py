"""Checks for the exercises of notebook 7 (beyond the paper: a router that pays).

Each check prints a line starting "passed", or raises AssertionError saying what
is wrong; a function that still raises NotImplementedError is reported as not
written yet. Reference solutions: ../solutions/nb07.py.
"""

import numpy as np

from npskip.routing import behaviour_labels, threshold_routes


def _not_written(name):
    print(f"{name}: not written yet (raise NotImplementedError is still there); "
          f"a reference solution is in solutions/nb07.py")


def _router_probs(n, depth, seed, dtype=np.float64):
    logits = np.random.default_rng(seed).normal(scale=3.0, size=(n, depth))
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (p / p.sum(axis=1, keepdims=True)).astype(dtype)


def check_threshold_routes(fn):
    """fn(router_probs (N, depth), t) -> (N,) the cheapest route whose cumulative probability
    reaches t; the last route always allowed."""
    cases = [(_router_probs(50, 3, 0), t) for t in (0.0, 0.3, 0.5, 0.9, 0.98, 0.999, 1.0)]
    cases += [(_router_probs(40, 4, 1, np.float32), t) for t in (0.7, 1.0)]
    cases += [(np.array([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5], [0.0, 0.0, 1.0]]), t)
              for t in (0.5, 0.2, 1.0)]
    for probs, t in cases:
        try:
            got = fn(probs.copy(), t)
        except NotImplementedError:
            return _not_written("threshold_routes")
        want = threshold_routes(probs, t)
        got = np.asarray(got).ravel()
        assert got.shape == want.shape, (
            f"threshold_routes(t={t}): expected one route per image, shape {want.shape}, "
            f"received {got.shape}")
        bad = np.flatnonzero(got != want)
        if len(bad):
            i = bad[0]
            cum = np.cumsum(probs[i])
            raise AssertionError(
                f"threshold_routes(t={t}): image {i} with router probabilities "
                f"{np.round(probs[i], 4).tolist()} (cumulative {np.round(cum, 4).tolist()}) "
                f"should take route {want[i]}, received {got[i]}"
                + (" -- t = 1 sends every image down the full route, even where float rounding "
                   "makes the cumulative sum reach 1 early" if t >= 1 else "")
                + (" -- 'reaches' means >=: a cumulative probability equal to t is enough"
                   if np.any(np.isclose(cum, t)) else ""))
    print("passed: threshold_routes takes the cheapest route whose cumulative probability reaches t")


def check_behaviour_labels(fn):
    """fn(probs (depth, N, K), y (N,), confidence) -> (N,) the cheapest route on which the true
    class gets at least ``confidence``; depth-1 where no route does."""
    rng = np.random.default_rng(2)
    for depth, n, k, conf in ((3, 60, 10, 0.9), (3, 40, 4, 0.5), (4, 30, 3, 0.99)):
        logits = rng.normal(scale=4.0, size=(depth, n, k))
        probs = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
        y = rng.integers(0, k, n)
        try:
            got = fn(probs.copy(), y.copy(), conf)
        except NotImplementedError:
            return _not_written("behaviour_labels")
        want = behaviour_labels(probs, y, conf)
        got = np.asarray(got).ravel()
        assert got.shape == want.shape, (
            f"behaviour_labels: expected {want.shape}, received {got.shape}")
        bad = np.flatnonzero(got != want)
        if len(bad):
            i = bad[0]
            p = probs[:, i, y[i]]
            raise AssertionError(
                f"behaviour_labels(confidence={conf}): image {i}, true class {y[i]}, its "
                f"probability on routes 0..{depth - 1}: {np.round(p, 3).tolist()}; expected "
                f"label {want[i]}, received {got[i]}"
                + (" (no route reaches the confidence: the full route, depth - 1)"
                   if not (p >= conf).any() else ""))
    print("passed: behaviour_labels gives the cheapest confident route, the full one if none is")
