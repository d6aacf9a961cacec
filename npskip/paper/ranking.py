"""Strongest activations: which images excite each conv layer most (section 3 of the paper).

For each conv layer and each of its first M feature maps (M = 10 in the paper),
every training image gets a score: the mean absolute value of that map's
activation (the ReLU output) over height and width. For each map, the K images
with the highest scores (K = 10) are "strongest"; ties go to the lower image
index, so the ranking is deterministic. An image picked for layer k gets label
k - 1 (0, 1, 2); an image picked for several layers keeps the highest, "since
that convolutional layer was significant in processing the image".

Scores are computed in batches; only the (N, M) score matrix of each layer is
kept, never the activations themselves.
"""

import numpy as np
from tqdm import tqdm


def activation_scores(model, x, maps=10, batch_size=256, progress=False):
    """Mean |activation| over H and W of the first ``maps`` maps of every conv layer.

    model: a SkipCNN; x: (N, H, W, C) images.
    Returns a list, one (N, maps) float64 array per conv layer.
    """
    if maps > min(model.widths):
        raise ValueError(f"maps: the narrowest conv layer has {min(model.widths)} maps, "
                         f"fewer than the {maps} requested")
    scores = [np.empty((len(x), maps)) for _ in model.convs]
    for s in tqdm(range(0, len(x), batch_size), desc="activation scores", disable=not progress):
        model.forward(x[s:s + batch_size])
        for k, a in enumerate(model.activations):   # (B, H, W, C_k): the ReLU output of layer k
            # ReLU output is >= 0, so |a| = a; the abs keeps the paper's definition visible.
            scores[k][s:s + batch_size] = np.abs(a[..., :maps]).mean(axis=(1, 2))
    return scores


def top_images(scores, k=10):
    """For each map (column), the indices of the k highest-scoring images.

    scores: (N, M). Returns (M, k) int array, best first; equal scores rank the
    lower image index first.
    """
    n, m = scores.shape
    if not 1 <= k <= n:
        raise ValueError(f"top images: expected 1 <= k <= {n} images, received k={k}")
    # lexsort sorts by the last key first: score descending, then index ascending.
    index = np.arange(n)
    return np.stack([np.lexsort((index, -scores[:, j]))[:k] for j in range(m)])


def label_images(tops_per_layer):
    """Label every picked image with the highest layer that picked it.

    tops_per_layer: list over layers of (M, K) index arrays (from top_images).
    Returns (indices, labels, picks): the unique picked image indices (sorted),
    their labels (0-based layer), and how many times each was picked in all.
    """
    label, picks = {}, {}
    for layer, tops in enumerate(tops_per_layer):
        for i in tops.ravel().tolist():
            label[i] = max(label.get(i, -1), layer)        # repeats: the higher layer wins
            picks[i] = picks.get(i, 0) + 1
    indices = np.array(sorted(label), dtype=np.int64)
    return (indices, np.array([label[i] for i in indices], dtype=np.int64),
            np.array([picks[i] for i in indices], dtype=np.int64))


def rank(model, x, maps=10, top=10, batch_size=256, progress=False):
    """The whole ranking step: scores, top images per map, labels.

    Returns a dict with "indices", "labels", "picks" (see label_images),
    "tops" (list per layer of (maps, top) arrays) and "scores" (list of (N, maps)).
    """
    scores = activation_scores(model, x, maps, batch_size, progress)
    tops = [top_images(s, top) for s in scores]
    indices, labels, picks = label_images(tops)
    return {"indices": indices, "labels": labels, "picks": picks, "tops": tops, "scores": scores}
