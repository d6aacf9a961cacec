"""SkipCNN: the paper's network (CNN1 and CNN3), with literal per-sample layer skipping.

    conv1 -> ReLU -> conv2 -> ReLU -> conv3 -> ReLU -> flatten -> dense -> logits

(each ReLU runs inside its convolution's kernel: ``Conv2D(activation="relu")``)

All convolutions are 3x3, stride 1, 'same' padding, so every layer keeps the
input's height and width and any layer's output can feed the dense layer
(section 3 of the paper: "all the convolutional layers ... had the same height
and width").

Each sample has a route r in 0..L-1: it runs conv layers 1..r+1 and then the
dense layer; it never enters the layers after r+1. The batch is sorted by route,
deepest first, so the samples that reach conv layer k are a leading slice of the
batch, and every layer runs on exactly that slice:

    routes (sorted)   2 2 2 2 1 1 0 0
    conv1             [0:8)   every sample
    conv2             [0:6)   routes >= 1
    conv3             [0:4)   routes == 2

A layer that no sample reaches is not called at all: it has no cache, its
gradients stay exactly zero, and ``ran_layers()`` leaves it out, so the
optimizer does not touch it either. There are no masks and no multiplications
by zero.

A route that ends at a layer with fewer maps than the widest one reaches the
dense layer as if zero-padded along channels (a parameter-free identity
shortcut, ResNet's "option A"), so one dense layer serves every route. The
padding is never built: such a sample meets only the rows of the dense weights
that its real channels would, and the zeros are never multiplied.
"""

import threading

import numpy as np

from npskip.engine import kernels
from npskip.engine.checks import check_array, check_int, is_int
from npskip.engine.layers import Conv2D, Dense


# numba's parallel kernels (workqueue threading layer) abort the whole process when
# two Python threads enter them at once, and one_blas_thread is process-wide: so
# every forward and backward pass of every SkipCNN takes this lock, and passes from
# several threads run one after another instead of crashing.
_ONE_PASS_AT_A_TIME = threading.RLock()


class SkipCNN:
    """Convolutions of the given widths (3x3, same padding, ReLU) and one dense layer.

    input_shape: (H, W, C) of one image.
    widths: maps per conv layer, e.g. (16, 16, 32); routes run 0..len(widths)-1.
    seed: seeds every layer's Glorot-uniform weights (one Generator, in layer order).
    dtype: float32 for training, float64 for gradient checks.
    """

    def __init__(self, input_shape, num_classes, widths=(16, 16, 32), seed=0,
                 dtype=np.float32):
        input_shape, widths = tuple(input_shape), tuple(widths)
        if len(input_shape) != 3 or not all(is_int(d) and d >= 1 for d in input_shape):
            raise ValueError(f"input_shape: expected (H, W, C) positive ints, received "
                             f"{input_shape}")
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = check_int("num_classes", num_classes, 1)
        if not widths or not all(is_int(w) and w >= 1 for w in widths):
            raise ValueError(f"widths: expected one or more positive ints, received {widths}")
        self.widths = tuple(int(w) for w in widths)
        self.seed, self.dtype = seed, np.dtype(dtype)
        rng = np.random.default_rng(seed)
        h, w, c = self.input_shape
        ins = (c,) + self.widths[:-1]
        self.convs = [Conv2D(i, o, 3, 1, "same", activation="relu", rng=rng, dtype=dtype)
                      for i, o in zip(ins, self.widths)]
        self.max_width = max(self.widths)
        self.dense = Dense(h * w * self.max_width, self.num_classes, rng=rng, dtype=dtype)
        self._ran = []
        self._order = None
        self.activations = []

    # ------------------------------------------------------------------
    @property
    def depth(self):
        """Number of conv layers (routes run 0..depth-1)."""
        return len(self.convs)

    @property
    def layers(self):
        """Every layer with parameters: the convs, then the dense layer."""
        return self.convs + [self.dense]

    def ran_layers(self):
        """The layers with parameters that the last forward pass entered, in order."""
        return list(self._ran)

    def config(self):
        """The architecture as a JSON-able dict (what a checkpoint needs to rebuild it)."""
        return {"input_shape": list(self.input_shape), "num_classes": self.num_classes,
                "widths": list(self.widths), "seed": self.seed, "dtype": self.dtype.name}

    def __repr__(self):
        return (f"SkipCNN(input_shape={self.input_shape}, num_classes={self.num_classes}, "
                f"widths={self.widths})")

    # ------------------------------------------------------------------
    def _check_routes(self, routes, n):
        if routes is None:
            return np.full(n, self.depth - 1, dtype=np.int64)
        routes = np.asarray(routes)
        if routes.shape != (n,) or (routes.size and not np.issubdtype(routes.dtype, np.integer)):
            raise ValueError(f"routes: expected an integer array of shape ({n},), received "
                             f"{routes.dtype} {routes.shape}")
        if routes.size and (routes.min() < 0 or routes.max() >= self.depth):
            raise ValueError(f"routes: expected values in 0..{self.depth - 1}, received "
                             f"{routes.min()}..{routes.max()}")
        return routes.astype(np.int64, copy=False)

    def forward(self, x, routes=None):
        """Logits for a batch, each sample running only the conv layers of its route.

        x: (N, H, W, C) of the model's dtype; routes: (N,) ints in 0..depth-1, or
        None (every sample takes the full network).  Returns logits (N, num_classes).
        Afterwards ``self.activations[k]`` is conv layer k's ReLU output for the
        samples that reached it, sorted by route, deepest first (in batch order when
        every sample takes the same route); layers nobody reached have no entry.
        BLAS is held at one thread throughout: numba's threads do the parallel work
        (see ``kernels.one_blas_thread``).
        """
        with _ONE_PASS_AT_A_TIME, kernels.one_blas_thread:
            return self._forward(x, routes)

    def _forward(self, x, routes):
        check_array(x, "SkipCNN input", ndim=4, dtype=self.dtype)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"SkipCNN input: expected shape (N, {', '.join(map(str, self.input_shape))}), "
                             f"received {x.shape}")
        n = x.shape[0]
        routes = self._check_routes(routes, n)
        for layer in self.layers:
            layer.zero_grad()          # skipped layers keep zero grads and no cache
        # Deepest route first, stable so equal routes keep their batch order.
        order = np.argsort(-routes, kind="stable")
        sorted_routes = routes[order]
        # reach[k] = how many samples (a leading slice) run conv layer k.
        reach = [int(np.count_nonzero(sorted_routes >= k)) for k in range(self.depth)]
        in_order = bool(np.all(order == np.arange(n)))
        h = x if in_order else x[order]
        self._ran, self._ends, self.activations = [], {}, []
        for k, conv in enumerate(self.convs):
            m = reach[k]
            if m == 0:
                break                  # nobody goes deeper: conv k and the rest are never entered
            h = conv.forward(h[:m])    # the ReLU output, (m, H, W, widths[k])
            self._ran.append(conv)
            self.activations.append(h)
            stop = reach[k + 1] if k + 1 < self.depth else 0
            if stop < m:               # rows [stop, m) end here and leave for the dense layer
                self._ends[k] = (stop, h[stop:m])
        logits_sorted = np.empty((n, self.num_classes), dtype=self.dtype)
        for start, feats in self._ends.values():
            logits_sorted[start:start + len(feats)] = self._dense_forward(feats)
        self._ran.append(self.dense)
        self._order, self._reach = order, reach
        logits = np.empty_like(logits_sorted)
        logits[order] = logits_sorted
        return logits

    # The dense layer, for samples whose features have c <= max_width channels.
    # Its input is the (H, W, max_width) maps flattened, with the missing channels
    # as zeros (a parameter-free shortcut, ResNet's "option A"). The weights those
    # zeros would meet are skipped rather than multiplied: only the rows of W for
    # channels 0..c-1 are used, and only their gradient is written.
    # ``reference.routed_dense`` builds the padding instead: the plain twin
    # that the tests check these two methods against.
    def _dense_rows(self, c):
        """The dense W's rows that channels 0..c-1 meet: (H*W*c, classes), copied if c < max."""
        w = self.dense.params["W"]
        if c == self.max_width:
            return w
        per_pixel = w.reshape(-1, self.max_width, self.num_classes)     # (H*W, max_width, classes)
        return np.ascontiguousarray(per_pixel[:, :c]).reshape(-1, self.num_classes)

    def _dense_forward(self, feats):
        """feats (m, H, W, c) -> logits (m, classes) = flatten(feats) @ rows of W + b."""
        flat = feats.reshape(len(feats), -1)
        return kernels.dot_rows(flat, self._dense_rows(feats.shape[-1])) + self.dense.params["b"]

    def _dense_backward(self, feats, dlogits):
        """Add this group's dW and db into the dense grads; return dL/dfeats (m, H, W, c)."""
        flat, c = feats.reshape(len(feats), -1), feats.shape[-1]
        grad_w = self.dense.grads["W"].reshape(-1, self.max_width, self.num_classes)
        grad_w[:, :c] += kernels.dot_tn_rows(flat, dlogits).reshape(-1, c, self.num_classes)
        self.dense.grads["b"] += dlogits.sum(axis=0)
        return kernels.dot_rows(dlogits, self._dense_rows(c).T).reshape(feats.shape)

    def backward(self, dlogits, need_dx=False):
        """Back-propagate dL/dlogits (N, num_classes) through the layers each sample ran.

        Fills ``grads`` of every layer that ran; the others stay at zero.
        Returns dL/dx (N, H, W, C) if need_dx, else None (training never needs
        the gradient for the images, and conv1 then skips its col2im).
        """
        with _ONE_PASS_AT_A_TIME, kernels.one_blas_thread:
            return self._backward(dlogits, need_dx)

    def _backward(self, dlogits, need_dx):
        if self._order is None:
            raise RuntimeError("SkipCNN.backward called without a forward pass")
        order, reach = self._order, self._reach
        self._order = None
        check_array(dlogits, "SkipCNN upstream gradient", ndim=2, last_dim=self.num_classes,
                    dtype=self.dtype)
        if dlogits.shape[0] != reach[0]:
            raise ValueError(f"SkipCNN upstream gradient: expected {reach[0]} rows, "
                             f"received {dlogits.shape[0]}")
        dlogits = np.ascontiguousarray(dlogits[order])
        ran = [k for k in range(self.depth) if reach[k] > 0]
        dh = None                      # gradient w.r.t. the output of conv layer k+1
        for k in reversed(ran):
            # The output of layer k feeds layer k+1 for rows [0, reach[k+1]) and the
            # dense layer for the rest (if any end here); its gradient gathers both.
            grad = dh
            if k in self._ends:
                start, feats = self._ends[k]
                dend = self._dense_backward(feats, dlogits[start:start + len(feats)])
                grad = dend if dh is None else np.concatenate([dh, dend])
            dh = self.convs[k].backward(grad, need_dx=need_dx or k > 0)
        self._ends = {}
        if not need_dx:
            return None
        dx = np.empty_like(dh)
        dx[order] = dh
        return dx

    # ------------------------------------------------------------------
    def multiply_adds(self, route=None):
        """Multiply-adds per image on ``route`` (None: the full network), per layer.

        conv k: H * W * C_out * (3 * 3 * C_in)   (same padding, stride 1: H, W kept)
        dense:  (H * W * C) * num_classes, C the width of the route's last conv layer
                (the zero-padded channels are skipped, not multiplied)
        Biases and ReLUs are not counted. Returns {"conv1": ..., ..., "dense": ..., "total": ...}.
        """
        route = self.depth - 1 if route is None else int(route)
        if not 0 <= route < self.depth:
            raise ValueError(f"route: expected 0..{self.depth - 1}, received {route}")
        h, w, _ = self.input_shape
        out = {}
        for k, conv in enumerate(self.convs):
            kh, kw = conv.kernel_size
            out[f"conv{k + 1}"] = (h * w * conv.out_channels * kh * kw * conv.in_channels
                                   if k <= route else 0)
        out["dense"] = h * w * self.widths[route] * self.num_classes
        out["total"] = sum(out.values())
        return out

    def multiply_adds_per_image(self, routes):
        """Total multiply-adds of each image on its route: routes (N,) -> (N,) float64."""
        totals = np.array([self.multiply_adds(r)["total"] for r in range(self.depth)], dtype=np.float64)
        routes = np.asarray(routes)
        if routes.ndim != 1:
            raise ValueError(f"routes: expected a 1-d integer array, received shape {routes.shape}")
        return totals[self._check_routes(routes, len(routes))]   # -1 must not wrap to the last
