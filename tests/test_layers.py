"""Layer contracts: no in-place changes, clear errors, float32 and float64."""

import numpy as np
import pytest

from npskip.layers import Conv2D, Dense, Flatten, ReLU


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
