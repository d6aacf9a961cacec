"""Beyond the paper: CNN1 decides its own route, with early exits.

The paper routes an image before it enters the network (CNN2 guesses a route
from the pixels). Here the network routes itself on the way through. CNN1 is
kept exactly as trained, and a small "exit head" is added after every conv layer
but the last, reading that layer's ReLU output: it averages the maps over 2x2
blocks, then runs a dense layer of 64 units, ReLU, and a dense layer to the classes.

    conv1 -> head 0 -> confident? stop : conv2 -> head 1 -> confident? stop : conv3 -> dense

An image stops at the first head whose top softmax probability reaches the
threshold t, and never enters the conv layers after it (literal skipping, as in
CNN3). t >= 1 means no early exit: every image runs CNN1 itself. Three things
follow from this design, and are why it is the extension's default:

* The last route *is* CNN1, so the cascade can lose accuracy against CNN1 only on
  images that leave early with a head wrong where CNN1 is right (it can also gain,
  where a head is right and CNN1 wrong), and a confident head agrees with CNN1 on
  nearly all of them.
  Judged image by image against CNN1 on the validation split (npskip.selection),
  the routed network and CNN1 then disagree on few images, and 6,000 images can
  show that a threshold's loss, with room for the test set's own noise, stays within
  0.2 points.
* There is no router to run: the decision costs one head per exit passed,
  under 4% of CNN1's multiply-adds on MNIST, and no second network.
* Training is cheap: CNN1's weights are frozen, so only the heads learn (each a
  small classifier on a fixed feature map). CNN1's conv layers run once over the
  training images, and the heads' pooled inputs are kept for every epoch.

Measured on seed 0 of MNIST and of Fashion-MNIST (the run folders of ``npskip
reproduce``, 10 epochs for the heads), the rule of npskip.selection choosing:

    heads                                MNIST: exit 0 alone, rule's choice   Fashion-MNIST
    one dense layer on the full maps     96.9%, t = 0.9995 at 0.38 MACs      -
    32 hidden units, full maps           96.8%, t = 0.995 at 0.23 MACs       88.2%, t = 0.99 at 0.58
    64 hidden units, 2x2-averaged maps   98.1%, t = 0.95 at 0.10 MACs        88.7%, t = 0.8 at 0.22

(MACs: multiply-adds against CNN1's, heads included.) The hidden layer let the
heads' confidence tell right from wrong better; averaging 2x2 blocks gave the dense
layer a quarter of the inputs, and the heads were both more accurate and surer where
they were right. With 4x4 blocks the heads were weaker again (Fashion-MNIST seed 0,
trial runs of both: exit 1 alone 88.2% against 89.6% with 2x2). Training the heads on
CNN1's own soft outputs instead of the labels (distillation, a trial run on
Fashion-MNIST seed 0, 32 hidden units) changed nothing that mattered: the rule chose
the same t = 0.99 at 0.59 of the multiply-adds.

Numbering: head k reads conv layer k+1 (head 0 reads conv1). Exit r costs conv
layers 1..r+1 and heads 0..r, the last exit's "head" being CNN1's own dense layer:
see ``ExitCNN.flops``. On MNIST a head holds 201,418 parameters (0.78 of CNN1's
258,010) and costs 213,888 multiply-adds (0.037 of CNN1's), the averaging's 12,544
additions included.
"""

import time

import numpy as np

from . import kernels
from .checks import check_array, check_finite
from .layers import Dense, ReLU
from .losses import softmax, softmax_cross_entropy
from .model import _ONE_PASS_AT_A_TIME
from .optim import RMSprop
from .train import predict

# Thresholds swept by the curve: the interesting ones are near 1, where an image
# leaves early only when its head is all but certain.
EXIT_THRESHOLDS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9998,
                   0.9999, 1.0)


class ExitHead:
    """One exit: average the maps over ``pool`` x ``pool`` blocks, flatten, then
    Dense -> logits, or with ``hidden`` units Dense -> ReLU -> Dense -> logits.

    maps_shape: (H, W, C) of the conv layer it reads, H and W multiples of pool;
    in_features = (H/pool) * (W/pool) * C (pool 1: no pooling, H*W*C).
    Why pool: the dense layer on a 2x2-averaged map has a quarter of the weights and
    multiply-adds, and it classified better (measured: see the module docstring).
    """

    def __init__(self, maps_shape, classes, hidden=0, pool=1, rng=0, dtype=np.float32):
        h, w, c = (int(v) for v in maps_shape)
        if not isinstance(pool, (int, np.integer)) or pool < 1 or h % pool or w % pool:
            raise ValueError(f"pool: expected an integer >= 1 that divides the {h}x{w} maps, "
                             f"received {pool!r}")
        self.maps_shape, self.pool = (h, w, c), int(pool)
        self.in_features = (h // pool) * (w // pool) * c
        rng = np.random.default_rng(rng)
        self.layers = ([Dense(self.in_features, hidden, rng=rng, dtype=dtype), ReLU(),
                        Dense(hidden, classes, rng=rng, dtype=dtype)] if hidden else
                       [Dense(self.in_features, classes, rng=rng, dtype=dtype)])
        self.dense = [layer for layer in self.layers if isinstance(layer, Dense)]

    def pooled(self, maps):
        """(N, H, W, C) maps -> (N, in_features): their block averages, flattened."""
        check_array(maps, "exit head maps", ndim=4, dtype=self.dense[0].dtype)
        if maps.shape[1:] != self.maps_shape:
            raise ValueError(f"exit head maps: expected (N, {', '.join(map(str, self.maps_shape))}), "
                             f"received {maps.shape}")
        n, h, w, c = maps.shape
        if self.pool == 1:
            return maps.reshape(n, -1)
        out = np.empty((n, h // self.pool, w // self.pool, c), dtype=maps.dtype)
        kernels.avg_pool(np.ascontiguousarray(maps), self.pool, out)
        return out.reshape(n, -1)

    def forward(self, maps):
        """(N, H, W, C) maps, or (N, in_features) already pooled -> logits (N, classes)."""
        h = maps if maps.ndim == 2 else self.pooled(maps)
        for layer in self.layers:
            h = layer.forward(h)
        return h

    def backward(self, dlogits):
        """Fills the dense layers' grads (the maps' gradient is not needed: CNN1 is frozen)."""
        for layer in reversed(self.layers):
            dlogits = layer.backward(dlogits)

    def forget(self):
        """Drop what forward kept for backward (inference)."""
        for layer in self.layers:
            layer.cache = None

    def flops(self):
        """Multiply-adds per image: in*out of each dense layer, and with pooling one
        addition per map value (H*W*C), counted as a multiply-add."""
        pooling = int(np.prod(self.maps_shape)) if self.pool > 1 else 0
        return pooling + sum(d.in_features * d.out_features for d in self.dense)


class ExitCNN:
    """A trained CNN1 (a SkipCNN, not modified) with an exit head after each conv layer
    but the last.

    cnn1: the trained network; hidden: units of each head's hidden layer (0: a head
    is one dense layer; 64 is the pipeline's default, Config.exit_hidden); pool: each
    head averages its maps over pool x pool blocks first (1: none; 2 is the default,
    Config.exit_pool); seed: seeds the heads' Glorot-uniform weights.
    head k reads conv layer k+1's ReLU output (N, H, W, widths[k]).
    """

    def __init__(self, cnn1, hidden=64, pool=2, seed=0):
        self.cnn1, self.hidden, self.pool = cnn1, int(hidden), int(pool)
        rng = np.random.default_rng(seed)
        h, w, _ = cnn1.input_shape
        self.heads = []
        for conv in cnn1.convs[:-1]:
            h, w, c = conv.output_shape(h, w)
            self.heads.append(ExitHead((h, w, c), cnn1.num_classes, self.hidden, self.pool,
                                       rng, cnn1.dtype))

    @property
    def depth(self):
        return self.cnn1.depth

    @property
    def num_classes(self):
        return self.cnn1.num_classes

    # -- saving: the heads' weights as plain arrays (CNN1 has its own file) ----------
    def arrays(self):
        """{"head0.dense0.W": ..., "head0.dense0.b": ..., ...}: every head's parameters."""
        return {f"head{k}.dense{j}.{name}": value
                for k, head in enumerate(self.heads) for j, d in enumerate(head.dense)
                for name, value in d.params.items()}

    def load_arrays(self, arrays, source="exit heads"):
        """Set the heads' parameters from ``arrays`` (as ``arrays()`` gives), checked."""
        for key, want in self.arrays().items():
            got = arrays.get(key)
            if got is None or got.shape != want.shape or got.dtype != want.dtype:
                raise ValueError(f"{source}: expected {key} of shape {want.shape} and dtype "
                                 f"{want.dtype} (heads with {self.hidden} hidden units and "
                                 f"{self.pool}x{self.pool} pooling on {self.cnn1}), received "
                                 f"{None if got is None else (got.dtype, got.shape)}")
            if not np.all(np.isfinite(got)):
                raise ValueError(f"{source}: {key} holds NaN or infinite values")
            want[...] = got
        return self

    # -- multiply-adds ----------------------------------------------------------------
    def flops(self, route):
        """Multiply-adds of an image that leaves at exit ``route``: conv layers 1..route+1,
        and heads 0..route (the last route's head is CNN1's dense layer)."""
        route = int(route)
        if not 0 <= route < self.depth:
            raise ValueError(f"route: expected 0..{self.depth - 1}, received {route}")
        convs = self.cnn1.flops()
        heads = [head.flops() for head in self.heads] + [convs["dense"]]
        return sum(convs[f"conv{k + 1}"] + heads[k] for k in range(route + 1))

    def flops_per_image(self, routes, threshold=0.0):
        """(N,) exits taken -> (N,) multiply-adds, float64. At threshold >= 1 no head
        runs (the path is CNN1 itself), so every image costs exactly CNN1's."""
        routes = np.asarray(routes)
        if routes.ndim != 1 or (routes.size and (routes.min() < 0 or routes.max() >= self.depth)):
            raise ValueError(f"routes: expected a 1-d array of values in 0..{self.depth - 1}")
        if threshold >= 1:
            return np.full(len(routes), float(self.cnn1.flops()["total"]))
        return np.array([self.flops(r) for r in range(self.depth)])[routes.astype(np.int64)]

    # -- every exit on every image (training and the curve's evidence) ----------------
    def features(self, x):
        """The maps the heads read: [(N, H, W, widths[k]) for k < depth-1], by running CNN1
        up to conv layer depth-1 (its route depth-2; conv layer depth is not entered)."""
        self.cnn1.forward(x, np.full(len(x), self.depth - 2))
        return list(self.cnn1.activations)

    def route_logits(self, x, batch_size=256):
        """Every exit's logits for every image: (depth, N, classes), the last being CNN1's."""
        check_array(x, "images", ndim=4, dtype=self.cnn1.dtype)
        out = np.empty((self.depth, len(x), self.num_classes), dtype=self.cnn1.dtype)
        for s in range(0, len(x), batch_size):
            xb = x[s:s + batch_size]
            out[-1, s:s + len(xb)] = self.cnn1.forward(xb)       # the full route: CNN1
            for k, head in enumerate(self.heads):
                # cnn1.activations holds every conv layer's output of the pass just made
                out[k, s:s + len(xb)] = head.forward(self.cnn1.activations[k])
                head.forget()
        return out

    def head_logits(self, x, batch_size=256):
        """The heads' logits only, (depth-1, N, classes): CNN1's last conv layer is not run."""
        return self.logits_of_pooled(self.pooled_inputs(x, batch_size), batch_size)

    def pooled_inputs(self, x, batch_size=256):
        """What each head's dense layers read, for every image: [(N, in_features) per head],
        CNN1 run batch_size images at a time up to the maps the heads read."""
        check_array(x, "images", ndim=4, dtype=self.cnn1.dtype)
        out = [np.empty((len(x), head.in_features), dtype=self.cnn1.dtype)
               for head in self.heads]
        for s in range(0, len(x), batch_size):
            for k, (head, maps) in enumerate(zip(self.heads, self.features(x[s:s + batch_size]))):
                out[k][s:s + len(maps)] = head.pooled(maps)
        return out

    def logits_of_pooled(self, pooled, batch_size=256):
        """The heads' logits (depth-1, N, classes) from pooled_inputs' arrays."""
        n = len(pooled[0])
        out = np.empty((len(self.heads), n, self.num_classes), dtype=self.cnn1.dtype)
        for k, (head, f) in enumerate(zip(self.heads, pooled)):
            for s in range(0, n, batch_size):
                out[k, s:s + batch_size] = head.forward(f[s:s + batch_size])
            head.forget()
        return out

    # -- the literal cascade (what is deployed, and timed) ----------------------------
    def predict(self, x, threshold, batch_size=256):
        """Logits (N, classes) and exits (N,) with every image leaving at the first head
        whose top probability reaches ``threshold`` (>= 1: none leaves early).

        Each batch runs conv layer k only on the images still in it. The logits are
        those of the exit taken, so they equal route_logits(x)[exit_routes(...), i].
        At threshold >= 1 the heads are not run at all: this is CNN1's own prediction.
        """
        check_array(x, "images", ndim=4, dtype=self.cnn1.dtype)
        check_finite(x, "images")
        routes = np.full(len(x), self.depth - 1, dtype=np.int64)
        if check_threshold(threshold) >= 1:               # no early exit: CNN1 itself
            return predict(self.cnn1, x, batch_size=batch_size), routes
        logits = np.empty((len(x), self.num_classes), dtype=self.cnn1.dtype)
        convs = self.cnn1.convs
        with _ONE_PASS_AT_A_TIME, kernels.one_blas_thread:
            for s in range(0, len(x), batch_size):
                h = x[s:s + batch_size]
                alive = np.arange(s, s + len(h))          # positions in x still running
                for k in range(self.depth):
                    h = convs[k].forward(h)
                    convs[k].cache = None                 # inference: nothing to keep
                    if k == self.depth - 1:
                        logits[alive] = self.cnn1._dense_forward(h)
                        break
                    z = self.heads[k].forward(h)
                    self.heads[k].forget()
                    leave = exits_here(z, threshold)
                    logits[alive[leave]] = z[leave]
                    routes[alive[leave]] = k
                    alive, h = alive[~leave], h[~leave]
                    if len(alive) == 0:
                        break
        return logits, routes


def check_threshold(threshold):
    """A threshold is a number >= 0 (NaN would silently send every image to CNN1)."""
    if not isinstance(threshold, (int, float, np.integer, np.floating)) or not threshold >= 0:
        raise ValueError(f"threshold: expected a number >= 0 (>= 1: no early exit), received "
                         f"{threshold!r}")
    return float(threshold)


def exits_here(logits, threshold):
    """(N,) bool: which images' top softmax probability reaches ``threshold`` (< 1)."""
    if check_threshold(threshold) >= 1:
        return np.zeros(len(logits), dtype=bool)
    return softmax(logits).max(axis=1) >= threshold


def exit_routes(route_logits, threshold):
    """The exit each image takes: the first head (0..depth-2) whose top probability
    reaches ``threshold``, else the last route (CNN1). route_logits: (depth, N, K).
    threshold >= 1: every image takes the last route. Returns (N,) int64."""
    route_logits = np.asarray(route_logits)
    if route_logits.ndim != 3:
        raise ValueError(f"route_logits: expected (depth, N, classes), received shape "
                         f"{route_logits.shape}")
    check_threshold(threshold)
    depth, n = route_logits.shape[:2]
    routes = np.full(n, depth - 1, dtype=np.int64)
    undecided = np.ones(n, dtype=bool)
    for k in range(depth - 1):
        leave = undecided & exits_here(route_logits[k], threshold)
        routes[leave] = k
        undecided &= ~leave
    return routes


def train_heads(model, x, y, epochs, batch_size=128, seed=0, val=None, log=print):
    """Train the exit heads on (x, y) with CNN1 frozen: each head a classifier on its
    conv layer's pooled maps, cross-entropy, RMSprop (Keras' defaults), batches drawn
    from a Generator seeded by (seed, epoch).

    CNN1 does not change, so every image's pooled maps are the same in every epoch:
    they are computed once, before the first epoch, and kept, the validation images'
    too (N * in_features floats per head: 0.7 GB per head for 54,000 MNIST images with
    2x2 pooling). The epochs
    then run the heads alone, several times faster than rerunning CNN1's conv layers
    in every epoch; the result is the same, since a conv layer computes each image on
    its own.

    val: (x_val, y_val) reported after each epoch. Returns the history: per epoch and
    head, the training loss and the validation accuracy; per epoch, its seconds (the
    first includes the maps' pass).
    """
    optimizer = RMSprop()
    history = {"loss": [], "val_accuracy": [], "seconds": []}
    y = np.asarray(y)
    began = time.perf_counter()
    feats = model.pooled_inputs(x, batch_size=512)
    val_feats = None if val is None else model.pooled_inputs(val[0])   # the same every epoch
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(x))
        totals = np.zeros(len(model.heads))
        for start in range(0, len(x), batch_size):
            idx = np.sort(order[start:start + batch_size])
            for k, head in enumerate(model.heads):
                loss, dlogits = softmax_cross_entropy(head.forward(feats[k][idx]), y[idx])
                head.backward(dlogits)
                totals[k] += loss * len(idx)
            optimizer.step([d for head in model.heads for d in head.dense])
        history["loss"].append((totals / len(x)).tolist())
        if val is not None:
            z = model.logits_of_pooled(val_feats)
            history["val_accuracy"].append([float(np.mean(z[k].argmax(axis=1) == val[1]))
                                            for k in range(len(model.heads))])
        history["seconds"].append(time.perf_counter() - began)
        began = time.perf_counter()
        log(f"exit heads epoch {epoch + 1}/{epochs}: loss "
            f"{', '.join(f'{v:.4f}' for v in history['loss'][-1])}"
            + (f"; val_acc {', '.join(f'{v:.4f}' for v in history['val_accuracy'][-1])}"
               if val is not None else "") + f" ({history['seconds'][-1]:.0f} s)")
    return history
