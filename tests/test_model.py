"""SkipCNN: gradients per route, literal skipping, routing equivalence, FLOPs."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from npskip.engine.gradcheck import numerical_gradient, relative_error
from npskip.engine.losses import softmax_cross_entropy
from npskip.engine.model import SkipCNN
from npskip.engine.optim import RMSprop

TOL = 1e-7   # see test_gradients.py


def _small(dtype=np.float64, widths=(2, 3, 4), seed=1):
    return SkipCNN((5, 4, 2), 3, widths=widths, seed=seed, dtype=dtype)


@pytest.mark.parametrize("routes", [[0, 0, 0], [1, 1, 1], [2, 2, 2], [0, 2, 1, 2, 0, 1]])
def test_whole_network_gradients(routes, rng):
    model = _small()
    routes = np.array(routes)
    x = rng.standard_normal((len(routes), 5, 4, 2))
    out = model.forward(x, routes)
    dout = rng.standard_normal(out.shape)
    dx = model.backward(dout, need_dx=True)
    analytic = {(i, k): g.copy() for i, l in enumerate(model.layers) for k, g in l.grads.items()}
    f = lambda: model.forward(x, routes)  # noqa: E731
    assert relative_error(dx, numerical_gradient(f, x, dout)) < TOL
    for i, layer in enumerate(model.layers):
        for k, p in layer.params.items():
            num = numerical_gradient(f, p, dout)
            if i < model.depth and i > max(routes):     # a conv layer no sample reached
                assert not analytic[(i, k)].any() and not num.any()
            else:
                assert relative_error(analytic[(i, k)], num) < TOL, (i, k)


def _count_calls(model, monkeypatch):
    calls = {}
    for k, conv in enumerate(model.convs):
        for method in ("forward", "backward"):
            original = getattr(conv, method)

            def counted(*a, _orig=original, _key=(k, method), **kw):
                calls[_key] = calls.get(_key, 0) + 1
                return _orig(*a, **kw)
            monkeypatch.setattr(conv, method, counted)
    return calls


@pytest.mark.parametrize("routes,skipped", [([0, 0, 0, 0], [1, 2]), ([0, 1, 1, 0], [2])])
def test_skipped_layers_are_never_entered_and_never_move(routes, skipped, rng, monkeypatch):
    model = SkipCNN((6, 6, 1), 4, widths=(10, 12, 14), seed=0)
    opt = RMSprop()
    x = rng.random((4, 6, 6, 1), dtype=np.float32)
    y = np.array([0, 1, 2, 3])
    # One full step first, so every layer has RMSprop state that a wrong step would change.
    _, d = softmax_cross_entropy(model.forward(x), y)
    model.backward(d)
    opt.step(model.ran_layers())
    before = {k: {n: p.copy() for n, p in model.convs[k].params.items()} for k in skipped}
    state = {k: {n: v.copy() for n, v in opt.state_for(model.convs[k]).items()} for k in skipped}

    calls = _count_calls(model, monkeypatch)
    _, d = softmax_cross_entropy(model.forward(x, np.array(routes)), y)
    model.backward(d)
    opt.step(model.ran_layers())

    for k in skipped:
        assert (k, "forward") not in calls and (k, "backward") not in calls
        conv = model.convs[k]
        assert conv.cache is None and conv not in model.ran_layers()
        assert all(not g.any() for g in conv.grads.values())
        for n, p in conv.params.items():
            assert np.array_equal(p, before[k][n])
            assert np.array_equal(opt.state_for(conv)[n], state[k][n])
    for k in set(range(3)) - set(skipped):
        assert calls[(k, "forward")] == 1 and calls[(k, "backward")] == 1


def test_routed_batch_equals_each_sample_alone(rng):
    model = SkipCNN((7, 5, 3), 5, widths=(10, 11, 12), seed=3)
    x = rng.random((9, 7, 5, 3), dtype=np.float32)
    routes = np.array([2, 0, 1, 1, 2, 0, 0, 2, 1])
    batch = model.forward(x, routes)
    for i in range(len(x)):
        alone = model.forward(x[i:i + 1], routes[i:i + 1])
        np.testing.assert_allclose(batch[i], alone[0], rtol=1e-5, atol=1e-6)


def test_route_two_is_the_full_network(rng):
    model = _small(np.float32, widths=(10, 10, 10))
    x = rng.random((3, 5, 4, 2), dtype=np.float32)
    np.testing.assert_array_equal(model.forward(x), model.forward(x, np.full(3, 2)))


def test_short_route_equals_zero_padded_channels_without_multiplying_them(rng):
    model = SkipCNN((4, 4, 1), 2, widths=(10, 10, 16), seed=0, dtype=np.float64)
    x = rng.random((1, 4, 4, 1))
    logits = model.forward(x, np.array([0]))
    a1 = model.activations[0]               # conv1's ReLU output, (1, 4, 4, 10)
    padded = np.zeros((1, 4, 4, 16))
    padded[..., :10] = a1
    np.testing.assert_allclose(logits, padded.reshape(1, -1) @ model.dense.params["W"]
                               + model.dense.params["b"], rtol=1e-12)
    # The weights the padding would meet are never used: their gradient is exactly 0.
    model.backward(np.ones((1, 2)))
    grad_w = model.dense.grads["W"].reshape(16, 16, 2)     # (pixel, channel, class)
    np.testing.assert_allclose(grad_w[:, :10], np.repeat(a1.reshape(16, 10, 1), 2, axis=2))
    assert not grad_w[:, 10:].any()


def test_flops_by_hand():
    model = SkipCNN((5, 4, 2), 3, widths=(10, 12, 14))
    hw = 5 * 4
    conv1, conv2, conv3 = hw * 10 * 9 * 2, hw * 12 * 9 * 10, hw * 14 * 9 * 12
    # The dense layer multiplies only the real channels of the route's last layer.
    dense0, dense1, dense2 = hw * 10 * 3, hw * 12 * 3, hw * 14 * 3
    assert (conv1, conv2, conv3, dense2) == (3600, 21600, 30240, 840)
    assert model.multiply_adds(0) == {"conv1": conv1, "conv2": 0, "conv3": 0, "dense": dense0,
                              "total": conv1 + dense0}
    assert model.multiply_adds(1)["total"] == conv1 + conv2 + dense1
    assert model.multiply_adds() == model.multiply_adds(2)
    assert model.multiply_adds()["total"] == 56280
    with pytest.raises(ValueError, match="0..2"):
        model.multiply_adds(3)


def test_bad_input_and_routes_raise(rng):
    model = SkipCNN((5, 4, 2), 3, widths=(10, 10, 10))
    x = np.zeros((2, 5, 4, 2), np.float32)
    with pytest.raises(ValueError, match=r"expected shape \(N, 5, 4, 2\), received \(2, 4, 5, 2\)"):
        model.forward(np.zeros((2, 4, 5, 2), np.float32))
    with pytest.raises(ValueError, match="expected dtype float32, received float64"):
        model.forward(x.astype(np.float64))
    with pytest.raises(ValueError, match="values in 0..2"):
        model.forward(x, np.array([0, 3]))
    with pytest.raises(ValueError, match=r"shape \(2,\)"):
        model.forward(x, np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="integer"):
        model.forward(x, np.array([0.0, 1.0]))


def test_forward_does_not_modify_inputs(rng):
    model = _small(np.float32, widths=(10, 10, 10))
    x = rng.random((4, 5, 4, 2), dtype=np.float32)
    routes = np.array([2, 0, 1, 0])
    x0, r0 = x.copy(), routes.copy()
    d = rng.standard_normal((4, 3)).astype(np.float32)
    d0 = d.copy()
    model.forward(x, routes)
    model.backward(d)
    assert np.array_equal(x, x0) and np.array_equal(routes, r0) and np.array_equal(d, d0)


def test_multiply_adds_per_image_follows_each_route():
    model = SkipCNN((5, 4, 2), 3, widths=(10, 12, 14))
    np.testing.assert_array_equal(model.multiply_adds_per_image([2, 0, 1, 0]),
                                  [model.multiply_adds(r)["total"] for r in (2, 0, 1, 0)])


def test_multiply_adds_per_image_refuses_routes_out_of_range():
    model = SkipCNN((5, 4, 2), 3, widths=(10, 12, 14))
    for bad in ([-1], [0, 3], [[0, 1]]):          # -1 would wrap to the full route
        with pytest.raises(ValueError, match="routes: expected"):
            model.multiply_adds_per_image(bad)


def test_one_model_from_several_threads():
    # numba's workqueue layer aborts the process (SIGABRT) when two threads enter its
    # parallel kernels at once: run in a child process so an abort fails only this test.
    script = textwrap.dedent("""
        import threading
        import numpy as np
        from npskip.engine.model import SkipCNN
        from npskip.engine.train import predict
        model = SkipCNN((12, 12, 1), 3, (10, 10, 12), seed=0)
        x = np.random.default_rng(0).random((600, 12, 12, 1), dtype=np.float32)
        want = predict(model, x)
        out = [None] * 4
        def go(i):
            for _ in range(5):
                out[i] = predict(model, x, batch_size=64)
        threads = [threading.Thread(target=go, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert all(np.array_equal(o, want) for o in out)
        print("same logits from every thread")
        """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert run.returncode == 0, run.stderr[-2000:]
    assert "same logits from every thread" in run.stdout
