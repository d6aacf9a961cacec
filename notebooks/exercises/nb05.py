"""Checks for the exercises of notebook 5 (CNN3, skipping layers for real).

Each check prints a line starting "passed", or raises AssertionError saying what
is wrong; a function that still raises NotImplementedError is reported as not
written yet. Reference solutions: ../solutions/nb05.py.
"""

import numpy as np

from npskip.engine.losses import softmax_cross_entropy
from npskip.engine.model import SkipCNN
from npskip.engine.optim import RMSprop

CASES = [((28, 28, 1), (16, 16, 32), 10), ((32, 32, 3), (16, 16, 32), 100),
         ((14, 14, 1), (8, 16), 3), ((9, 7, 2), (4, 6, 5, 3), 4)]


def _not_written(name):
    print(f"{name}: not written yet (raise NotImplementedError is still there); "
          f"a reference solution is in solutions/nb05.py")


def check_route_multiply_adds(fn):
    """fn(input_shape, widths, num_classes, route) -> multiply-adds per image on that route."""
    for shape, widths, classes in CASES:
        model = SkipCNN(shape, classes, widths)
        for route in range(len(widths)):
            try:
                got = fn(shape, widths, classes, route)
            except NotImplementedError:
                return _not_written("route_multiply_adds")
            want = model.multiply_adds(route)
            assert int(got) == want["total"], (
                f"route_multiply_adds({shape}, {widths}, {classes}, route={route}): expected "
                f"{want['total']:,} multiply-adds, received {int(got):,}; per layer it is "
                + ", ".join(f"{k} {v:,}" for k, v in want.items() if k != "total")
                + " (the dense layer meets only the channels of the route's last conv layer)")
    print("passed: route_multiply_adds counts every route's multiply-adds, the dense rows it "
          "uses included")


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


# --------------------------------------------------------------------------
# Exercise 3: a training step that leaves the skipped layers alone
# --------------------------------------------------------------------------
def _reference_routed_step(model, optimizer, xb, yb, routes):
    loss, dlogits = softmax_cross_entropy(model.forward(xb, routes), yb)
    model.backward(dlogits)
    optimizer.step(model.ran_layers())
    return loss


def _held(model, optimizer, layers):
    """Copies of each layer's weights and of RMSprop's running averages for it."""
    return [({k: v.copy() for k, v in layer.params.items()},
             {k: v.copy() for k, v in optimizer.state_for(layer).items()}) for layer in layers]


# The batches of the check: the first reaches every layer (so RMSprop keeps a running
# average for each), the second none past conv1, the others a mix.
ROUTE_BATCHES = ([2, 2, 2, 2, 2, 2], [0, 0, 0, 0, 0, 0], [2, 0, 1, 2, 1, 0], [1, 0, 1, 0, 0, 1])


def check_routed_train_step(fn):
    """fn(model, optimizer, xb, yb, routes) -> the batch's loss, after one step.

    Four steps on a small float64 SkipCNN beside four reference steps on an identical
    copy. After each, a conv layer that no image of the batch reaches must have
    exactly the weights and the RMSprop running average it had before, and every
    parameter must agree with the reference.
    """
    rng = np.random.default_rng(3)
    xb, yb = rng.random((6, 7, 7, 1)), rng.integers(0, 4, size=6)
    mine, ref = (SkipCNN((7, 7, 1), 4, widths=(3, 5, 4), seed=5, dtype=np.float64)
                 for _ in range(2))
    opt_mine, opt_ref = RMSprop(), RMSprop()
    for step, routes in enumerate(ROUTE_BATCHES, 1):
        routes = np.array(routes)
        skipped = list(range(routes.max() + 1, mine.depth))     # conv layers nobody reaches
        before = _held(mine, opt_mine, [mine.convs[k] for k in skipped])
        try:
            loss = fn(mine, opt_mine, xb, yb, routes.copy())
        except NotImplementedError:
            return _not_written("routed_train_step")
        expected = _reference_routed_step(ref, opt_ref, xb, yb, routes)
        for k, (weights, average) in zip(skipped, before):
            layer = mine.convs[k]
            moved = [n for n, v in weights.items() if not np.array_equal(layer.params[n], v)]
            assert not moved, (
                f"step {step}, routes {routes.tolist()}: no image reaches conv{k + 1}, yet its "
                f"{' and '.join(moved)} moved -- pass the routes to model.forward(xb, routes), "
                f"so that each image runs only the conv layers of its route")
            now = opt_mine.state_for(layer)
            changed = [n for n, v in average.items() if not np.array_equal(now.get(n), v)]
            assert not changed, (
                f"step {step}, routes {routes.tolist()}: conv{k + 1}'s weights stayed, but "
                f"RMSprop's running average of its squared gradient changed -- hand the "
                f"optimizer model.ran_layers(), not every layer: a zero gradient still decays "
                f"the average (v <- 0.9 v), so the next batch that reaches conv{k + 1} would "
                f"take a larger step than it should")
        try:
            loss = float(loss)
        except (TypeError, ValueError):
            raise AssertionError(
                f"step {step}: expected the batch's loss, one number, received "
                f"{type(loss).__name__}") from None
        assert np.isclose(loss, expected, rtol=1e-10), (
            f"step {step}, routes {routes.tolist()}: loss {loss}, expected {expected:.6f} (the "
            f"cross-entropy of the routed forward pass, before the update)")
        for k, (a, b) in enumerate(zip(mine.layers, ref.layers)):
            for n in a.params:
                diff = np.max(np.abs(a.params[n] - b.params[n]))
                assert diff < 1e-12, (
                    f"step {step}, routes {routes.tolist()}: layer {k + 1}'s {n} differs from a "
                    f"reference step by up to {diff:.1e} -- forward with the routes, the loss, "
                    f"backward, then one optimizer.step over model.ran_layers(), in that order")
    print("passed: routed_train_step updates the layers that ran, as the reference does, and "
          "leaves every skipped layer's weights and RMSprop average exactly as they were")
