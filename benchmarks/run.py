#!/usr/bin/env python3
"""npskip's speed, measured against peers in the same run on the same machine.

    python benchmarks/run.py                 # every table (a few minutes)
    python benchmarks/run.py --json out.json # ... and the figures as JSON
    python benchmarks/run.py --quick         # tiny repeats: checks the script, not the speed

Tables: training-step and inference throughput of CNN1 (npskip, PyTorch CPU with
the same thread count, plain-NumPy im2col) on MNIST and CIFAR shapes; per-layer
forward and backward; routed inference (CNN2 + CNN3) against CNN1 for several
route mixes beside their multiply-add fraction; peak memory of a training step; numba's
first-call cost with a cold and a warm cache. Every figure is the median of
repeated runs with min and max; ratios are npskip over the peer (above 1: npskip
is faster). Nothing here is asserted: shared machines are noisy.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
from numba import njit, prange

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from npskip.engine import kernels  # noqa: E402
from npskip.engine.losses import softmax_cross_entropy  # noqa: E402
from npskip.engine.model import SkipCNN  # noqa: E402
from npskip.engine.optim import RMSprop  # noqa: E402
from npskip.engine.train import predict, predict_by_route  # noqa: E402
from peers import numpy_cnn, torch_cnn  # noqa: E402

WIDTHS = (16, 16, 32)
BATCH = 128


def timeit(fn, repeats, warmup=2):
    """Seconds per call: {"median", "min", "max", "runs"} over ``repeats`` timed calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return {"median": float(np.median(times)), "min": min(times), "max": max(times),
            "runs": repeats}


def rate(t, images):
    """Images per second (median, min, max) from seconds per call."""
    return {"median": images / t["median"], "min": images / t["max"], "max": images / t["min"]}


def interleaved(fns, repeats, warmup=1):
    """Seconds per call of each of ``fns`` (a dict), timed in turn within each repeat.

    Taking turns puts every function under the same machine conditions (other
    load, clock speed, allocator state), so ratios between them are fair even
    when the absolute times drift. Returns {name: {"median", "min", "max", "runs"}}.
    """
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: {"median": float(np.median(t)), "min": min(t), "max": max(t), "runs": repeats}
            for name, t in times.items()}


def npskip_step(model, opt, x, y):
    def step():
        _, d = softmax_cross_entropy(model.forward(x), y)
        model.backward(d)
        opt.step(model.ran_layers())
    return step


def torch_step(torch, model, opt, x, y):
    loss_fn = torch.nn.functional.cross_entropy

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()
    return step


def bench_network(shape, classes, repeats, torch, infer_batch=256):
    """Training-step and inference throughput of CNN1: npskip, plain NumPy and PyTorch
    taking turns within every repeat (``interleaved``), so that a noisy spell on a
    shared machine lands on all three sides alike."""
    rng = np.random.default_rng(0)
    x = rng.random((BATCH,) + shape, dtype=np.float32)
    xi = rng.random((infer_batch,) + shape, dtype=np.float32)
    y = rng.integers(0, classes, BATCH)
    ours = SkipCNN(shape, classes, WIDTHS)
    plain = numpy_cnn(shape, classes, WIDTHS)
    train = {"npskip": npskip_step(ours, RMSprop(), x, y),
             "numpy": npskip_step(plain, RMSprop(), x, y)}
    infer = {"npskip": lambda: ours.forward(xi), "numpy": lambda: plain.forward(xi)}
    if torch is not None:
        tm, topt = torch_cnn(shape, classes, WIDTHS)
        tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
        txi = torch.from_numpy(xi.transpose(0, 3, 1, 2).copy())
        ty = torch.from_numpy(y)

        def torch_infer():
            with torch.no_grad():
                tm(txi)
        train["torch"] = torch_step(torch, tm, topt, tx, ty)
        infer["torch"] = torch_infer
    t_train = interleaved(train, repeats, warmup=2)
    t_infer = interleaved(infer, repeats, warmup=2)
    return {side: {"train": rate(t_train[side], BATCH), "infer": rate(t_infer[side], infer_batch)}
            for side in train}


def bench_layers(repeats, torch):
    """Forward and backward of each conv layer of CNN1 at batch 128, MNIST shapes,
    the sides taking turns within every repeat."""
    from npskip.engine.layers import Conv2D
    from peers import NumpyConv2D
    rng = np.random.default_rng(0)
    rows = []
    ins = (1,) + WIDTHS[:-1]
    for k, (c_in, c_out) in enumerate(zip(ins, WIDTHS)):
        x = rng.random((BATCH, 28, 28, c_in), dtype=np.float32)
        d = rng.random((BATCH, 28, 28, c_out), dtype=np.float32)
        fns = {}
        for name, layer in (("npskip", Conv2D(c_in, c_out, activation="relu")),
                            ("numpy", NumpyConv2D(c_in, c_out, activation="relu"))):
            layer.forward(x)
            saved = layer.cache              # backward consumes the cache: hand it back each time

            def backward(layer=layer, saved=saved):
                layer.cache = saved
                layer.backward(d)
            fns[f"{name}_forward"] = lambda layer=layer: layer.forward(x)
            fns[f"{name}_backward"] = backward
        if torch is not None:
            conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1)
            tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
            td = torch.from_numpy(d.transpose(0, 3, 1, 2).copy())

            def fwd():
                with torch.no_grad():
                    conv(tx)
            out = conv(tx)
            fns["torch_forward"] = fwd
            fns["torch_backward"] = lambda: out.backward(td, retain_graph=True)
        row = {"layer": f"conv{k + 1} {c_in}->{c_out}"}
        row.update(interleaved(fns, repeats, warmup=2))
        rows.append(row)
    return rows


# --------------------------------------------------------------------------
# where a training step's time goes
# --------------------------------------------------------------------------

class Stopwatch:
    """Seconds spent in named parts, one list per part (one entry per call)."""

    def __init__(self):
        self.times = {}

    def add(self, name, seconds):
        self.times.setdefault(name, []).append(seconds)

    def wrap(self, obj, method, name):
        """Replace obj.method by a timed version (on this instance only)."""
        inner = getattr(obj, method)

        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = inner(*args, **kwargs)
            self.add(name, time.perf_counter() - start)
            return out
        setattr(obj, method, timed)


def npskip_breakdown_step(shape, classes, watch, n_data=1024):
    """One training step of CNN1 as ``train.train_epoch`` runs it, each part timed.

    Parts: batch gathering (sorting the batch's indices, fancy-indexing images and
    labels), each conv layer's forward and backward (ReLU fused), the dense layer's
    forward and backward, the loss, the optimizer; "step" is the whole, so the
    rest (route sorting, copies, accuracy, Python) is the step minus the parts.
    """
    rng = np.random.default_rng(0)
    data = rng.random((n_data,) + shape, dtype=np.float32)
    labels = rng.integers(0, classes, n_data)
    model, opt = SkipCNN(shape, classes, WIDTHS), RMSprop()
    for k, conv in enumerate(model.convs):
        watch.wrap(conv, "forward", f"conv{k + 1} forward")
        watch.wrap(conv, "backward", f"conv{k + 1} backward")
    watch.wrap(model, "_dense_forward", "dense forward")
    watch.wrap(model, "_dense_backward", "dense backward")
    state = {"at": 0, "order": rng.permutation(n_data)}

    def step():
        t0 = time.perf_counter()
        if state["at"] + BATCH > n_data:
            state["at"], state["order"] = 0, rng.permutation(n_data)
        idx = np.sort(state["order"][state["at"]:state["at"] + BATCH])
        state["at"] += BATCH
        xb, yb = data[idx], labels[idx]
        t1 = time.perf_counter()
        logits = model.forward(xb)
        t2 = time.perf_counter()
        _, dlogits = softmax_cross_entropy(logits, yb)
        t3 = time.perf_counter()
        model.backward(dlogits)
        t4 = time.perf_counter()
        opt.step(model.ran_layers())
        t5 = time.perf_counter()
        int(np.count_nonzero(logits.argmax(axis=1) == yb))
        t6 = time.perf_counter()
        watch.add("batch gathering", t1 - t0)
        watch.add("loss", t3 - t2)
        watch.add("optimizer", t5 - t4)
        watch.add("step", t6 - t0)
    return step


def torch_breakdown_step(torch, shape, classes, watch, n_data=1024):
    """PyTorch's CNN1 step, parts timed with the clock (CPU ops run synchronously):
    batch gathering, each conv+ReLU forward and the dense forward (module hooks),
    the loss, the whole backward (autograd runs it as one call), the optimizer."""
    rng = np.random.default_rng(0)
    data = torch.from_numpy(rng.random((n_data,) + shape, dtype=np.float32)
                            .transpose(0, 3, 1, 2).copy())
    labels = torch.from_numpy(rng.integers(0, classes, n_data))
    model, opt = torch_cnn(shape, classes, WIDTHS)
    mods = list(model)
    starts = {}
    # conv k's forward runs from its Conv2d's start to its ReLU's end; dense is Flatten+Linear.
    groups = [(mods[2 * k], mods[2 * k + 1], f"conv{k + 1} forward") for k in range(len(WIDTHS))]
    groups.append((mods[-2], mods[-1], "dense forward"))
    for first, last, name in groups:
        first.register_forward_pre_hook(lambda m, a, name=name: starts.__setitem__(
            name, time.perf_counter()))
        last.register_forward_hook(lambda m, a, o, name=name: watch.add(
            name, time.perf_counter() - starts[name]))
    state = {"at": 0, "order": rng.permutation(n_data)}
    loss_fn = torch.nn.functional.cross_entropy

    def step():
        t0 = time.perf_counter()
        if state["at"] + BATCH > n_data:
            state["at"], state["order"] = 0, rng.permutation(n_data)
        idx = torch.from_numpy(np.sort(state["order"][state["at"]:state["at"] + BATCH]))
        state["at"] += BATCH
        xb, yb = data[idx], labels[idx]
        t1 = time.perf_counter()
        logits = model(xb)
        t2 = time.perf_counter()
        loss = loss_fn(logits, yb)
        t3 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        t4 = time.perf_counter()
        opt.step()
        t5 = time.perf_counter()
        int((logits.argmax(dim=1) == yb).sum())
        t6 = time.perf_counter()
        watch.add("batch gathering", t1 - t0)
        watch.add("loss", t3 - t2)
        watch.add("backward (all layers)", t4 - t3)
        watch.add("optimizer", t5 - t4)
        watch.add("step", t6 - t0)
    return step


@njit(parallel=True)
def _conv_products(n, cols, wmat, g, out, dw, dcols, need_dx):
    """Only the BLAS products of one conv layer's training step, image by image as in
    ``kernels.conv_forward``/``conv_backward``: out = cols @ W, dW_image = cols.T @ g and
    dcols = g @ W.T, on per-thread buffers that are already filled."""
    threads = cols.shape[0]
    for t in prange(threads):
        for b in range(t, n, threads):
            np.dot(cols[t], wmat, out[t])
            np.dot(cols[t].T, g[t], dw[t])
            if need_dx:
                np.dot(g[t], wmat.T, dcols[t])


def products_floor_step(shape, classes):
    """A training step of CNN1 reduced to its matrix products: the floor of the im2col
    design, whatever the copies around the products cost.

    Per conv layer (im2col shapes, P = Ho*Wo rows, K = kh*kw*C_in): the forward product,
    dW's and (except conv1) dx's, for all BATCH images, shared between numba's
    threads as the kernels share them; then the dense layer's three products as
    ``layers.Dense`` computes them. Nothing else: no im2col, col2im, ReLU, loss,
    optimizer or Python between the layers.
    """
    rng = np.random.default_rng(0)
    model = SkipCNN(shape, classes, WIDTHS)
    threads = kernels.thread_count(BATCH)
    layers, (h, w) = [], shape[:2]
    for k, conv in enumerate(model.convs):
        ho, wo, _ = conv.output_shape(h, w)
        kk, c = int(np.prod(conv.kernel_size)) * conv.in_channels, conv.out_channels
        layers.append((rng.random((threads, ho * wo, kk), dtype=np.float32),
                       rng.random((kk, c), dtype=np.float32),
                       rng.random((threads, ho * wo, c), dtype=np.float32),
                       np.empty((threads, ho * wo, c), np.float32),
                       np.empty((threads, kk, c), np.float32),
                       np.empty((threads, ho * wo, kk), np.float32), k > 0))
        h, w = ho, wo
    feats = rng.random((BATCH, model.dense.in_features), dtype=np.float32)
    dlogits = rng.random((BATCH, classes), dtype=np.float32)

    def step():
        with kernels.one_blas_thread:
            for lay in layers:
                _conv_products(BATCH, *lay)
            kernels.dot_rows(feats, model.dense.params["W"])
            kernels.dot_tn_rows(feats, dlogits)
            kernels.dot_rows(dlogits, model.dense.params["W"].T)
    return step


BREAKDOWN_ROWS = ["batch gathering", "conv1 forward", "conv2 forward", "conv3 forward",
                  "dense forward", "loss", "dense backward", "conv3 backward", "conv2 backward",
                  "conv1 backward", "backward (all layers)", "optimizer"]


def bench_breakdown(shape, classes, repeats, torch, peak):
    """Median ms and share of the step for every part, npskip and PyTorch taking turns.

    Also the step's multiply-adds as a fraction of the machine's sgemm peak:
    a step is about 3 forward passes of multiply-adds (forward, dW, dx), 2 FLOPs each;
    and the step's matrix products alone (``products_floor_step``), timed in the same
    turns: no im2col design can train faster than its products.
    """
    watches = {"npskip": Stopwatch()}
    steps = {"npskip": npskip_breakdown_step(shape, classes, watches["npskip"])}
    if torch is not None:
        watches["torch"] = Stopwatch()
        steps["torch"] = torch_breakdown_step(torch, shape, classes, watches["torch"])
    floor, floor_times = products_floor_step(shape, classes), []
    for fn in list(steps.values()) + [floor]:      # warm-up, then forget its times
        fn()
        fn()
    for w in watches.values():
        w.times.clear()
    for _ in range(repeats):
        for fn in steps.values():
            fn()
        start = time.perf_counter()
        floor()
        floor_times.append(time.perf_counter() - start)
    flops = 3 * 2 * SkipCNN(shape, classes, WIDTHS).multiply_adds()["total"] * BATCH
    out = {"step_flops": flops, "products_floor_ms": 1e3 * float(np.median(floor_times)),
           "products_floor_ms_range": [1e3 * min(floor_times), 1e3 * max(floor_times)]}
    for side, w in watches.items():
        # Every part runs once per step, so "the rest" is taken step by step (the
        # step minus its parts) before its median: medians do not add up.
        names = [k for k in BREAKDOWN_ROWS if k in w.times]
        w.times["the rest"] = list(np.array(w.times["step"])
                                   - np.sum([w.times[k] for k in names], axis=0))
        med = {k: float(np.median(v)) for k, v in w.times.items()}
        step = med.pop("step")
        parts = {k: {"ms": 1e3 * med[k], "share": med[k] / step} for k in names + ["the rest"]}
        out[side] = {"step_ms": 1e3 * step,
                     "step_ms_range": [1e3 * min(w.times["step"]), 1e3 * max(w.times["step"])],
                     "parts": parts, "gflops": flops / step / 1e9,
                     "peak_fraction": {f"{t}_threads": flops / step / 1e9 / peak[t]["gflops"]
                                       for t in peak}}
    return out


def sgemm_peak(threads, size=2048, repeats=5):
    """The machine's float32 matrix-product speed: a (size x size) @ (size x size) product
    through NumPy's BLAS at ``threads`` threads, best of ``repeats`` (GFLOP/s, 2 per multiply-add)."""
    from threadpoolctl import threadpool_limits
    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    c = np.empty((size, size), dtype=np.float32)
    with threadpool_limits(limits=threads, user_api="blas"):
        np.dot(a, b, out=c)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            np.dot(a, b, out=c)
            times.append(time.perf_counter() - start)
    flops = 2.0 * size ** 3
    return {"gflops": flops / min(times) / 1e9, "gflops_median": flops / float(np.median(times)) / 1e9,
            "size": size, "runs": repeats}


def cnn2_mix(path):
    """CNN2's MNIST test route counts from a reproduce run, if one is there."""
    try:
        return json.loads(Path(path).read_text())["cnn3_deploy"]["route_counts"], str(path)
    except (OSError, KeyError, ValueError):
        return None, None


def bench_routed(repeats, mix_from, n=2048):
    """CNN2 + routed CNN3 against CNN1 on n MNIST-shaped images, for several route mixes.
    Each mix is timed interleaved with CNN1, and its fractions are ratios of medians."""
    rng = np.random.default_rng(0)
    x = rng.random((n, 28, 28, 1), dtype=np.float32)
    cnn1 = SkipCNN((28, 28, 1), 10, WIDTHS, seed=0)
    cnn3 = SkipCNN((28, 28, 1), 10, WIDTHS, seed=1)
    cnn2 = SkipCNN((28, 28, 1), 3, WIDTHS, seed=2)
    mixes = {"all route 0": [1, 0, 0], "all route 2": [0, 0, 1], "thirds": [1, 1, 1],
             "route 1 only": [0, 1, 0]}
    counts, source = cnn2_mix(mix_from)
    if counts:
        mixes[f"CNN2's MNIST mix {[round(c) for c in counts]}"] = counts
    full = cnn1.multiply_adds()["total"]
    rows, cnn1_times = [], []
    for name, weights in mixes.items():
        p = np.array(weights, dtype=np.float64) / sum(weights)
        routes = np.repeat(np.arange(3), np.round(p * n).astype(int))[:n]
        routes = np.concatenate([routes, np.full(n - len(routes), 2)])
        rng.shuffle(routes)

        def routed():
            predict(cnn2, x).argmax(axis=1)          # the router's work only
            predict_by_route(cnn3, x, routes)

        t = interleaved({"CNN1": lambda: predict(cnn1, x), "CNN2 + CNN3": routed,
                         "CNN3 alone": lambda: predict_by_route(cnn3, x, routes)}, repeats)
        cnn1_times.append(t["CNN1"])
        cnn3_madds = cnn3.multiply_adds_per_image(routes).mean()
        rows.append({
            "mix": name, "route_fractions": p.tolist(),
            "multiply_add_fraction": (cnn3_madds + cnn2.multiply_adds()["total"]) / full,
            "wall_fraction": t["CNN2 + CNN3"]["median"] / t["CNN1"]["median"],
            "multiply_add_fraction_cnn3_only": cnn3_madds / full,
            "wall_fraction_cnn3_only": t["CNN3 alone"]["median"] / t["CNN1"]["median"],
            "seconds": t,
        })
    return {"images": n, "cnn1_seconds": cnn1_times, "mix_source": source, "mixes": rows}


def peak_memory_of_step():
    """Peak bytes NumPy allocates in one training step of a fresh CNN1 (tracemalloc)."""
    rng = np.random.default_rng(0)
    model = SkipCNN((28, 28, 1), 10, WIDTHS)
    x = rng.random((BATCH, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, BATCH)
    step = npskip_step(model, RMSprop(), x, y)
    tracemalloc.start()
    step()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


FIRST_STEP = """
import time, numpy as np
from npskip.engine.losses import softmax_cross_entropy
from npskip.engine.model import SkipCNN
from npskip.engine.optim import RMSprop
rng = np.random.default_rng(0)
x = rng.random((128, 28, 28, 1), dtype=np.float32); y = rng.integers(0, 10, 128)
m, opt = SkipCNN((28, 28, 1), 10), RMSprop()
times = []
for _ in range(2):
    t = time.perf_counter()
    _, d = softmax_cross_entropy(m.forward(x), y); m.backward(d); opt.step(m.ran_layers())
    times.append(time.perf_counter() - t)
print(times[0], times[1])
"""


def first_call_cost():
    """Extra seconds of the first training step over the second, cold and warm numba cache."""
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, "NUMBA_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        for label in ("cold", "warm"):
            run = subprocess.run([sys.executable, "-c", FIRST_STEP], env=env, capture_output=True,
                                 text=True, check=True)
            first, second = map(float, run.stdout.split())
            out[label] = {"first_step": first, "second_step": second, "extra": first - second}
    return out


def machine():
    from threadpoolctl import threadpool_info
    import numba
    blas = [{k: i.get(k) for k in ("internal_api", "num_threads", "architecture", "version")}
            for i in threadpool_info() if i["user_api"] == "blas"]
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "numpy": np.__version__,
            "numba": numba.__version__, "numba_threading_layer": numba.config.THREADING_LAYER,
            "numba_threads": numba.get_num_threads(),
            "blas": blas, "OPENBLAS_CORETYPE": os.environ.get("OPENBLAS_CORETYPE")}


def fmt(r):
    return f"{r['median']:8.0f} [{r['min']:.0f}-{r['max']:.0f}]"


SECTIONS = ("network", "breakdown", "layers", "routed", "memory")


def print_breakdown(label, shape, b):
    sides = [side for side in ("npskip", "torch") if side in b]
    print(f"\none training step, {label} shapes {shape}, batch {BATCH}: ms (share of the step)")
    print("  " + f"{'part':24s}" + "".join(f"{side:>20s}" for side in sides))
    for part in BREAKDOWN_ROWS + ["the rest"]:
        cells = [f"{b[s]['parts'][part]['ms']:9.1f} ({100 * b[s]['parts'][part]['share']:4.1f}%)"
                 if part in b[s]["parts"] else f"{'-':>17s}" for s in sides]
        if any(part in b[s]["parts"] for s in sides):
            print(f"  {part:24s}" + "".join(f"{c:>20s}" for c in cells))
    print(f"  {'whole step':24s}" + "".join(f"{b[s]['step_ms']:9.1f}{'':11s}" for s in sides))
    floor = b["products_floor_ms"]
    print(f"  {'matrix products alone':24s}{floor:9.1f}" + "".join(
        f"   = {floor / b[s]['step_ms']:.2f} of {s}'s step" for s in sides)
        + "  (npskip's BLAS products only, timed in turn with the steps: the im2col design's floor)")
    for s in sides:
        fr = b[s]["peak_fraction"]
        print(f"  {s}: {b[s]['gflops']:.1f} GFLOP/s on the step = "
              + ", ".join(f"{v:.2f} of the {k.replace('_', ' ')} sgemm peak" for k, v in fr.items()))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--routed-repeats", type=int, default=9,
                        help="repeats of the routed-inference table (2048 images each)")
    parser.add_argument("--quick", action="store_true", help="2 repeats, small routed set")
    parser.add_argument("--json", default=None, help="also write every figure to this file")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run, of {', '.join(SECTIONS)}")
    parser.add_argument("--mix-from", default=str(ROOT / "runs" / "reproduce-mnist" / "results.json"),
                        help="results.json of a reproduce run, for CNN2's route mix")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    if not only <= set(SECTIONS):
        parser.error(f"--only: expected some of {', '.join(SECTIONS)}, received {args.only}")
    repeats = 2 if args.quick else args.repeats
    try:
        import torch
        from threadpoolctl import threadpool_info
        blas_threads = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
        torch.set_num_threads(blas_threads)
    except ImportError:
        torch = None
        print("PyTorch not installed: its columns are left out (pip install torch==2.13.0)")

    info = machine()
    if torch is not None:
        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    print(f"machine: {info['cpu_count']} CPUs, BLAS {info['blas']}, numba {info['numba_threads']} "
          f"threads, torch threads {info.get('torch_threads')}")
    figures = {"machine": info, "repeats": repeats, "batch": BATCH, "widths": list(WIDTHS)}
    peak = {t: sgemm_peak(t, size=512 if args.quick else 2048) for t in (1, 2)}
    figures["sgemm_peak"] = peak
    print("float32 matrix-product peak (2048x2048 sgemm, NumPy's BLAS, best of 5): "
          + ", ".join(f"{t} thread(s) {p['gflops']:.0f} GFLOP/s" for t, p in peak.items()))
    shapes = (("mnist", (28, 28, 1), 10), ("cifar", (32, 32, 3), 100))

    if "network" in only:
        print(f"\nCNN1 {WIDTHS}, images/s: median [min-max] of {repeats} runs, the sides taking "
              f"turns; training batch {BATCH}, inference batch 256")
        for label, shape, classes in shapes:
            rows = bench_network(shape, classes, repeats, torch)
            figures[f"network_{label}"] = rows
            print(f"  {label} {shape}:")
            for impl, r in rows.items():
                print(f"    {impl:7s} train {fmt(r['train'])}   infer {fmt(r['infer'])}")
            if torch is not None:
                tr = rows["npskip"]["train"]["median"] / rows["torch"]["train"]["median"]
                inf = rows["npskip"]["infer"]["median"] / rows["torch"]["infer"]["median"]
                print(f"    npskip / torch: train {tr:.2f}x, infer {inf:.2f}x; npskip / numpy: "
                      f"train {rows['npskip']['train']['median'] / rows['numpy']['train']['median']:.2f}x")
                figures[f"{label}_train_ratio_vs_torch"] = tr
                figures[f"{label}_infer_ratio_vs_torch"] = inf
                if label == "mnist":
                    figures["train_ratio_vs_torch"], figures["infer_ratio_vs_torch"] = tr, inf

    if "breakdown" in only:
        for label, shape, classes in shapes:
            b = bench_breakdown(shape, classes, repeats, torch, peak)
            figures[f"breakdown_{label}"] = b
            print_breakdown(label, shape, b)

    if "layers" in only:
        print(f"\nper conv layer alone, batch {BATCH}, MNIST shapes, ReLU fused (PyTorch's "
              f"without ReLU), ms (median):")
        layers = bench_layers(repeats, torch)
        figures["layers"] = layers
        for row in layers:
            cells = [f"{impl} fwd {1e3 * row[f'{impl}_forward']['median']:6.1f} bwd "
                     f"{1e3 * row[f'{impl}_backward']['median']:6.1f}"
                     for impl in ("npskip", "numpy", "torch") if f"{impl}_forward" in row]
            print(f"  {row['layer']:14s} " + " | ".join(cells))

    if "routed" in only:
        routed = bench_routed(args.routed_repeats if not args.quick else 1, args.mix_from,
                              n=512 if args.quick else 2048)
        figures["routed"] = routed["mixes"]
        figures["routed_details"] = routed
        print(f"\nrouted inference on {routed['images']} images (CNN2 + CNN3, sorted by route) "
              f"vs CNN1, timed in turn; fractions of CNN1's multiply-adds and median wall-clock:")
        for row in routed["mixes"]:
            print(f"  {row['mix']:34s} multiply-adds {row['multiply_add_fraction']:.3f}  "
                  f"wall {row['wall_fraction']:.3f}   (CNN3 alone: multiply-adds "
                  f"{row['multiply_add_fraction_cnn3_only']:.3f}, wall "
                  f"{row['wall_fraction_cnn3_only']:.3f})")

    if "memory" in only:
        peak_bytes = peak_memory_of_step()
        figures["peak_step_bytes"] = peak_bytes
        print(f"\npeak NumPy memory of one training step at batch {BATCH}: "
              f"{peak_bytes / 2**20:.0f} MiB")
        first = first_call_cost()
        figures["first_call"] = first
        print(f"first training step minus second: cold numba cache {first['cold']['extra']:.2f} s, "
              f"warm cache {first['warm']['extra']:.2f} s")

    import numba
    info["numba_threading_layer_used"] = numba.threading_layer()
    print(f"\nnumba threading layer used: {info['numba_threading_layer_used']}")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
