"""The plain backward twins against the fast layers, in float64 on random shapes.

``reference.conv2d_backward`` is the convolution's backward as three matrix
lines (cols.T @ g, g @ W.T, col2im); ``reference.routed_dense`` is SkipCNN's
dense layer with the zero padding built. The fast forms sum in another order
(image by image, thread by thread), so they agree to rounding: atol 1e-10 on
values of order 1-10.
"""

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from npskip.engine import kernels, reference
from npskip.engine.layers import Conv2D
from npskip.engine.model import SkipCNN

ATOL = 1e-10


@settings(max_examples=50, deadline=None)
@given(n=st.integers(1, 4), h=st.integers(1, 9), w=st.integers(1, 9),
       c_in=st.integers(1, 6), c_out=st.integers(1, 6), kh=st.sampled_from([1, 2, 3, 5]),
       kw=st.sampled_from([1, 3, 4]), stride=st.sampled_from([1, 2, 3]),
       padding=st.sampled_from(["same", "valid"]), activation=st.sampled_from([None, "relu"]),
       seed=st.integers(0, 2**31 - 1))
def test_conv2d_backward_naive_matches_conv2d(n, h, w, c_in, c_out, kh, kw, stride, padding,
                                              activation, seed):
    if padding == "valid" and (h < kh or w < kw):
        return
    rng = np.random.default_rng(seed)
    layer = Conv2D(c_in, c_out, (kh, kw), stride=stride, padding=padding,
                   activation=activation, rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(c_out)
    x = rng.standard_normal((n, h, w, c_in))
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    ref_dx, ref_dw, ref_db = reference.conv2d_backward(
        x, layer.params["W"], layer.params["b"], dout, stride, padding, activation)
    np.testing.assert_allclose(dx, ref_dx, rtol=0, atol=ATOL)
    np.testing.assert_allclose(layer.grads["W"], ref_dw, rtol=0, atol=ATOL)
    np.testing.assert_allclose(layer.grads["b"], ref_db, rtol=0, atol=ATOL)
    assert ref_dx.shape == x.shape and ref_dw.shape == layer.params["W"].shape


def test_conv2d_backward_naive_applies_relus_mask(rng):
    # Where the pre-activation is negative nothing flows back: with every
    # pre-activation negative, every gradient is exactly zero.
    layer = Conv2D(2, 3, 3, activation="relu", rng=rng, dtype=np.float64)
    layer.params["b"][:] = -100.0
    x = rng.random((2, 5, 4, 2))
    dout = rng.standard_normal((2, 5, 4, 3))
    dx, dw, db = reference.conv2d_backward(x, layer.params["W"], layer.params["b"], dout,
                                               activation="relu")
    assert not dx.any() and not dw.any() and not db.any()
    # Without the ReLU the same call passes dout through.
    _, _, db_plain = reference.conv2d_backward(x, layer.params["W"], layer.params["b"], dout)
    np.testing.assert_allclose(db_plain, dout.sum(axis=(0, 1, 2)))


def test_conv2d_backward_naive_rejects_bad_input(rng):
    W, b = rng.standard_normal((3, 3, 2, 4)), np.zeros(4)
    x = rng.standard_normal((1, 5, 5, 2))
    with pytest.raises(ValueError, match=r"expected shape \(1, 5, 5, 4\)"):
        reference.conv2d_backward(x, W, b, np.zeros((1, 5, 5, 3)))
    with pytest.raises(ValueError, match="activation"):
        reference.conv2d_backward(x, W, b, np.zeros((1, 5, 5, 4)), activation="tanh")


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 6), w=st.integers(1, 6), c_max=st.integers(1, 6),
       classes=st.integers(1, 5), m=st.integers(1, 5), data=st.data(),
       seed=st.integers(0, 2**31 - 1))
def test_routed_dense_naive_matches_skipcnn(h, w, c_max, classes, m, data, seed):
    # A route ending at a c-channel layer meets only the dense rows of its c
    # channels in SkipCNN; the twin multiplies the zero padding instead.
    c = data.draw(st.integers(1, c_max), label="c")
    rng = np.random.default_rng(seed)
    model = SkipCNN((h, w, 1), classes, widths=(c, c_max), seed=seed, dtype=np.float64)
    model.dense.params["b"][:] = rng.standard_normal(classes)
    feats = rng.standard_normal((m, h, w, c))
    dlogits = rng.standard_normal((m, classes))
    W, b = model.dense.params["W"], model.dense.params["b"]
    ref_logits, ref_dfeats, ref_dw, ref_db = reference.routed_dense(feats, W, b, dlogits)
    with kernels.one_blas_thread:
        logits = model._dense_forward(feats)
        dfeats = model._dense_backward(feats, dlogits)
    np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=ATOL)
    np.testing.assert_allclose(dfeats, ref_dfeats, rtol=0, atol=ATOL)
    np.testing.assert_allclose(model.dense.grads["W"], ref_dw, rtol=0, atol=ATOL)
    np.testing.assert_allclose(model.dense.grads["b"], ref_db, rtol=0, atol=ATOL)
    # The rows of the padding channels get no gradient at all.
    per_pixel = ref_dw.reshape(h * w, c_max, classes)
    assert not per_pixel[:, c:].any()


def test_routed_dense_naive_matches_a_routed_batch(rng):
    # Through the public interface: a mixed batch, each route's dense inputs
    # (the activations of its last layer) through the twin, logits and dense
    # gradients summed over the routes that end at each layer.
    model = SkipCNN((5, 4, 1), 3, widths=(2, 3, 4), seed=3, dtype=np.float64)
    model.dense.params["b"][:] = rng.standard_normal(3)
    x = rng.standard_normal((7, 5, 4, 1))
    routes = np.array([0, 2, 1, 0, 2, 2, 1])
    logits = model.forward(x, routes)
    dlogits = rng.standard_normal(logits.shape)
    model.backward(dlogits)
    W, b = model.dense.params["W"], model.dense.params["b"]
    order = np.argsort(-routes, kind="stable")          # the model's sorted order
    dw, db = np.zeros_like(W), np.zeros_like(b)
    for r in range(3):
        rows = order[routes[order] == r]                  # batch indices on route r
        reach_next = np.count_nonzero(routes >= r + 1)
        feats = model.activations[r][reach_next:]          # the rows that end at layer r
        ref_logits, _, dw_r, db_r = reference.routed_dense(feats, W, b, dlogits[rows])
        np.testing.assert_allclose(logits[rows], ref_logits, rtol=0, atol=ATOL)
        dw += dw_r
        db += db_r
    np.testing.assert_allclose(model.dense.grads["W"], dw, rtol=0, atol=ATOL)
    np.testing.assert_allclose(model.dense.grads["b"], db, rtol=0, atol=ATOL)


def test_routed_dense_naive_rejects_too_many_channels(rng):
    with pytest.raises(ValueError, match="C_max >= 5"):
        reference.routed_dense(rng.standard_normal((2, 3, 3, 5)),
                                   rng.standard_normal((3 * 3 * 4, 2)), np.zeros(2),
                                   np.zeros((2, 2)))
