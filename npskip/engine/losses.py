"""Softmax cross-entropy on integer labels (Keras' sparse categorical cross-entropy).

Softmax and cross-entropy are computed together because the fused gradient is
simple, ``(softmax(z) - onehot(y)) / N``, and because the separate softmax
overflows: ``exp(1000.0)`` is inf in float64 and ``exp(89.0)`` in float32.
Subtracting each row's maximum first changes nothing mathematically
(softmax(z) = softmax(z - c)) and keeps every exponent <= 0.
"""

import numpy as np

from npskip.engine.checks import check_array, check_finite


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer labels, and its gradient.

    logits: (N, K) float32 or float64
    labels: (N,) integers in [0, K)
    Returns (loss, dlogits): a Python float, and dL/dlogits of shape (N, K), same dtype.
    Raises FloatingPointError if the logits or the loss are not finite, so that
    training stops at the first NaN instead of carrying on with garbage.
    """
    check_array(logits, "logits", ndim=2, dtype="float")
    labels = np.asarray(labels)
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels: expected shape ({logits.shape[0]},) to match logits "
                         f"{logits.shape}, received {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels: expected integer class indices, received {labels.dtype}")
    n, k = logits.shape
    if n == 0:
        raise ValueError("logits: expected at least one row, received shape (0, K)")
    if labels.min() < 0 or labels.max() >= k:
        raise ValueError(f"labels: expected values in [0, {k}), received values in "
                         f"[{labels.min()}, {labels.max()}]")
    check_finite(logits, "logits")
    shifted = logits - logits.max(axis=1, keepdims=True)   # every row's max becomes 0
    exp = np.exp(shifted)
    sum_exp = exp.sum(axis=1, keepdims=True)
    rows = np.arange(n)
    # -log softmax(z)_y = log(sum_j exp(z_j - m)) - (z_y - m)
    loss = float(np.mean(np.log(sum_exp[:, 0]) - shifted[rows, labels]))
    check_finite(np.asarray(loss), "loss")
    dlogits = exp / sum_exp
    dlogits[rows, labels] -= 1
    dlogits /= n
    return loss, dlogits.astype(logits.dtype, copy=False)


def softmax(logits):
    """Row-wise softmax of (N, K) logits, max-shifted like the loss (no overflow)."""
    check_array(logits, "logits", ndim=2, dtype="float")
    exp = np.exp(logits - logits.max(axis=1, keepdims=True))
    return exp / exp.sum(axis=1, keepdims=True)

