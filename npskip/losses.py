"""Softmax cross-entropy on integer labels (Keras' sparse categorical cross-entropy).

Softmax and cross-entropy are computed together because the fused gradient is
simple, ``(softmax(z) - onehot(y)) / N``, and because the separate softmax
overflows: ``exp(1000.0)`` is inf in float64 and ``exp(89.0)`` in float32.
Subtracting each row's maximum first changes nothing mathematically
(softmax(z) = softmax(z - c)) and keeps every exponent <= 0.
"""

import numpy as np

from .checks import check_array, check_finite


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


def distillation_loss(logits, labels, teacher_logits, temperature, weight):
    """Knowledge distillation (Hinton et al. 2015): cross-entropy on the labels mixed with
    the teacher's softened outputs as targets, and its gradient.

    logits: (N, K) the student's; labels: (N,) integers in [0, K);
    teacher_logits: (N, K) the teacher's on the same images (a constant: no gradient);
    temperature T > 0 softens both distributions, softmax(z / T);
    weight w in [0, 1] mixes the two terms:

        L = (1 - w) * CE(z, y) + w * T**2 * KL(softmax(t / T) || softmax(z / T))

    averaged over the N rows. The T**2 keeps the soft term's gradient on the scale of
    the hard one's as T grows (d/dz of the KL carries a 1/T):

        dL/dz = [(1 - w) * (softmax(z) - onehot(y)) + w * T * (softmax(z / T) - softmax(t / T))] / N

    Soft targets carry what the teacher thinks of the wrong classes (a 4 that looks
    like a 9), which one-hot labels do not. The KL is zero when the student's softened
    outputs match the teacher's, so L = 0 only for a student that is both right and
    the teacher's copy. Returns (loss, dlogits) like softmax_cross_entropy; w = 0 is it.
    """
    check_array(teacher_logits, "teacher logits", ndim=2, dtype="float")
    if teacher_logits.shape != np.shape(logits):
        raise ValueError(f"teacher logits: expected shape {np.shape(logits)} to match the "
                         f"logits, received {teacher_logits.shape}")
    if not temperature > 0:
        raise ValueError(f"temperature: expected a number > 0, received {temperature}")
    if not 0 <= weight <= 1:
        raise ValueError(f"weight: expected a number in [0, 1], received {weight}")
    hard, dhard = softmax_cross_entropy(logits, labels)     # checks logits and labels
    check_finite(teacher_logits, "teacher logits")
    n = logits.shape[0]
    # log-softmax of the softened logits, max-shifted as in the loss above
    log_q = _log_softmax(logits / temperature)               # the student's, (N, K)
    log_p = _log_softmax(teacher_logits.astype(logits.dtype, copy=False) / temperature)
    p = np.exp(log_p)
    kl = float(np.sum(p * (log_p - log_q)) / n)    # log_p is finite, so p = 0 adds exactly 0
    loss = (1 - weight) * hard + weight * temperature ** 2 * kl
    dsoft = temperature * (np.exp(log_q) - p) / n
    dlogits = (1 - weight) * dhard + weight * dsoft
    return float(loss), dlogits.astype(logits.dtype, copy=False)


def _log_softmax(z):
    """Row-wise log softmax of (N, K), shifted by the row max (no overflow, no log 0)."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
