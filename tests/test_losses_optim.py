"""The loss's numerical stability and RMSprop's exact update rule."""

import numpy as np
import pytest

from npskip.engine.layers import Dense
from npskip.engine.losses import softmax_cross_entropy
from npskip.engine.optim import RMSprop, rmsprop_update, rmsprop_update_parallel, rmsprop_update_plain


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_loss_is_stable_for_huge_logits(dtype):
    logits = np.array([[1e4, 0.0, -1e4], [-1e4, 1e4, 1e4]], dtype=dtype)
    loss, d = softmax_cross_entropy(logits, np.array([0, 1]))
    # Row 0 is certain and right (loss 0); row 1 splits between two classes (log 2).
    assert np.isclose(loss, np.log(2) / 2, rtol=1e-6)
    assert np.all(np.isfinite(d)) and d.dtype == dtype
    np.testing.assert_allclose(d.sum(axis=1), 0, atol=1e-7)


def test_loss_matches_the_definition(rng):
    logits = rng.standard_normal((5, 4))
    labels = np.array([0, 3, 1, 1, 2])
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    loss, _ = softmax_cross_entropy(logits, labels)
    assert np.isclose(loss, -np.mean(np.log(p[np.arange(5), labels])), rtol=1e-12)


def test_loss_refuses_nan_and_bad_labels():
    with pytest.raises(FloatingPointError, match="finite"):
        softmax_cross_entropy(np.array([[np.nan, 1.0]]), np.array([0]))
    with pytest.raises(FloatingPointError, match="finite"):
        softmax_cross_entropy(np.array([[np.inf, 1.0]]), np.array([0]))
    with pytest.raises(ValueError, match=r"values in \[0, 2\)"):
        softmax_cross_entropy(np.zeros((1, 2)), np.array([2]))
    with pytest.raises(ValueError, match="integer"):
        softmax_cross_entropy(np.zeros((1, 2)), np.array([0.0]))
    with pytest.raises(ValueError, match=r"expected shape \(3,\)"):
        softmax_cross_entropy(np.zeros((3, 2)), np.array([0, 1]))


def test_loss_does_not_modify_its_inputs(rng):
    logits = rng.standard_normal((4, 3))
    labels = np.array([0, 1, 2, 0])
    before = logits.copy(), labels.copy()
    softmax_cross_entropy(logits, labels)
    np.testing.assert_array_equal(logits, before[0])
    np.testing.assert_array_equal(labels, before[1])


def test_rmsprop_two_steps_by_hand():
    layer = Dense(1, 1, dtype=np.float64)
    layer.params["W"][:] = 1.0
    layer.params["b"][:] = 0.5
    opt = RMSprop(lr=0.1, rho=0.9, eps=1e-7)
    # step 1: g = 2 -> v = 0.1*4 = 0.4; w = 1 - 0.1*2/sqrt(0.4 + 1e-7)
    layer.grads["W"][:] = 2.0
    layer.grads["b"][:] = 0.0
    opt.step([layer])
    w1 = 1.0 - 0.2 / np.sqrt(0.4 + 1e-7)
    assert layer.params["W"][0, 0] == pytest.approx(w1, rel=1e-15)
    # step 2: g = -1 -> v = 0.9*0.4 + 0.1*1 = 0.46; w = w1 + 0.1/sqrt(0.46 + 1e-7)
    layer.grads["W"][:] = -1.0
    opt.step([layer])
    assert layer.params["W"][0, 0] == pytest.approx(w1 + 0.1 / np.sqrt(0.46 + 1e-7), rel=1e-15)
    assert opt.state_for(layer)["W"][0, 0] == pytest.approx(0.46, rel=1e-15)
    # b had a zero gradient twice: bit-identical.
    assert layer.params["b"][0] == 0.5


def test_rmsprop_epsilon_sits_inside_the_root():
    # For a tiny gradient, Keras' sqrt(v + eps) and PyTorch's sqrt(v) + eps differ
    # tenfold or more; we must follow Keras.
    layer = Dense(1, 1, dtype=np.float64)
    layer.params["W"][:] = 0.0
    layer.grads["W"][:] = 1e-5
    RMSprop(lr=1.0).step([layer])
    v = 0.1 * 1e-10
    assert layer.params["W"][0, 0] == pytest.approx(-1e-5 / np.sqrt(v + 1e-7), rel=1e-12)
    assert abs(layer.params["W"][0, 0]) < 0.1 * 1e-5 / (np.sqrt(v) + 1e-7)


def test_rmsprop_leaves_zero_gradient_elements_bit_identical(rng):
    layer = Dense(6, 5, rng=rng)          # float32, as in training
    before = layer.params["W"].copy()
    g = rng.standard_normal((6, 5)).astype(np.float32)
    g[:, 2] = 0.0
    layer.grads["W"][:] = g
    opt = RMSprop()
    for _ in range(3):
        opt.step([layer])
    assert np.array_equal(layer.params["W"][:, 2], before[:, 2])
    assert not np.any(layer.params["W"][:, 0] == before[:, 0])


def test_rmsprop_leaves_layers_it_is_not_given_alone(rng):
    a, b = Dense(3, 2, rng=rng), Dense(3, 2, rng=rng)
    b.grads["W"][:] = 1.0
    snapshot = b.params["W"].copy()
    opt = RMSprop()
    a.grads["W"][:] = 1.0
    opt.step([a])
    assert np.array_equal(b.params["W"], snapshot) and opt.state_for(b) == {}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fused_rmsprop_matches_its_plain_twin_bit_for_bit(rng, dtype):
    # Same operations in the same order and precision: the results must be identical,
    # not merely close (zero gradients included, which must leave w untouched).
    w = rng.standard_normal(1001).astype(dtype)
    v = rng.random(1001).astype(dtype)
    w2, v2, w3, v3 = w.copy(), v.copy(), w.copy(), v.copy()
    f = np.dtype(dtype).type
    scalars = (f(1e-3), f(0.9), f(1 - 0.9), f(1e-7))
    for step in range(3):
        g = rng.standard_normal(1001).astype(dtype)
        g[::7] = 0.0
        rmsprop_update(w, g, v, *scalars, 0, 1001)
        rmsprop_update_parallel(w3, g, v3, *scalars, 3)     # blocks of uneven size
        rmsprop_update_plain(w2, g, v2, 1e-3, 0.9, 1e-7)
        for fused in (w, w3):
            np.testing.assert_array_equal(fused, w2)
        for fused in (v, v3):
            np.testing.assert_array_equal(fused, v2)


def test_rmsprop_updates_non_contiguous_parameters_in_place(rng):
    # A strided parameter cannot be flattened without a copy; the plain rule updates it.
    layer = Dense(4, 3, rng=rng)
    base = np.asfortranarray(layer.params["W"])
    layer.params["W"] = base
    layer.grads["W"][:] = 1.0
    before = base.copy()
    RMSprop().step([layer])
    assert layer.params["W"] is base and np.all(base < before)


def test_rmsprop_rejects_bad_settings():
    with pytest.raises(ValueError, match="lr > 0"):
        RMSprop(lr=0)
