"""Beyond the paper: behaviour labels, the threshold knob, the cheap router's
inference path, per-epoch random routes in training, and the report's verdict."""

import numpy as np
import pytest

from npskip.losses import distillation_loss, softmax, softmax_cross_entropy
from npskip.model import SkipCNN
from npskip.optim import RMSprop
from npskip.report_extension import meets_target
from npskip.routing import (behaviour_labels, cheap_routed_predict, cheapest, downsample,
                            downsample_flops, random_routes, route_probabilities,
                            threshold_routes)
from npskip.train import fit


def test_downsample_is_the_mean_of_each_block(rng):
    x = rng.random((3, 6, 4, 2), dtype=np.float32)
    out = downsample(x, 2)
    assert out.shape == (3, 3, 2, 2) and out.dtype == np.float32
    for i in range(3):
        for j in range(2):
            np.testing.assert_allclose(out[:, i, j], x[:, 2 * i:2 * i + 2, 2 * j:2 * j + 2]
                                       .mean(axis=(1, 2)), rtol=1e-6)
    assert downsample_flops((28, 28, 1)) == 784
    with pytest.raises(ValueError, match="divisible by 2"):
        downsample(rng.random((1, 5, 4, 1)), 2)


def test_softmax_rows_sum_to_one_without_overflow():
    p = softmax(np.array([[1000.0, 0.0, -1000.0], [1.0, 1.0, 1.0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], [1.0, 0.0, 0.0])
    np.testing.assert_allclose(p[1], 1 / 3)


def test_behaviour_labels_take_the_cheapest_confident_route():
    # 4 images, 3 routes, 2 classes; the true class is 1 for every image
    p1 = np.array([[0.95, 0.60, 0.20, 0.10],     # route 0
                   [0.97, 0.92, 0.40, 0.30],     # route 1
                   [0.99, 0.99, 0.91, 0.50]])    # route 2
    probs = np.stack([1 - p1, p1], axis=2)
    labels = behaviour_labels(probs, np.ones(4, dtype=np.int64), confidence=0.9)
    assert labels.tolist() == [0, 1, 2, 2]       # the last reaches 0.9 nowhere: full route
    assert behaviour_labels(probs, np.ones(4, dtype=int), 0.5).tolist() == [0, 0, 2, 2]
    assert cheapest(np.array([[0, 1, 0], [1, 1, 0]], bool)).tolist() == [1, 0, 1]


def test_threshold_routes_by_hand_and_at_the_ends(rng):
    p = np.array([[0.5, 0.3, 0.2], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]])
    assert threshold_routes(p, 0.45).tolist() == [0, 2, 1]
    assert threshold_routes(p, 0.75).tolist() == [1, 2, 1]
    assert threshold_routes(p, 0.85).tolist() == [2, 2, 1]
    assert threshold_routes(p, 0.0).tolist() == [0, 0, 0]
    # t = 1 is the full route, even where float32 probabilities of the first routes sum to 1
    q = softmax(rng.normal(size=(500, 3)).astype(np.float32) * 5)
    assert threshold_routes(q, 1.0).tolist() == [2] * 500
    # a higher threshold never sends an image down a cheaper route
    routes = [threshold_routes(q, t) for t in np.linspace(0, 1, 21)]
    assert all(np.all(a <= b) for a, b in zip(routes, routes[1:]))


def test_random_routes_are_reproducible_and_cover_every_route():
    a, b = random_routes(3000, 3, [7, 4, 1]), random_routes(3000, 3, [7, 4, 1])
    assert np.array_equal(a, b) and set(a.tolist()) == {0, 1, 2}
    assert not np.array_equal(a, random_routes(3000, 3, [7, 4, 2]))
    assert abs(np.bincount(a)[0] / 3000 - 1 / 3) < 0.05


def test_fit_draws_routes_per_epoch(rng):
    x = rng.random((30, 6, 6, 1), dtype=np.float32)
    y = rng.integers(0, 2, 30)
    calls = []

    def routes(epoch):
        calls.append(epoch)
        return random_routes(30, 3, [1, epoch])
    model = SkipCNN((6, 6, 1), 2, widths=(10, 10, 12), seed=1)
    fit(model, x, y, routes=routes, epochs=3, batch_size=8, progress=False)
    assert calls == [0, 1, 2]
    # the same as training on those routes epoch by epoch
    other = SkipCNN((6, 6, 1), 2, widths=(10, 10, 12), seed=1)
    hist, opt = None, RMSprop()
    for e in range(3):
        hist = fit(other, x, y, routes=lambda _, e=e: random_routes(30, 3, [1, e]), epochs=e + 1,
                   batch_size=8, history=hist, optimizer=opt, progress=False)
    for a, b in zip(model.layers, other.layers):
        np.testing.assert_array_equal(a.params["W"], b.params["W"])
    with pytest.raises(ValueError, match=r"routes\(0\): expected shape \(30,\)"):
        fit(model, x, y, routes=lambda e: np.zeros(5, dtype=int), epochs=1, progress=False)


def test_fit_with_a_loss_hook(rng):
    # the hook gets each batch's positions: plain cross-entropy through it trains
    # bit for bit like the default, and distillation with weight 0 is the same loss
    x = rng.random((30, 6, 6, 1), dtype=np.float32)
    y = rng.integers(0, 3, 30)
    teacher = rng.standard_normal((30, 3)).astype(np.float32)
    seen = []

    def hook(logits, idx):
        seen.append(np.array(idx))
        return softmax_cross_entropy(logits, y[idx])
    models = [SkipCNN((6, 6, 1), 3, widths=(10, 10, 12), seed=1) for _ in range(3)]
    fit(models[0], x, y, epochs=2, batch_size=8, progress=False)
    fit(models[1], x, y, epochs=2, batch_size=8, progress=False, loss=hook)
    fit(models[2], x, y, epochs=2, batch_size=8, progress=False,
        loss=lambda z, idx: distillation_loss(z, y[idx], teacher[idx], 4.0, 0.0))
    for other in models[1:]:
        for a, b in zip(models[0].layers, other.layers):
            np.testing.assert_array_equal(a.params["W"], b.params["W"])
    assert sorted(np.concatenate(seen[:4]).tolist()) == list(range(30))   # epoch 1: all once


def test_cheap_routed_predict_equals_each_image_on_its_route(rng):
    x = rng.random((37, 8, 6, 1), dtype=np.float32)
    router = SkipCNN((4, 3, 1), 3, widths=(4, 5), seed=1)
    cnn3 = SkipCNN((8, 6, 1), 4, widths=(10, 10, 12), seed=2)
    logits, routes = cheap_routed_predict(router, cnn3, x, threshold=0.6, batch_size=10)
    expected_routes = threshold_routes(softmax(router.forward(downsample(x))), 0.6)
    np.testing.assert_array_equal(routes, expected_routes)
    for i in range(len(x)):
        np.testing.assert_allclose(logits[i], cnn3.forward(x[i:i + 1], routes[i:i + 1])[0],
                                   rtol=1e-5, atol=1e-6)
    # the curve's shortcut: correctness per route, then indexed by the routes, gives the
    # same accuracy as running the routed path
    y = rng.integers(0, 4, len(x))
    right = route_probabilities(cnn3, x).argmax(axis=2) == y
    assert right[routes, np.arange(len(x))].mean() == np.mean(logits.argmax(axis=1) == y)


def test_meets_target():
    assert meets_target(0.987, 0.9855, 0.39, 0.54)
    assert meets_target(0.9878, 0.9858, 0.4, 0.55)        # exactly 0.2 points below, on the limits
    assert not meets_target(0.987, 0.984, 0.3, 0.5)       # 0.3 points below CNN1
    assert not meets_target(0.987, 0.99, 0.41, 0.5)
    assert not meets_target(0.987, 0.99, 0.3, 0.56)


def test_random_routes_with_weights():
    r = random_routes(6000, 3, [3, 4, 0], weights=(0.25, 0.25, 0.5))
    assert np.array_equal(r, random_routes(6000, 3, [3, 4, 0], weights=(0.25, 0.25, 0.5)))
    assert abs(np.mean(r == 2) - 0.5) < 0.03 and abs(np.mean(r == 0) - 0.25) < 0.03
    with pytest.raises(ValueError, match="3 non-negative probabilities summing to 1"):
        random_routes(10, 3, 0, weights=(0.5, 0.5))
    with pytest.raises(ValueError, match="summing to 1"):
        random_routes(10, 3, 0, weights=(0.5, 0.5, 0.5))
