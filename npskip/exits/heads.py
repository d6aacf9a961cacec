"""Beyond the paper: CNN1 decides on the way through where each image leaves (early exits).

The paper routes an image before it enters the network (CNN2 guesses a route from
the pixels). Here CNN1 is kept exactly as trained, and an "exit head" is added after
every conv layer but the last. Exits are counted like the conv layers: exit k reads
conv layer k's ReLU output (averaged over 2x2 blocks, then a 64-unit hidden layer,
ReLU and a dense layer to the classes); the last exit is CNN1's own dense layer.

    conv1 -> exit 1 -> sure? leave : conv2 -> exit 2 -> sure? leave : conv3 -> dense (exit 3)

An image leaves at the first exit whose top softmax probability reaches the
threshold t, and never enters the conv layers after it (literal skipping, as in
CNN3). t >= 1 means no early exit: every image runs CNN1 itself. Why this design:

* the last exit *is* CNN1, so the cascade differs from CNN1 only on images that
  leave early, and a sure head agrees with CNN1 on nearly all of them: judged image
  by image on the validation split (npskip.exits.selection) the two disagree on few
  images, so a threshold's loss can be bounded tightly;
* there is no router to run: deciding costs one head per exit passed, counted in
  the multiply-adds;
* training is cheap: CNN1 is frozen, so only the heads learn, on pooled maps
  computed once.

docs/early-exits.md has the measurements behind the heads' shape.
"""

import time

import numpy as np

from npskip.engine import kernels
from npskip.engine.checks import check_array, check_finite, check_int
from npskip.engine.layers import Dense, ReLU
from npskip.engine.losses import softmax, softmax_cross_entropy
from npskip.engine.model import _ONE_PASS_AT_A_TIME
from npskip.engine.optim import RMSprop
from npskip.engine.train import predict

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
    multiply-adds, and it classified better (docs/early-exits.md).
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

    def multiply_adds(self):
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
    heads[k - 1] is exit k: it reads conv layer k's ReLU output (N, H, W, widths[k - 1]).
    """

    def __init__(self, cnn1, hidden=64, pool=2, seed=0):
        self.cnn1 = cnn1
        self.hidden, self.pool = check_int("hidden", hidden, 0), check_int("pool", pool, 1)
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
        """{"exit1.dense1.W": ..., "exit1.dense1.b": ..., ...}: every head's parameters."""
        return {f"exit{k}.dense{j}.{name}": value
                for k, head in enumerate(self.heads, 1) for j, d in enumerate(head.dense, 1)
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
    def multiply_adds(self, exit):
        """Multiply-adds of an image that leaves at ``exit`` (1..depth): conv layers
        1..exit and exits 1..exit (the last exit's head is CNN1's dense layer)."""
        exit = int(exit)
        if not 1 <= exit <= self.depth:
            raise ValueError(f"exit: expected 1..{self.depth}, received {exit}")
        convs = self.cnn1.multiply_adds()
        heads = [head.multiply_adds() for head in self.heads] + [convs["dense"]]
        return sum(convs[f"conv{k}"] + heads[k - 1] for k in range(1, exit + 1))

    def multiply_adds_per_image(self, exits, threshold=0.0):
        """(N,) exits taken (1..depth) -> (N,) multiply-adds, float64. At threshold >= 1
        no head runs (the path is CNN1 itself), so every image costs exactly CNN1's."""
        exits = np.asarray(exits)
        if exits.ndim != 1 or (exits.size and (exits.min() < 1 or exits.max() > self.depth)):
            raise ValueError(f"exits: expected a 1-d array of values in 1..{self.depth}")
        if threshold >= 1:
            return np.full(len(exits), float(self.cnn1.multiply_adds()["total"]))
        per_exit = np.array([self.multiply_adds(k) for k in range(1, self.depth + 1)])
        return per_exit[exits.astype(np.int64) - 1]

    # -- every exit on every image (training and the curve's evidence) ----------------
    def features(self, x):
        """The maps the heads read, conv layers 1..depth-1: [(N, H, W, widths[k - 1])],
        by running CNN1 on route depth-2 (the last conv layer is not entered)."""
        self.cnn1.forward(x, np.full(len(x), self.depth - 2))
        return list(self.cnn1.activations)

    def exit_logits(self, x, batch_size=256):
        """Every exit's logits for every image: (depth, N, classes); row k - 1 is exit k's,
        the last row CNN1's own."""
        check_array(x, "images", ndim=4, dtype=self.cnn1.dtype)
        out = np.empty((self.depth, len(x), self.num_classes), dtype=self.cnn1.dtype)
        for s in range(0, len(x), batch_size):
            xb = x[s:s + batch_size]
            out[-1, s:s + len(xb)] = self.cnn1.forward(xb)       # the last exit: CNN1
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
        """Logits (N, classes) and exits taken (N,) in 1..depth, every image leaving at
        the first exit whose top probability reaches ``threshold`` (>= 1: none early).

        Each batch runs conv layer k only on the images still in it. The logits are
        those of the exit taken: exit_logits(x)[exits_taken(...) - 1, i].
        At threshold >= 1 the heads are not run at all: this is CNN1's own prediction.
        """
        check_array(x, "images", ndim=4, dtype=self.cnn1.dtype)
        check_finite(x, "images")
        exits = np.full(len(x), self.depth, dtype=np.int64)
        if check_threshold(threshold) >= 1:               # no early exit: CNN1 itself
            return predict(self.cnn1, x, batch_size=batch_size), exits
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
                    exits[alive[leave]] = k + 1            # conv layer k + 1 just ran
                    alive, h = alive[~leave], h[~leave]
                    if len(alive) == 0:
                        break
        return logits, exits


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


def exits_taken(exit_logits, threshold):
    """The exit each image takes (N,) int64 in 1..depth: the first exit whose top
    probability reaches ``threshold``, else the last (CNN1). exit_logits: (depth, N, K),
    as ExitCNN.exit_logits gives. threshold >= 1: every image takes the last exit."""
    exit_logits = np.asarray(exit_logits)
    if exit_logits.ndim != 3:
        raise ValueError(f"exit_logits: expected (depth, N, classes), received shape "
                         f"{exit_logits.shape}")
    check_threshold(threshold)
    depth, n = exit_logits.shape[:2]
    exits = np.full(n, depth, dtype=np.int64)
    undecided = np.ones(n, dtype=bool)
    for k in range(1, depth):
        leave = undecided & exits_here(exit_logits[k - 1], threshold)
        exits[leave] = k
        undecided &= ~leave
    return exits


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
