"""Layer contracts: no in-place changes, clear errors, float32 and float64."""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from npskip.engine.layers import Conv2D, Dense, Flatten, ReLU


def _layers():
    return [
        (Conv2D(3, 4, 3, stride=2, rng=0), (2, 7, 6, 3)),
        (ReLU(), (2, 5, 5, 4)),
        (Flatten(), (2, 5, 5, 4)),
        (Dense(12, 5, rng=0), (3, 12)),
    ]


@pytest.mark.parametrize("layer,shape", _layers())
def test_forward_and_backward_do_not_modify_inputs(layer, shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    x_copy = x.copy()
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape).astype(np.float32)
    dout_copy = dout.copy()
    dx = layer.backward(dout)
    np.testing.assert_array_equal(x, x_copy)
    np.testing.assert_array_equal(dout, dout_copy)
    assert dx.shape == x.shape and dx.dtype == np.float32


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtypes_are_kept(dtype, rng):
    conv = Conv2D(2, 3, rng=0, dtype=dtype)
    out = conv.forward(rng.standard_normal((1, 4, 4, 2)).astype(dtype))
    assert out.dtype == dtype and conv.params["W"].dtype == dtype


def test_glorot_uniform_bounds_and_reproducibility():
    conv = Conv2D(8, 16, 3, rng=np.random.default_rng(7))
    limit = np.sqrt(6 / (9 * 8 + 9 * 16))
    assert np.abs(conv.params["W"]).max() <= limit
    assert np.abs(conv.params["W"]).max() > 0.9 * limit
    assert not conv.params["b"].any()
    np.testing.assert_array_equal(conv.params["W"], Conv2D(8, 16, 3, rng=7).params["W"])


def test_conv_rejects_wrong_rank_channels_and_dtype():
    conv = Conv2D(3, 4)
    with pytest.raises(ValueError, match=r"expected a 4-d array \(N, H, W, 3\), received shape \(5, 5, 3\)"):
        conv.forward(np.zeros((5, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r"expected shape \(N, H, W, 3\), received shape \(1, 5, 5, 1\)"):
        conv.forward(np.zeros((1, 5, 5, 1), np.float32))
    with pytest.raises(ValueError, match="expected dtype float32, received float64"):
        conv.forward(np.zeros((1, 5, 5, 3)))
    with pytest.raises(ValueError, match="expected dtype float32, received uint8"):
        conv.forward(np.zeros((1, 5, 5, 3), np.uint8))


def test_dense_rejects_wrong_shape():
    with pytest.raises(ValueError, match=r"expected shape \(N, 12\), received shape \(2, 10\)"):
        Dense(12, 5).forward(np.zeros((2, 10), np.float32))


def test_backward_without_forward_is_an_error():
    with pytest.raises(RuntimeError, match="without a forward pass"):
        Conv2D(1, 1).backward(np.zeros((1, 1, 1, 1), np.float32))


def test_conv_backward_rejects_wrong_upstream_shape(rng):
    conv = Conv2D(1, 2)
    conv.forward(np.zeros((1, 4, 4, 1), np.float32))
    with pytest.raises(ValueError, match=r"expected shape \(1, 4, 4, 2\), received \(1, 4, 4, 3\)"):
        conv.backward(np.zeros((1, 4, 4, 3), np.float32))


def test_zero_grad_clears_gradients_and_cache(rng):
    conv = Conv2D(1, 2)
    conv.forward(rng.standard_normal((1, 4, 4, 1)).astype(np.float32))
    conv.backward(np.ones((1, 4, 4, 2), np.float32))
    assert conv.grads["W"].any()
    conv.zero_grad()
    assert not conv.grads["W"].any() and conv.cache is None


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 3), h=st.integers(1, 7), w=st.integers(1, 7), c_in=st.integers(1, 5),
       c_out=st.integers(1, 5), stride=st.sampled_from([1, 2]),
       need_dx=st.booleans(), seed=st.integers(0, 2**31 - 1))
def test_fused_relu_equals_conv_then_relu_layer(n, h, w, c_in, c_out, stride, need_dx, seed):
    """Conv2D(activation="relu") computes exactly what Conv2D followed by ReLU() does."""
    rng = np.random.default_rng(seed)
    fused = Conv2D(c_in, c_out, 3, stride=stride, activation="relu", rng=seed, dtype=np.float64)
    plain = Conv2D(c_in, c_out, 3, stride=stride, rng=seed, dtype=np.float64)
    fused.params["b"][:] = plain.params["b"][:] = rng.standard_normal(c_out)
    relu = ReLU()
    x = rng.standard_normal((n, h, w, c_in))
    out = fused.forward(x)
    np.testing.assert_allclose(out, relu.forward(plain.forward(x)), rtol=1e-12, atol=1e-12)
    dout = rng.standard_normal(out.shape)
    dx_fused = fused.backward(dout, need_dx=need_dx)
    dx_plain = plain.backward(relu.backward(dout), need_dx=need_dx)
    for name in ("W", "b"):
        np.testing.assert_allclose(fused.grads[name], plain.grads[name], rtol=1e-12, atol=1e-12)
    if need_dx:
        np.testing.assert_allclose(dx_fused, dx_plain, rtol=1e-12, atol=1e-12)
    else:
        assert dx_fused is None and dx_plain is None


def test_conv_rejects_unknown_activation():
    with pytest.raises(ValueError, match=r"activation: expected None or 'relu', received 'tanh'"):
        Conv2D(1, 1, activation="tanh")
