"""im2col/col2im: numba kernels against their naive twins and against scipy."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from scipy import signal

from npskip.engine import kernels, reference
from npskip.engine.layers import Conv2D

shapes = st.tuples(
    st.integers(1, 4),    # N
    st.integers(1, 9),    # H
    st.integers(1, 9),    # W
    st.integers(1, 8),    # C_in
    st.integers(1, 8),    # C_out
    st.sampled_from([1, 3, 5]),
    st.sampled_from([1, 2]),
    st.sampled_from(["same", "valid"]),
)


def _fits(h, w, k, padding):
    return padding == "same" or (h >= k and w >= k)


@settings(max_examples=40, deadline=None)
@given(shapes, st.integers(0, 2**31 - 1))
def test_im2col_and_col2im_match_naive(shape, seed):
    n, h, w, c, _, k, s, padding = shape
    if not _fits(h, w, k, padding):
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, h, w, c))
    ref, ho, wo = reference.im2col(x, k, k, s, padding)
    _, _, pt, pl = reference.conv_output_shape(h, w, k, k, s, padding)
    cols = np.full_like(ref, np.nan)     # NaN shows any entry the kernel forgets
    kernels.im2col(x, k, k, s, pt, pl, ho, wo, cols)
    np.testing.assert_array_equal(cols, ref)

    dcols = rng.standard_normal(ref.shape)
    dx = np.full_like(x, np.nan)
    kernels.col2im(dcols, k, k, s, pt, pl, ho, wo, dx)
    np.testing.assert_allclose(dx, reference.col2im(dcols, x.shape, k, k, s, padding),
                               rtol=0, atol=1e-12)


def test_col2im_is_the_adjoint_of_im2col(rng):
    # <im2col(x), d> == <x, col2im(d)> for every x, d: the definition of backward.
    x = rng.standard_normal((2, 7, 6, 3))
    cols, ho, wo = reference.im2col(x, 3, 3, 2, "same")
    d = rng.standard_normal(cols.shape)
    back = reference.col2im(d, x.shape, 3, 3, 2, "same")
    assert np.isclose(np.sum(cols * d), np.sum(x * back), rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(shapes, st.integers(0, 2**31 - 1))
def test_conv_forward_equals_scipy_correlate(shape, seed):
    n, h, w, c_in, c_out, k, _, padding = shape
    if not _fits(h, w, k, padding):
        return
    rng = np.random.default_rng(seed)
    layer = Conv2D(c_in, c_out, k, stride=1, padding=padding, rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(c_out)
    x = rng.standard_normal((n, h, w, c_in))
    out = layer.forward(x)
    mode = "same" if padding == "same" else "valid"
    expected = np.empty_like(out)
    for b in range(n):
        for o in range(c_out):
            acc = sum(signal.correlate(x[b, :, :, i], layer.params["W"][:, :, i, o], mode=mode)
                      for i in range(c_in))
            expected[b, :, :, o] = acc + layer.params["b"][o]
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("stride,padding", [(1, "same"), (2, "same"), (2, "valid"), (1, "valid")])
def test_conv_forward_equals_naive_definition(rng, stride, padding):
    layer = Conv2D(3, 5, (3, 5), stride=stride, padding=padding, rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(5)
    x = rng.standard_normal((2, 8, 9, 3))
    ref = reference.conv2d(x, layer.params["W"], layer.params["b"], stride, padding)
    np.testing.assert_allclose(layer.forward(x), ref, rtol=0, atol=1e-12)


def test_output_shape_formulas():
    assert reference.conv_output_shape(28, 28, 3, 3, 1, "same") == (28, 28, 1, 1)
    assert reference.conv_output_shape(7, 8, 3, 3, 2, "same") == (4, 4, 1, 0)
    assert reference.conv_output_shape(7, 8, 3, 3, 2, "valid") == (3, 3, 0, 0)
    with pytest.raises(ValueError, match="smaller than"):
        reference.conv_output_shape(2, 2, 3, 3, 1, "valid")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_matches_naive(rng, dtype):
    out = np.maximum(rng.standard_normal((3, 5, 4, 2)), 0).astype(dtype)
    out[0, 0, 0, 0] = 0.0                      # exactly at the kink: derivative 0
    dout = rng.standard_normal(out.shape).astype(dtype)
    got = kernels.relu_backward(out.reshape(-1), dout.reshape(-1)).reshape(out.shape)
    np.testing.assert_array_equal(got, reference.relu_backward(out, dout))
    assert got.dtype == dtype


def test_one_blas_thread_nests_and_restores():
    from threadpoolctl import threadpool_info
    from npskip.engine.model import SkipCNN

    def blas_threads():
        return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]
    model = SkipCNN((6, 6, 1), 3, widths=(10, 10, 12))
    model.forward(np.zeros((2, 6, 6, 1), np.float32))      # loads every BLAS library first
    before = blas_threads()
    with kernels.one_blas_thread:
        with kernels.one_blas_thread:
            assert set(blas_threads()) == {1}
        assert set(blas_threads()) == {1}                    # the inner exit does not restore
    assert blas_threads() == before
    model.backward(np.ones((2, 3), np.float32))
    assert blas_threads() == before


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("factor", [1, 2, 3])
def test_avg_pool_matches_naive(rng, dtype, factor):
    x = rng.standard_normal((3, 6 * factor // 2 * 2, 4 * factor, 2)).astype(dtype)
    n, h, w, c = x.shape
    out = np.empty((n, h // factor, w // factor, c), dtype=dtype)
    kernels.avg_pool(x, factor, out)
    # float32: the kernel sums in another order than NumPy's mean, so to rounding
    np.testing.assert_allclose(out, reference.avg_pool(x, factor),
                               rtol=1e-6 if dtype == np.float32 else 1e-14, atol=1e-7)


@pytest.mark.parametrize("h, w, kernel, padding", [(7, 5, 3, "same"), (6, 9, (2, 4), "same"),
                                                   (8, 6, (3, 2), "valid"), (1, 1, 3, "same"),
                                                   (5, 5, 1, "valid")])
@pytest.mark.parametrize("activation", [None, "relu"])
@pytest.mark.parametrize("c_in", [1, 3])
def test_wide_path_matches_naive(rng, h, w, kernel, padding, activation, c_in):
    # Stride 1 and few input channels take kernels.conv_forward_wide / conv_backward_wide.
    layer = Conv2D(c_in, 5, kernel, padding=padding, activation=activation, rng=rng,
                   dtype=np.float64)
    assert layer._wide()
    layer.params["b"][:] = rng.standard_normal(5)
    x = rng.standard_normal((3, h, w, c_in))
    out = layer.forward(x)
    want = reference.conv2d(x, layer.params["W"], layer.params["b"], 1, padding)
    if activation == "relu":
        want = np.maximum(want, 0)
    np.testing.assert_allclose(out, want, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    ref_dx, ref_dw, ref_db = reference.conv2d_backward(
        x, layer.params["W"], layer.params["b"], dout, 1, padding, activation)
    np.testing.assert_allclose(dx, ref_dx, atol=1e-12)
    np.testing.assert_allclose(layer.grads["W"], ref_dw, atol=1e-12)
    np.testing.assert_allclose(layer.grads["b"], ref_db, atol=1e-12)
    layer.forward(x)                                   # need_dx=False: same weight gradients
    assert layer.backward(dout, need_dx=False) is None
    np.testing.assert_allclose(layer.grads["W"], ref_dw, atol=1e-12)
