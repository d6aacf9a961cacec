"""Every backward pass against centred differences, in float64.

Tolerance 1e-7 on the relative error: a correct gradient gives about 1e-10 here
(truncation h**2 and rounding eps/h with h = 1e-5), a wrong one gives 1e-2 or
more, so 1e-7 separates the two with room on both sides.
"""

import numpy as np
from hypothesis import assume, given, settings, strategies as st

from npskip.engine.gradcheck import check_layer, check_loss
from npskip.engine.layers import Conv2D, Dense, Flatten, ReLU
from npskip.engine.losses import softmax_cross_entropy

TOL = 1e-7


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 4), h=st.integers(1, 8), w=st.integers(1, 8),
       c_in=st.integers(1, 8), c_out=st.integers(1, 8), k=st.sampled_from([1, 3, 5]),
       stride=st.sampled_from([1, 2]), padding=st.sampled_from(["same", "valid"]),
       activation=st.sampled_from([None, "relu"]), seed=st.integers(0, 2**31 - 1))
def test_conv2d_gradients(n, h, w, c_in, c_out, k, stride, padding, activation, seed):
    if padding == "valid" and (h < k or w < k):
        return
    rng = np.random.default_rng(seed)
    layer = Conv2D(c_in, c_out, k, stride=stride, padding=padding, activation=activation,
                   rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(c_out)
    x = rng.standard_normal((n, h, w, c_in))
    if activation == "relu":
        # Skip draws with a pre-activation within 1e-3 of ReLU's kink, where a +-h
        # step can cross it and centred differences stop measuring the slope.
        plain = Conv2D(c_in, c_out, k, stride=stride, padding=padding, dtype=np.float64)
        plain.params = layer.params
        assume(np.abs(plain.forward(x)).min() > 1e-3)
    errors = check_layer(layer, x, seed=seed)
    assert max(errors.values()) < TOL, errors


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 4), d_in=st.integers(1, 8), d_out=st.integers(1, 8),
       seed=st.integers(0, 2**31 - 1))
def test_dense_gradients(n, d_in, d_out, seed):
    rng = np.random.default_rng(seed)
    layer = Dense(d_in, d_out, rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(d_out)
    errors = check_layer(layer, rng.standard_normal((n, d_in)), seed=seed)
    assert max(errors.values()) < TOL, errors


@settings(max_examples=20, deadline=None)
@given(shape=st.tuples(st.integers(1, 4), st.integers(1, 6), st.integers(1, 6),
                       st.integers(1, 8)),
       seed=st.integers(0, 2**31 - 1))
def test_relu_and_flatten_gradients(shape, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape)
    # Keep inputs away from ReLU's kink at 0, where a +-h step changes the slope.
    x += np.sign(x) * 0.1
    assert check_layer(ReLU(), x, seed=seed)["x"] < TOL
    assert check_layer(Flatten(), x, seed=seed)["x"] < TOL


@settings(max_examples=20, deadline=None)
# Logit scales up to 3: with larger logits softmax saturates, the whole gradient
# shrinks towards 1e-9, and centred differences of a loss that small are rounding
# noise (relative error 1e-6 and worse) however right the analytic gradient is.
# Huge logits are checked against PyTorch and for stability in test_losses_optim.py.
@given(n=st.integers(1, 4), k=st.integers(2, 10), scale=st.sampled_from([0.1, 1.0, 3.0]),
       seed=st.integers(0, 2**31 - 1))
def test_softmax_cross_entropy_gradient(n, k, scale, seed):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, k)) * scale
    labels = rng.integers(0, k, size=n)
    assert check_loss(softmax_cross_entropy, logits, labels) < TOL


def test_a_wrong_gradient_is_caught(rng):
    # The check must be able to fail: break Dense's dW and see a large error.
    layer = Dense(4, 3, rng=rng, dtype=np.float64)
    original = layer.backward

    def broken(dout):
        dx = original(dout)
        layer.grads["W"] *= 1.01
        return dx

    layer.backward = broken
    errors = check_layer(layer, rng.standard_normal((2, 4)))
    assert errors["W"] > 1e-3 and errors["x"] < TOL
