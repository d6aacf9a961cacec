"""Forward and backward against PyTorch autograd, in float64 (tolerance 1e-8)."""

import numpy as np
import pytest

from npskip.engine import kernels, reference
from npskip.engine.layers import Conv2D, Dense
from npskip.engine.losses import softmax_cross_entropy

from conftest import require_torch


@pytest.mark.parametrize("n,h,w,c_in,c_out,k,stride,padding,activation", [
    (1, 5, 5, 1, 1, 3, 1, "same", None),
    (2, 7, 6, 3, 4, 3, 2, "same", None),
    (3, 8, 9, 2, 5, 5, 1, "valid", None),
    (4, 6, 7, 8, 3, 1, 2, "valid", None),
    (2, 9, 8, 4, 6, 5, 2, "same", None),
    (3, 8, 7, 3, 6, 3, 1, "same", "relu"),
    (2, 9, 8, 4, 5, 5, 2, "valid", "relu"),
])
def test_conv2d_matches_torch(n, h, w, c_in, c_out, k, stride, padding, activation, rng):
    torch = require_torch()
    F = torch.nn.functional
    layer = Conv2D(c_in, c_out, k, stride=stride, padding=padding, activation=activation,
                   rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(c_out)
    x = rng.standard_normal((n, h, w, c_in))
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)

    ho, wo, pt, pl = reference.conv_output_shape(h, w, k, k, stride, padding)
    pb = max((ho - 1) * stride + k - h - pt, 0)
    pr = max((wo - 1) * stride + k - w - pl, 0)
    tx = torch.tensor(x.transpose(0, 3, 1, 2), requires_grad=True)
    tw = torch.tensor(layer.params["W"].transpose(3, 2, 0, 1), requires_grad=True)
    tb = torch.tensor(layer.params["b"], requires_grad=True)
    tout = F.conv2d(F.pad(tx, (pl, pr, pt, pb)), tw, tb, stride=stride)
    if activation == "relu":
        tout = F.relu(tout)
    tout.backward(torch.tensor(dout.transpose(0, 3, 1, 2)))

    np.testing.assert_allclose(out, tout.detach().numpy().transpose(0, 2, 3, 1), rtol=0, atol=1e-8)
    np.testing.assert_allclose(dx, tx.grad.numpy().transpose(0, 2, 3, 1), rtol=0, atol=1e-8)
    np.testing.assert_allclose(layer.grads["W"], tw.grad.numpy().transpose(2, 3, 1, 0),
                               rtol=0, atol=1e-8)
    np.testing.assert_allclose(layer.grads["b"], tb.grad.numpy(), rtol=0, atol=1e-8)


def test_dense_matches_torch(rng):
    torch = require_torch()
    layer = Dense(7, 4, rng=rng, dtype=np.float64)
    layer.params["b"][:] = rng.standard_normal(4)
    x = rng.standard_normal((5, 7))
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(layer.params["W"].T.copy(), requires_grad=True)
    tb = torch.tensor(layer.params["b"], requires_grad=True)
    tout = torch.nn.functional.linear(tx, tw, tb)
    tout.backward(torch.tensor(dout))
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=0, atol=1e-8)
    np.testing.assert_allclose(layer.grads["W"], tw.grad.numpy().T, rtol=0, atol=1e-8)
    np.testing.assert_allclose(layer.grads["b"], tb.grad.numpy(), rtol=0, atol=1e-8)


@pytest.mark.parametrize("scale", [1.0, 30.0, 1e4])
def test_loss_matches_torch(scale, rng):
    torch = require_torch()
    logits = rng.standard_normal((6, 10)) * scale
    labels = rng.integers(0, 10, size=6)
    loss, d = softmax_cross_entropy(logits, labels)
    tl = torch.tensor(logits, requires_grad=True)
    tloss = torch.nn.functional.cross_entropy(tl, torch.tensor(labels))
    tloss.backward()
    assert abs(loss - tloss.item()) <= 1e-8 * max(1.0, abs(tloss.item()))
    np.testing.assert_allclose(d, tl.grad.numpy(), rtol=0, atol=1e-8)
