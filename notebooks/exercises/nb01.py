"""Checks for the exercises of notebook 01 (layers from scratch).

Each check prints a line starting "passed" or raises AssertionError saying what
is wrong. A function that still raises NotImplementedError is reported as not
attempted yet, without an error, so that the notebook runs top to bottom before
the exercises are done. Reference solutions: ../solutions/nb01.py (try first).
"""

import numpy as np

from npskip.engine import kernels, reference
from npskip.engine.gradcheck import check_layer
from npskip.engine.layers import Conv2D, Dense

TOL = 1e-7      # a right gradient gives ~1e-10 here, a wrong one 1e-3 or more


def _not_attempted(fn, *args):
    """Call fn(*args); (True, None) if it raises NotImplementedError, else (False, result)."""
    try:
        return False, fn(*args)
    except NotImplementedError:
        print(f"not attempted yet: write {fn.__name__} in the cell above, then rerun this cell")
        return True, None


# --------------------------------------------------------------------------
# Exercise 1: col2im
# --------------------------------------------------------------------------
COL2IM_CASES = [   # (x_shape, kh, kw, stride, padding)
    ((1, 4, 4, 1), 3, 3, 1, "same"),
    ((2, 5, 6, 3), 3, 3, 1, "same"),
    ((1, 7, 7, 2), 3, 3, 2, "same"),
    ((2, 6, 5, 1), 3, 2, 1, "valid"),
    ((1, 8, 7, 2), 5, 3, 2, "valid"),
]


def check_col2im(col2im):
    """col2im(dcols, x_shape, kh, kw, stride, padding) -> dx of shape x_shape.

    Compared with reference.col2im on five geometries (stride 2, 'valid',
    non-square kernels among them), and the adjoint identity
    <im2col(x), c> = <x, col2im(c)> is tested on each.
    """
    rng = np.random.default_rng(0)
    for x_shape, kh, kw, stride, padding in COL2IM_CASES:
        case = f"x_shape={x_shape}, kernel {kh}x{kw}, stride {stride}, padding={padding!r}"
        x = rng.standard_normal(x_shape)
        cols, _, _ = reference.im2col(x, kh, kw, stride, padding)
        dcols = rng.standard_normal(cols.shape)
        keep = dcols.copy()
        try:
            skipped, dx = _not_attempted(col2im, dcols, x_shape, kh, kw, stride, padding)
        except IndexError as error:
            raise AssertionError(
                f"{case}: your col2im raised IndexError: {error}. A window can hang over the "
                f"border: only the pixels with 0 <= row < H and 0 <= column < W exist (the rest "
                f"is padding, whose gradient is dropped)") from error
        if skipped:
            return
        dx = np.asarray(dx)
        assert np.array_equal(dcols, keep), f"{case}: col2im modified its input dcols"
        assert dx.shape == tuple(x_shape), (
            f"{case}: expected dx of shape {tuple(x_shape)} (the image's shape), "
            f"received {dx.shape}")
        ref = reference.col2im(dcols, x_shape, kh, kw, stride, padding)
        if not np.allclose(dx, ref, rtol=0, atol=1e-10):
            bad = tuple(int(i) for i in np.unravel_index(np.argmax(np.abs(dx - ref)), dx.shape))
            raise AssertionError(
                f"{case}: dx[{', '.join(map(str, bad))}] is {dx[bad]:.4f}, expected "
                f"{ref[bad]:.4f}. Three usual slips: overlapping windows must add up (+=, not =); "
                f"row (b*Ho + oy)*Wo + ox is the window whose top-left pixel is "
                f"(oy*stride - pad_top, ox*stride - pad_left), and what lands in the padding is "
                f"dropped; its kh*kw*C values reshape to (kh, kw, C), channel fastest.")
        lhs, rhs = np.sum(cols * dcols), np.sum(x * dx)
        assert np.isclose(lhs, rhs, rtol=1e-10), (
            f"{case}: <im2col(x), c> = {lhs:.6f} but <x, col2im(c)> = {rhs:.6f}")
    print(f"passed: col2im agrees with the reference on all {len(COL2IM_CASES)} geometries, "
          f"and <im2col(x), c> = <x, col2im(c)> holds on each")


# --------------------------------------------------------------------------
# Exercise 2: Dense.backward
# --------------------------------------------------------------------------
class _DenseWith(Dense):
    """Dense whose backward is the learner's dense_backward(x, W, dout) -> (dx, dW, db)."""

    def __init__(self, fn, *args, **kw):
        super().__init__(*args, **kw)
        self._fn = fn

    def backward(self, dout):
        x = self._take_cache()
        dx, dw, db = self._fn(x, self.params["W"], dout)
        for name, g in (("W", dw), ("b", db)):
            g = np.asarray(g)
            assert g.shape == self.grads[name].shape, (
                f"d{name}: expected shape {self.grads[name].shape} (like {name}), "
                f"received {g.shape}")
            self.grads[name][...] = g
        dx = np.asarray(dx)
        assert dx.shape == x.shape, f"dx: expected shape {x.shape} (like x), received {dx.shape}"
        return dx


def check_dense_backward(dense_backward):
    """dense_backward(x, W, dout) -> (dx, dW, db) for out = x @ W + b.

    Put into a Dense layer and checked with check_layer (centred differences,
    float64) on three shapes, a batch of 1 among them.
    """
    rng = np.random.default_rng(1)
    x, W, dout = rng.standard_normal((1, 2)), rng.standard_normal((2, 3)), rng.standard_normal((1, 3))
    try:
        result = dense_backward(x, W, dout)
    except NotImplementedError:
        print(f"not attempted yet: write {dense_backward.__name__} in the cell above, then rerun "
              f"this cell")
        return
    except ValueError as error:    # numpy's word for a product whose shapes do not fit
        raise AssertionError(
            f"{dense_backward.__name__}(x (1, 2), W (2, 3), dout (1, 3)) raised "
            f"{type(error).__name__}: {error}. Write each gradient's shape under it first: dx "
            f"like x (N, D_in), dW like W (D_in, D_out), db like b (D_out,)") from error
    if not (isinstance(result, (tuple, list)) and len(result) == 3):
        raise AssertionError(
            f"{dense_backward.__name__} returned {type(result).__name__}"
            f"{'' if not isinstance(result, (tuple, list)) else f' of {len(result)} values'}: "
            f"expected three arrays, return dx, dW, db")
    worst = 0.0
    for n, d_in, d_out in [(4, 5, 3), (1, 7, 2), (3, 2, 6)]:
        layer = _DenseWith(dense_backward, d_in, d_out, rng=rng, dtype=np.float64)
        layer.params["b"][:] = rng.standard_normal(d_out)
        errors = check_layer(layer, rng.standard_normal((n, d_in)))
        for name, err in errors.items():
            assert err < TOL, (
                f"batch {n}, {d_in} -> {d_out}: d{name} has relative error {err:.1e} against "
                f"centred differences (a right gradient gives about 1e-10)")
        worst = max(worst, *errors.values())
    print(f"passed: dx, dW and db agree with centred differences (worst relative error "
          f"{worst:.1e}, tolerance {TOL:.0e})")


# --------------------------------------------------------------------------
# Exercise 3: output shapes with stride 2
# --------------------------------------------------------------------------
SHAPE_QUESTIONS = {   # name: (input (N, H, W, C), filters, kernel, stride, padding)
    "a": ((5, 28, 28, 3), 8, 3, 2, "same"),
    "b": ((5, 28, 28, 3), 8, 3, 2, "valid"),
    "c": ((1, 7, 7, 16), 32, 3, 2, "same"),
}


def check_output_shapes(answers):
    """answers: {"a": (N, Ho, Wo, C_out), "b": ..., "c": ...} for SHAPE_QUESTIONS."""
    if answers is None or any(v is None for v in dict(answers).values()):
        print("not attempted yet: fill in the shapes in the cell above, then rerun this cell")
        return
    for name, (shape, filters, k, stride, padding) in SHAPE_QUESTIONS.items():
        assert name in answers, f"question {name!r}: no answer given"
        n, h, w, c = shape
        truth = (n, *Conv2D(c, filters, k, stride=stride, padding=padding).output_shape(h, w))
        given = tuple(answers[name])
        assert len(given) == 4, (
            f"question {name!r}: {given} has {len(given)} numbers; expected four, "
            f"(N, Ho, Wo, C_out)")
        assert all(float(v) == int(v) for v in given), (
            f"question {name!r}: {given} is not made of whole numbers. A size is a count of "
            f"windows: round it (which way? count the windows that fit)")
        given = tuple(int(v) for v in given)
        assert given == truth, (
            f"question {name!r} (input {shape}, {filters} filters {k}x{k}, stride {stride}, "
            f"padding={padding!r}): {given} is not the output shape. Padding 'same' gives "
            f"ceil(H / stride); 'valid' gives floor((H - k) / stride) + 1")
    print(f"passed: all {len(SHAPE_QUESTIONS)} output shapes are right")
