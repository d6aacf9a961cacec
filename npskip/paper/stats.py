"""Small-sample honesty: stratified splits, confidence intervals, baselines, confusion matrices,
and paired differences between two networks judged on the same images.

The paper's router is trained and tested on about a hundred images, so its test
split holds a few dozen or fewer. An accuracy on 15 images means little without
its interval and the accuracy of always guessing the commonest label.
"""

from statistics import NormalDist

import numpy as np
from scipy.stats import beta


def wilson_interval(correct, n, z=1.96):
    """95% Wilson score interval for a proportion correct/n (sound for small n and p near 0 or 1).

    Returns (low, high); (0.0, 1.0) when n == 0.
    """
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return float(max(0.0, centre - half)), float(min(1.0, centre + half))


def accuracy_record(correct, n):
    """{"test_accuracy", "test_count", "ci95"} for `correct` right out of n."""
    return {"test_accuracy": correct / n if n else None, "test_count": int(n),
            "ci95": wilson_interval(int(correct), int(n))}


def confusion_matrix(y_true, y_pred, num_classes):
    """(num_classes, num_classes) counts: row = true label, column = prediction."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def majority_baseline(y_train, y_test):
    """Accuracy on y_test of always predicting the commonest label of y_train."""
    values, counts = np.unique(y_train, return_counts=True)
    return float(np.mean(np.asarray(y_test) == values[np.argmax(counts)]))


def stratified_split(labels, fractions=(0.7, 0.15, 0.15), seed=0):
    """Split positions 0..N-1 into train/validation/test, label by label.

    Each label's members are shuffled and cut by ``fractions`` (rounded); a label
    with at least three members puts at least one in validation and one in test,
    so even a label with a handful of images is tested. A label with fewer than
    three goes to training alone (it cannot be tested honestly).
    Returns three sorted int arrays of positions.
    """
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    parts = ([], [], [])
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n = len(members)
        if n < 3:
            parts[0].extend(members)
            continue
        n_val = max(1, int(round(n * fractions[1])))
        n_test = max(1, int(round(n * fractions[2])))
        parts[2].extend(members[:n_test])
        parts[1].extend(members[n_test:n_test + n_val])
        parts[0].extend(members[n_test + n_val:])
    return tuple(np.sort(np.array(p, dtype=np.int64)) for p in parts)


def normal_quantile(p):
    """z with P(Z <= z) = p for a standard normal Z (e.g. 0.95 -> 1.645)."""
    if not 0 < p < 1:
        raise ValueError(f"normal_quantile: expected 0 < p < 1, received {p}")
    return NormalDist().inv_cdf(p)


def paired_difference(a, b, confidence=0.95):
    """Mean of a - b over the same images, with its standard error and bounds.

    a, b: (N,) one score per image for two networks on the *same* images: booleans
    (right or wrong) or numbers (e.g. the true class's probability). Pairing removes
    the images both get right (or both wrong) from the uncertainty: with 0/1 scores
    only the discordant images (right under one, wrong under the other) vary, so a
    difference of 0.1 points between two networks that disagree on 1% of 6,000 images
    has a standard error of about 0.13 points, not the 0.21 of two separate accuracies.

    Normal approximation on the per-image differences d = a - b:
        se = std(d, ddof=1) / sqrt(N),  low = mean - z se,  high = mean + z se,
    z the one-sided ``confidence`` quantile (1.645 for 0.95): the true mean is above
    ``low`` with that confidence, and below ``high``. Sound when the differences are
    not too few: the discordant counts are returned so a reader can judge.
    Returns {"n", "mean", "se", "low", "high", "confidence"}, plus "a_only" (a right,
    b wrong) and "b_only" counts for boolean scores.
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.ndim != 1 or a.shape != b.shape or len(a) < 2:
        raise ValueError(f"paired_difference: expected two (N,) arrays of the same N >= 2, "
                         f"received shapes {a.shape} and {b.shape}")
    d = a.astype(np.float64) - b.astype(np.float64)
    n = len(d)
    mean, se = float(d.mean()), float(d.std(ddof=1) / np.sqrt(n))
    z = normal_quantile(confidence)
    out = {"n": n, "mean": mean, "se": se, "low": mean - z * se, "high": mean + z * se,
           "confidence": confidence}
    if a.dtype == bool and b.dtype == bool:
        out["a_only"] = int(np.count_nonzero(a & ~b))
        out["b_only"] = int(np.count_nonzero(b & ~a))
    return out


def paired_loss_upper(a_only, b_only, n, confidence=0.95):
    """Exact upper confidence bound of b's lead over a, (b_only - a_only) / n, from the
    images on which the two disagree (an exact McNemar-style bound).

    a_only: images only a gets right; b_only: images only b gets right; n: all images.
    Given the D = a_only + b_only disagreements, b_only is Binomial(D, p), and b's lead
    is D (2p - 1) / n. The one-sided Clopper-Pearson bound p_u on p (the ``confidence``
    quantile of Beta(b_only + 1, D - b_only)) gives lead <= D (2 p_u - 1) / n. Unlike
    the normal approximation of ``paired_difference`` it holds for a handful of
    disagreements: with none the lead is exactly 0; with one image in a's favour the
    normal bound's standard error is as large as the mean itself.
    """
    a_only, b_only, n = int(a_only), int(b_only), int(n)
    if min(a_only, b_only) < 0 or n < a_only + b_only or n < 1:
        raise ValueError(f"paired_loss_upper: expected counts 0 <= a_only + b_only <= n, "
                         f"received {a_only}, {b_only}, {n}")
    d = a_only + b_only
    if d == 0:
        return 0.0
    p_upper = 1.0 if b_only == d else float(beta.ppf(confidence, b_only + 1, d - b_only))
    return d * (2 * p_upper - 1) / n
