"""Checks for the exercises of notebook 5 (CNN3, skipping layers for real).

Each check prints a line starting "passed", or raises AssertionError saying what
is wrong; a function that still raises NotImplementedError is reported as not
written yet. Reference solutions: ../solutions/nb05.py.
"""

import numpy as np

from npskip.engine.model import SkipCNN

CASES = [((28, 28, 1), (16, 16, 32), 10), ((32, 32, 3), (16, 16, 32), 100),
         ((14, 14, 1), (8, 16), 3), ((9, 7, 2), (4, 6, 5, 3), 4)]


def _not_written(name):
    print(f"{name}: not written yet (raise NotImplementedError is still there); "
          f"a reference solution is in solutions/nb05.py")


def check_route_flops(fn):
    """fn(input_shape, widths, num_classes, route) -> multiply-adds per image on that route."""
    for shape, widths, classes in CASES:
        model = SkipCNN(shape, classes, widths)
        for route in range(len(widths)):
            try:
                got = fn(shape, widths, classes, route)
            except NotImplementedError:
                return _not_written("route_flops")
            want = model.multiply_adds(route)
            assert int(got) == want["total"], (
                f"route_flops({shape}, {widths}, {classes}, route={route}): expected "
                f"{want['total']:,} multiply-adds, received {int(got):,}; per layer it is "
                + ", ".join(f"{k} {v:,}" for k, v in want.items() if k != "total")
                + " (the dense layer meets only the channels of the route's last conv layer)")
    print("passed: route_flops counts every route's multiply-adds, the dense rows it uses included")


def check_dense_rows(fn):
    """fn(h, w, c, max_width) -> the row numbers of the dense W that c real channels meet."""
    for h, w, c, m in ((28, 28, 16, 32), (2, 3, 1, 4), (3, 3, 4, 4), (5, 1, 2, 3)):
        try:
            got = fn(h, w, c, m)
        except NotImplementedError:
            return _not_written("dense_rows")
        want = np.arange(h * w * m).reshape(h * w, m)[:, :c].ravel()
        got = np.asarray(got).ravel()
        assert got.shape == want.shape, (
            f"dense_rows({h}, {w}, {c}, {m}): expected {want.size} rows (H * W * c), received "
            f"{got.size}")
        assert np.array_equal(got, want), (
            f"dense_rows({h}, {w}, {c}, {m}): expected rows {want[:8].tolist()}..., received "
            f"{got[:8].tolist()}... (the flattened features are pixel by pixel, and within a "
            f"pixel channel by channel: row = pixel * max_width + channel)")
    print("passed: dense_rows picks, pixel by pixel, the rows of the real channels")
