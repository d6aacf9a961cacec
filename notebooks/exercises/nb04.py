"""Checks for the exercises of notebook 4 (CNN2, the router).

Each check prints a line starting "passed", or raises AssertionError saying what
is wrong; a function that still raises NotImplementedError is reported as not
written yet. Reference solutions: ../solutions/nb04.py.
"""

import math

from npskip.paper.stats import wilson_interval


def _not_written(name):
    print(f"{name}: not written yet (raise NotImplementedError is still there); "
          f"a reference solution is in solutions/nb04.py")


def check_wilson(fn):
    """fn(correct, n) -> (low, high), the 95% Wilson score interval (z = 1.96)."""
    for correct, n in ((14, 23), (0, 5), (5, 5), (1, 1), (13, 22), (620, 1000)):
        try:
            got = fn(correct, n)
        except NotImplementedError:
            return _not_written("wilson")
        want = wilson_interval(correct, n)
        assert len(got) == 2, f"wilson({correct}, {n}): expected (low, high), received {got!r}"
        lo, hi = float(got[0]), float(got[1])
        assert abs(lo - want[0]) < 1e-6 and abs(hi - want[1]) < 1e-6, (
            f"wilson({correct}, {n}): expected ({want[0]:.4f}, {want[1]:.4f}), received "
            f"({lo:.4f}, {hi:.4f})"
            + (" -- that is the normal approximation p +- 1.96 sqrt(p(1-p)/n), which collapses "
               "to a point when p is 0 or 1" if correct in (0, n) and abs(hi - lo) < 1e-9 else ""))
    print("passed: wilson gives the 95% Wilson interval, also at 0 and n right")


def needed(p, half_width, z=1.96):
    return math.ceil(z * z * p * (1 - p) / half_width ** 2)


def check_images_needed(fn):
    """fn(p, half_width) -> the fewest test images whose 95% interval is at most +-half_width."""
    for p, w in ((0.62, 0.04), (0.5, 0.05), (0.9, 0.01), (0.627, 0.045)):
        try:
            got = fn(p, w)
        except NotImplementedError:
            return _not_written("images_needed")
        want = needed(p, w)
        assert int(got) == want, (
            f"images_needed({p}, {w}): expected {want} test images (1.96 * sqrt(p (1 - p) / n) "
            f"<= {w}, solved for n and rounded up), received {got}")
    print(f"passed: images_needed; telling 62% from a 58% baseline (+-4 points) takes about "
          f"{needed(0.62, 0.04)} test images, not 23")
