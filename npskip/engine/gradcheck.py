"""Numerical gradient checks: the proof that every backward pass is right.

The analytic gradient of a scalar ``L = sum(f(x) * dout)`` for a random
upstream gradient ``dout`` is compared with centred differences,

    dL/dx[i] ~ sum((f(x + h e_i) - f(x - h e_i)) * dout) / (2h),

whose error is O(h**2) from truncation plus O(eps_machine / h) from rounding.
In float64 with h = 1e-5 both are around 1e-10, so a correct backward pass
gives relative errors near 1e-10 and a wrong one near 1. Run checks in float64:
in float32 rounding alone (1e-7 / 1e-5) swamps the comparison.

Relative error is ``|a - b| / max(|a| + |b|, tiny)`` over the whole array
(Euclidean norms), which does not blow up on entries that are near zero.
"""

import numpy as np


def relative_error(a, b):
    """||a - b|| / (||a|| + ||b||), 0 when both are zero."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    return 0.0 if denom == 0 else float(np.linalg.norm(a - b) / denom)


def numerical_gradient(f, x, dout, h=1e-5):
    """Centred-difference gradient of sum(f() * dout) with respect to ``x``.

    f: a function of no arguments whose output depends on the array ``x``,
       which is perturbed in place one element at a time and restored.
    x: the array to differentiate with respect to (float64).
    dout: array shaped like f()'s output (a scalar output: dout = 1.0).
    Returns an array shaped like ``x``.
    """
    grad = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        ix = it.multi_index
        old = x[ix]
        x[ix] = old + h
        pos = np.array(f(), dtype=np.float64, copy=True)
        x[ix] = old - h
        neg = np.array(f(), dtype=np.float64, copy=True)
        x[ix] = old
        grad[ix] = np.sum((pos - neg) * dout) / (2 * h)
    return grad


def check_layer(layer, x, seed=0, h=1e-5):
    """Check a layer's backward pass against centred differences.

    layer: a float64 layer with forward/backward/params/grads.
    x: (input shape) float64.
    Returns {"x": rel_err, "<param>": rel_err, ...}.
    """
    if x.dtype != np.float64:
        raise ValueError(f"check_layer: expected a float64 input, received {x.dtype}")
    rng = np.random.default_rng(seed)
    x = x.copy()
    out = layer.forward(x)
    dout = rng.standard_normal(out.shape)
    dx = layer.backward(dout)
    analytic = {"x": dx, **{k: g.copy() for k, g in layer.grads.items()}}
    errors = {"x": relative_error(dx, numerical_gradient(lambda: layer.forward(x), x, dout, h))}
    for name, p in layer.params.items():
        num = numerical_gradient(lambda: layer.forward(x), p, dout, h)
        errors[name] = relative_error(analytic[name], num)
    return errors


def check_loss(loss_fn, logits, labels, h=1e-5):
    """Check dlogits of ``loss_fn(logits, labels) -> (loss, dlogits)``. Returns the relative error."""
    logits = logits.astype(np.float64, copy=True)
    _, dlogits = loss_fn(logits, labels)
    num = numerical_gradient(lambda: loss_fn(logits, labels)[0], logits, 1.0, h)
    return relative_error(dlogits, num)
