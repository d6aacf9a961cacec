"""CNN1 with early exits (npskip.exits): the exits taken, the literal cascade, the costs,
and a head training that leaves CNN1 untouched."""

import numpy as np
import pytest

from npskip.exits.heads import ExitCNN, exits_here, exits_taken, train_heads
from npskip.engine.model import SkipCNN


@pytest.fixture(params=[(0, 1), (5, 2)], ids=["linear heads", "pooled hidden heads"])
def model(request):
    cnn1 = SkipCNN((8, 8, 1), 3, (4, 4, 6), seed=1)
    hidden, pool = request.param
    return ExitCNN(cnn1, hidden=hidden, pool=pool, seed=2)


@pytest.fixture
def images(rng):
    return rng.random((40, 8, 8, 1), dtype=np.float32)


def test_exits_taken_by_hand():
    big = 20.0                                   # softmax top probability ~1
    z = np.zeros((3, 4, 2))                      # row k - 1: exit k's logits
    z[0, 0, 0] = big                             # image 0: sure at exit 1
    z[1, 1, 1] = big                             # image 1: sure at exit 2 only
    z[0, 2, 0] = z[1, 2, 1] = 0.5                # image 2: sure nowhere -> exit 3, CNN1
    z[0, 3, 0] = z[1, 3, 0] = big                # image 3: at both: the first wins
    assert exits_taken(z, 0.9).tolist() == [1, 2, 3, 1]
    assert exits_taken(z, 0.0).tolist() == [1, 1, 1, 1]   # t = 0: everything leaves at once
    assert exits_taken(z, 1.0).tolist() == [3, 3, 3, 3]   # t >= 1: CNN1 itself
    assert exits_here(z[1], 0.6).tolist() == [False, True, True, True]


def test_the_cascade_gives_each_image_the_logits_of_its_exit(model, images):
    every = model.exit_logits(images)                             # (3, N, K)
    assert np.array_equal(every[-1], model.cnn1.forward(images))  # the last exit is CNN1
    for t in (0.0, 0.34, 0.4, 0.5, 1.0):
        logits, exits = model.predict(images, t, batch_size=16)
        assert np.array_equal(exits, exits_taken(every, t)), t
        np.testing.assert_allclose(logits, every[exits - 1, np.arange(len(images))], rtol=1e-5,
                                   atol=1e-6)
    assert len(set(exits_taken(every, 0.4).tolist())) > 1   # the thresholds above do mix exits


def test_an_image_that_leaves_never_enters_the_later_layers(model, images):
    seen = {k: 0 for k in (1, 2, 3)}
    for k, conv in enumerate(model.cnn1.convs, 1):
        def counting(x, k=k, forward=conv.forward):
            seen[k] += len(x)
            return forward(x)
        conv.forward = counting
    _, exits = model.predict(images, 0.4, batch_size=16)
    assert seen == {1: 40, 2: int(np.sum(exits >= 2)), 3: int(np.sum(exits == 3))}


def test_multiply_adds_count_the_layers_and_heads_passed(model):
    h = w = 8
    conv = [h * w * 4 * 9 * 1, h * w * 4 * 9 * 4, h * w * 6 * 9 * 4]
    u, p = model.hidden, model.pool
    feats = (h // p) * (w // p) * 4                           # a head on 4 maps of 8x8, pooled
    pooling = h * w * 4 if p > 1 else 0                       # one addition per map value
    one = pooling + (feats * u + u * 3 if u else feats * 3)
    head = [one, one, h * w * 6 * 3]                         # the last: CNN1's dense layer
    assert model.multiply_adds(1) == conv[0] + head[0]
    assert model.multiply_adds(3) == sum(conv) + sum(head)
    assert model.multiply_adds(3) - model.cnn1.multiply_adds()["total"] == head[0] + head[1]
    np.testing.assert_array_equal(model.multiply_adds_per_image(np.array([1, 3])),
                                  [model.multiply_adds(1), model.multiply_adds(3)])
    # at t >= 1 no head runs: every image costs CNN1's own
    assert model.multiply_adds_per_image(np.array([3, 3]), 1.0).tolist() == \
        [model.cnn1.multiply_adds()["total"]] * 2
    for bad in (0, 4):
        with pytest.raises(ValueError, match="1..3"):
            model.multiply_adds_per_image(np.array([bad]))


def test_training_the_heads_leaves_cnn1_untouched(model, images, rng):
    y = rng.integers(0, 3, len(images))
    before = [{k: v.copy() for k, v in layer.params.items()} for layer in model.cnn1.layers]
    logits_before = model.cnn1.forward(images)
    hist = train_heads(model, images, y, epochs=6, batch_size=8, seed=0, val=(images, y),
                       log=lambda m: None)
    for layer, params in zip(model.cnn1.layers, before):
        for k, v in params.items():
            assert np.array_equal(layer.params[k], v)
    assert np.array_equal(model.cnn1.forward(images), logits_before)
    assert len(hist["loss"]) == 6 and len(hist["val_accuracy"]) == 6
    assert all(hist["loss"][-1][k] < hist["loss"][0][k] for k in range(2))   # the heads learn


def test_saved_heads_are_checked_when_loaded(model):
    arrays = {k: v.copy() for k, v in model.arrays().items()}
    other = ExitCNN(model.cnn1, model.hidden, model.pool, seed=9).load_arrays(arrays)
    assert all(np.array_equal(other.arrays()[k], v) for k, v in arrays.items())
    w1, b0, w0 = "exit2.dense1.W", "exit1.dense1.b", "exit1.dense1.W"
    with pytest.raises(ValueError, match="exit2.dense1.W of shape"):
        ExitCNN(model.cnn1, model.hidden, model.pool).load_arrays({**arrays, w1: arrays[w1][:-1]})
    with pytest.raises(ValueError, match="expected exit1.dense1.b"):
        ExitCNN(model.cnn1, model.hidden, model.pool).load_arrays({k: v for k, v in arrays.items() if k != b0})
    other = model.hidden + 3                                     # heads of another shape
    with pytest.raises(ValueError, match=f"{other} hidden units"):
        ExitCNN(model.cnn1, hidden=other, pool=model.pool).load_arrays(arrays)
    bad = {**arrays, w0: arrays[w0].copy()}
    bad[w0][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        ExitCNN(model.cnn1, model.hidden, model.pool).load_arrays(bad)


def test_a_threshold_that_is_not_a_number_is_refused(model, images):
    z = model.exit_logits(images)
    for bad in (float("nan"), -0.5, "0.9", None):
        with pytest.raises(ValueError, match="threshold: expected a number >= 0"):
            exits_taken(z, bad)
        with pytest.raises(ValueError, match="threshold: expected a number >= 0"):
            model.predict(images, bad)
    with pytest.raises(ValueError, match=r"expected \(depth, N, classes\)"):
        exits_taken(z[0], 0.5)


def test_the_heads_alone_give_the_same_logits_without_cnn1s_last_layer(model, images):
    assert np.array_equal(model.head_logits(images, batch_size=16),
                          model.exit_logits(images, batch_size=16)[:-1])


def test_a_head_averages_its_maps_then_runs_its_dense_layers(rng):
    from npskip.exits.heads import ExitHead
    from npskip.engine.reference import avg_pool as avg_pool_naive
    head = ExitHead((8, 8, 4), 3, hidden=5, pool=2, rng=0)
    maps = rng.random((6, 8, 8, 4), dtype=np.float32)
    pooled = avg_pool_naive(maps, 2).reshape(6, -1)                  # (6, 4*4*4)
    (d0, d1) = head.dense
    by_hand = np.maximum(pooled @ d0.params["W"] + d0.params["b"], 0) @ d1.params["W"] \
        + d1.params["b"]
    np.testing.assert_allclose(head.forward(maps), by_hand, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(head.pooled(maps), pooled, rtol=1e-6)
    assert head.in_features == 64 and head.multiply_adds() == 8 * 8 * 4 + 64 * 5 + 5 * 3
    for bad in (3, 0, 2.0):
        with pytest.raises(ValueError, match="pool: expected an integer >= 1 that divides"):
            ExitHead((8, 8, 4), 3, pool=bad)
    with pytest.raises(ValueError, match=r"expected \(N, 8, 8, 4\)"):
        head.pooled(maps[:, :4])


def test_heads_trained_on_kept_maps_equal_heads_trained_on_maps_made_per_batch(images, rng):
    """train_heads computes the pooled maps once; recomputing them for every batch,
    as a network that did not keep them would, gives bit-identical heads."""
    from npskip.engine.losses import softmax_cross_entropy
    from npskip.engine.optim import RMSprop
    y = rng.integers(0, 3, len(images))
    cnn1 = SkipCNN((8, 8, 1), 3, (4, 4, 6), seed=1)
    kept = ExitCNN(cnn1, hidden=5, pool=2, seed=2)
    train_heads(kept, images, y, epochs=3, batch_size=8, seed=4, log=lambda m: None)
    ref = ExitCNN(cnn1, hidden=5, pool=2, seed=2)
    opt = RMSprop()
    for epoch in range(3):
        order = np.random.default_rng([4, epoch]).permutation(len(images))
        for start in range(0, len(images), 8):
            idx = np.sort(order[start:start + 8])
            for head, f in zip(ref.heads, ref.features(images[idx])):
                head.backward(softmax_cross_entropy(head.forward(f), y[idx])[1])
            opt.step([d for head in ref.heads for d in head.dense])
    for k, v in kept.arrays().items():
        assert np.array_equal(v, ref.arrays()[k]), k
