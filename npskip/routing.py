"""Beyond the paper: route labels from the network's own behaviour, and a cheap router.

The paper labels about a hundred images by CNN1's strongest activations. Here
every image gets a label from what a routed network actually does with it:

1. CNN3-any: CNN1's architecture, trained with every sample on a fresh random
   route each epoch, so that every route classifies well.
2. Behaviour labels: an image's label is the cheapest route on which CNN3-any
   gives its true class a probability of at least ``confidence``; images that
   reach it nowhere get the full route. Tens of thousands of labels, not ~100.
3. A cheap router: a small SkipCNN on the image average-pooled 2x2, trained on
   those labels. Its multiply-adds (pooling included) count in every figure.
4. A knob: with router probabilities p (N, L) over routes, an image takes the
   cheapest route r whose cumulative probability p[0] + ... + p[r] reaches the
   threshold t. t = 0 sends everything down route 0, t = 1 everything down the
   full route; sweeping t draws accuracy against compute.

The functions here are pure (arrays in, arrays out); the pipeline stages that
train and time them are in ``npskip.extension``.
"""

import numpy as np

from . import kernels
from .checks import check_array
from .losses import softmax
from .train import predict, predict_by_route


def downsample(x, factor=2):
    """Average-pool (N, H, W, C) images by ``factor`` in H and W -> (N, H/f, W/f, C).

    H and W must be multiples of the factor (MNIST 28 and CIFAR 32 are, for 2).
    factor 1 returns x itself (no pooling, no copy).
    """
    check_array(x, "images", ndim=4, dtype="float")
    if factor == 1:
        return x
    n, h, w, c = x.shape
    if h % factor or w % factor:
        raise ValueError(f"downsample: expected H and W divisible by {factor}, received {h}x{w}")
    out = np.empty((n, h // factor, w // factor, c), dtype=x.dtype)
    kernels.avg_pool(np.ascontiguousarray(x), factor, out)   # numba; twin: kernels.avg_pool_naive
    return out


def downsample_flops(input_shape, factor=2):
    """Multiply-adds of downsample per image: one per input value (sum, then scale).

    0 for factor 1, which does not pool.
    """
    h, w, c = input_shape
    return h * w * c if factor > 1 else 0


def random_routes(n, depth, seed, weights=None):
    """(n,) routes drawn from 0..depth-1 by a Generator seeded with ``seed``.

    weights: (depth,) probabilities of the routes (summing to 1); None draws uniformly.
    """
    rng = np.random.default_rng(seed)
    if weights is None:
        return rng.integers(0, depth, size=n)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (depth,) or weights.min() < 0 or abs(weights.sum() - 1) > 1e-9:
        raise ValueError(f"route weights: expected {depth} non-negative probabilities summing "
                         f"to 1, received {weights.tolist()}")
    return rng.choice(depth, size=n, p=weights)


def route_probabilities(model, x, batch_size=256):
    """Class probabilities of ``model`` on x with every image on each route in turn.

    Returns (depth, N, num_classes): entry [r, i] is softmax of image i's logits on route r.
    """
    return np.stack([softmax(predict(model, x, np.full(len(x), r), batch_size))
                     for r in range(model.depth)])


def behaviour_labels(probs, y, confidence):
    """The cheapest route on which each image's true class gets probability >= confidence.

    probs: (depth, N, K) from route_probabilities; y: (N,) true classes.
    Images that reach the confidence on no route are labelled depth-1 (the full
    network is the best we have for them). Returns (N,) int64.
    """
    depth, n, _ = probs.shape
    p_true = probs[:, np.arange(n), np.asarray(y)]          # (depth, N)
    return cheapest(p_true >= confidence)


def cheapest(ok):
    """Index of the first True along axis 0 of a (depth, N) bool array; depth-1 where none is."""
    ok = np.asarray(ok, dtype=bool)
    return np.where(ok.any(axis=0), ok.argmax(axis=0), ok.shape[0] - 1).astype(np.int64)


def threshold_routes(router_probs, threshold):
    """The cheapest route whose cumulative router probability reaches ``threshold``.

    router_probs: (N, depth) softmax outputs of the router. The last route is
    always allowed, and threshold >= 1 sends every image down it (in float32 the
    first routes' probabilities can already sum to 1.0). Returns (N,) int64.
    """
    check_array(router_probs, "router probabilities", ndim=2, dtype="float")
    n, depth = router_probs.shape
    if threshold >= 1:
        return np.full(n, depth - 1, dtype=np.int64)
    cum = np.cumsum(router_probs, axis=1)
    # routes whose cumulative probability is still below t are skipped over
    return np.count_nonzero(cum[:, :-1] < threshold, axis=1).astype(np.int64)


def pick_threshold(val_accuracy, val_flops, reference, tolerance):
    """Index of the cheapest threshold whose validation accuracy is >= reference - tolerance.

    val_accuracy, val_flops: one value per threshold, measured on the validation
    split; reference: CNN1's validation accuracy. Returns None if no threshold
    qualifies. The test set plays no part in the choice.
    """
    ok = [i for i, a in enumerate(val_accuracy) if a >= reference - tolerance]
    return min(ok, key=lambda i: val_flops[i]) if ok else None


def cheap_routed_predict(router, model, x, threshold, factor=2, batch_size=256):
    """Downsample, route with the router and the threshold, run CNN3 sorted by route.

    Returns (logits (N, classes), routes (N,)). This is the whole inference path
    whose wall-clock the curve reports.
    """
    probs = softmax(predict(router, downsample(x, factor), batch_size=batch_size))
    routes = threshold_routes(probs, threshold)
    return predict_by_route(model, x, routes, batch_size), routes
