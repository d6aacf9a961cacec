"""Reference solutions for the exercises of notebook 7. Try them yourself first."""

from statistics import NormalDist

import numpy as np


def exits_taken(exit_logits, t):
    """(depth, N, K) logits of every exit -> (N,) the exit each image takes, counted from 1:
    the first exit whose top softmax probability is >= t; depth (CNN1's own dense layer)
    where no head is that sure.

    t >= 1 means no early exit: in float32 a head's top probability can round to
    exactly 1.0, which must not count.
    """
    depth, n, _ = exit_logits.shape
    if t >= 1:
        return np.full(n, depth)
    z = exit_logits[:-1]                                        # the heads, not CNN1
    p = np.exp(z - z.max(axis=2, keepdims=True))                # softmax, max subtracted
    top = (p / p.sum(axis=2, keepdims=True)).max(axis=2)        # (depth - 1, N)
    sure = top >= t
    # argmax finds the first True (row k - 1 is exit k); an image no head is sure of
    # goes to the end
    return np.where(sure.any(axis=0), sure.argmax(axis=0) + 1, depth)


def exit_multiply_adds(input_shape, widths, num_classes, hidden, pool, exit):
    """Multiply-adds of an image that leaves at ``exit`` (1..depth): conv layers 1..exit
    and exits 1..exit, the last exit being CNN1's dense layer. A head averages its maps
    over pool x pool blocks (one addition per map value, counted as a multiply-add when
    pool > 1), then runs its dense layers on the pooled maps."""
    h, w, c_in = input_shape
    total, c = 0, c_in
    for k in range(1, exit + 1):
        total += h * w * widths[k - 1] * 3 * 3 * c        # conv k: 'same' 3x3, stride 1
        c = widths[k - 1]
        if k == len(widths):                               # CNN1's own dense layer
            total += h * w * c * num_classes
            continue
        if pool > 1:
            total += h * w * c                             # the block sums
        features = (h // pool) * (w // pool) * c
        if hidden:                                         # dense -> ReLU -> dense
            total += features * hidden + hidden * num_classes
        else:
            total += features * num_classes
    return total


def loss_upper_bound(cascade_right, cnn1_right, confidence=0.95):
    """One-sided upper bound of CNN1's lead by the normal approximation:
    -mean(d) + z * std(d, ddof=1) / sqrt(N), d = cascade - CNN1 per image, z the
    ``confidence`` quantile of the normal (1.645 for 0.95). ddof=1: the sample standard
    deviation, as the standard error of a mean uses."""
    d = np.asarray(cascade_right, dtype=np.float64) - np.asarray(cnn1_right, dtype=np.float64)
    se = d.std(ddof=1) / np.sqrt(len(d))
    return -d.mean() + NormalDist().inv_cdf(confidence) * se


def exact_loss_upper(a_only, b_only, n, confidence=0.95):
    """Exact one-sided upper bound of CNN1's lead, (b_only - a_only) / n, as a fraction.

    Of the D = a_only + b_only images the two disagree on, CNN1 wins b_only:
    Binomial(D, p). The lead is D (2p - 1) / n. The Clopper-Pearson upper bound p_u on p
    is the ``confidence`` quantile of Beta(b_only + 1, D - b_only): the largest p under
    which as few as b_only wins still has probability at least 1 - confidence.
    """
    from scipy.stats import beta
    d = a_only + b_only
    if d == 0:
        return 0.0                                          # they agree on every image
    p_upper = 1.0 if b_only == d else beta.ppf(confidence, b_only + 1, d - b_only)
    return d * (2 * p_upper - 1) / n
