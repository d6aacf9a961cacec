"""Small-sample honesty: stratified splits, confidence intervals, baselines, confusion matrices.

The paper's router is trained and tested on about a hundred images, so its test
split holds a few dozen or fewer. An accuracy on 15 images means little without
its interval and the accuracy of always guessing the commonest label.
"""

import numpy as np


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
