"""The layers of the paper's networks, each with an explicit backward pass.

Every layer follows one contract:

    out = layer.forward(x)      # computes, and keeps in layer.cache what backward needs
    dx = layer.backward(dout)   # returns dL/dx and writes dL/dparam into layer.grads

``layer.params`` and ``layer.grads`` are dicts with the same keys, so an
optimizer can walk them side by side. ``forward`` and ``backward`` never modify
their arguments. A layer that was never called has ``cache is None`` and cannot
run backward: that is what lets the model skip a layer for real.

Layout is NHWC, as in Keras: images are ``(N, H, W, C)``. Parameters are
float32 by default (for training) or float64 (for gradient checks); inputs must
have the same dtype as the parameters.
"""

import numpy as np

from npskip.engine import kernels, reference
from npskip.engine.checks import check_array, check_int


def glorot_uniform(shape, fan_in, fan_out, rng, dtype):
    """Keras' default kernel initialiser: U(-a, a) with a = sqrt(6 / (fan_in + fan_out))."""
    limit = np.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


class Layer:
    """Base class: empty params and grads, a cache, and shared checks."""

    def __init__(self):
        self.params = {}
        self.grads = {}
        self.cache = None

    def zero_grad(self):
        """Set every gradient to zero and forget the cache of the last forward."""
        for g in self.grads.values():
            g.fill(0)
        self.cache = None

    def _take_cache(self):
        if self.cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called without a forward pass to go back through"
            )
        cache, self.cache = self.cache, None
        return cache

    def __repr__(self):
        shapes = ", ".join(f"{k}={v.shape}" for k, v in self.params.items())
        return f"{type(self).__name__}({shapes})"


class Conv2D(Layer):
    """2-D convolution (cross-correlation): per image, im2col and one matrix product.

    params["W"]: (kh, kw, C_in, C_out), Glorot-uniform; params["b"]: (C_out,), zeros.
    activation: None, or "relu" for max(., 0) applied to the output, as Keras'
    ``Conv2D(..., activation="relu")`` does (the same as a ReLU layer after it).

    forward:  x (N, H, W, C_in) -> out (N, Ho, Wo, C_out), where
        padding="same":  Ho = ceil(H / stride)
        padding="valid": Ho = floor((H - kh) / stride) + 1     (likewise Wo)

    With cols = im2col(x) (one row per output pixel, kh*kw*C_in columns) and
    W_mat = W reshaped to (kh*kw*C_in, C_out), P = N*Ho*Wo:
        out = cols @ W_mat + b                 (P, C_out; then out = max(out, 0) with ReLU)
        g = dout                               (P, C_out; with ReLU: dout where out > 0, else 0)
        dW_mat = cols.T @ g,   db = sum of g over pixels,
        dcols = g @ W_mat.T,   dx = col2im(dcols).
    Read ``npskip.reference.conv2d`` and ``conv2d_backward_naive`` first:
    they are exactly these lines in plain NumPy, with the derivation, and the
    tests check this layer against them.
    The kernels (npskip.kernels.conv_forward / conv_backward) do this one image
    at a time, so that an image's cols stay in cache; the sums are the same.
    With stride 1 and at most 8 input channels (conv1 of every network here)
    they build cols transposed from block copies (kernels.conv_forward_wide /
    conv_backward_wide).
    Fusing the ReLU into them saves the separate passes over the whole batch
    that a ReLU layer makes (a quarter of CNN1's inference time, measured).
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding="same",
                 activation=None, rng=0, dtype=np.float32):
        super().__init__()
        if activation not in (None, "relu"):
            raise ValueError(f"activation: expected None or 'relu', received {activation!r}")
        self.activation = activation
        kh, kw = (kernel_size, kernel_size) if np.isscalar(kernel_size) else kernel_size
        if padding not in ("same", "valid"):
            raise ValueError(f"padding: expected 'same' or 'valid', received {padding!r}")
        # ints >= 1, said here: the numba kernels would fail on them with a typing error
        kh, kw = (check_int("kernel_size", k, 1) for k in (kh, kw))
        stride = check_int("stride", stride, 1)
        self.in_channels = check_int("in_channels", in_channels, 1)
        self.out_channels = check_int("out_channels", out_channels, 1)
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(rng)
        self.params["W"] = glorot_uniform((kh, kw, in_channels, out_channels),
                                          kh * kw * in_channels, kh * kw * out_channels,
                                          rng, self.dtype)
        self.params["b"] = np.zeros(out_channels, dtype=self.dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        # Per-thread buffers are reused between calls: allocating them afresh on
        # every call costs more in page faults than filling them does.
        self._workspace = {}

    def output_shape(self, h, w):
        """(Ho, Wo, C_out) for an (h, w) input."""
        ho, wo, _, _ = reference.conv_output_shape(h, w, *self.kernel_size, self.stride,
                                                 self.padding)
        return ho, wo, self.out_channels

    def _geometry(self, x_shape):
        ho, wo, pt, pl = reference.conv_output_shape(x_shape[1], x_shape[2], *self.kernel_size,
                                                   self.stride, self.padding)
        kh, kw = self.kernel_size
        return ho, wo, pt, pl, kh * kw * self.in_channels

    def forward(self, x):
        """x: (N, H, W, C_in) -> (N, Ho, Wo, C_out)."""
        check_array(x, "Conv2D input", ndim=4, last_dim=self.in_channels, dtype=self.dtype)
        x = np.ascontiguousarray(x)
        n = x.shape[0]
        ho, wo, pt, pl, k = self._geometry(x.shape)
        threads = kernels.thread_count(n)
        out = np.empty((n, ho * wo, self.out_channels), dtype=self.dtype)
        w_mat = self.params["W"].reshape(k, self.out_channels)
        relu = self.activation == "relu"
        with kernels.one_blas_thread:
            if self._wide():
                xp, cols_t, wide = self._wide_buffers(threads, ho, wo)
                kernels.conv_forward_wide(x, w_mat, self.params["b"], relu, *self.kernel_size,
                                          pt, pl, ho, wo,              # inputs, geometry
                                          xp=xp, cols_t=cols_t, out_wide=wide,   # scratch
                                          out=out)                      # output
            else:
                cols = self._buffer("cols", (threads, ho * wo, k))
                kernels.conv_forward(x, w_mat, self.params["b"], relu, *self.kernel_size,
                                     self.stride, pt, pl, ho, wo,      # inputs, geometry
                                     cols=cols, out=out)               # scratch, output
        out = out.reshape(n, ho, wo, self.out_channels)
        self.cache = (x, out)          # ReLU's backward needs the output
        return out

    def backward(self, dout, need_dx=True):
        """dout: (N, Ho, Wo, C_out) -> dx: (N, H, W, C_in); fills grads W and b.

        need_dx=False skips dcols and col2im and returns None: the first layer of
        a network needs no gradient for the images, and that saves a third of its
        backward pass.
        """
        x, out = self._take_cache()
        n = x.shape[0]
        ho, wo, pt, pl, k = self._geometry(x.shape)
        check_array(dout, "Conv2D upstream gradient", ndim=4, dtype=self.dtype)
        if dout.shape != (n, ho, wo, self.out_channels):
            raise ValueError(f"Conv2D upstream gradient: expected shape "
                             f"{(n, ho, wo, self.out_channels)}, received {dout.shape}")
        dout_img = np.ascontiguousarray(dout).reshape(n, ho * wo, self.out_channels)
        w_mat = self.params["W"].reshape(k, self.out_channels)
        threads = kernels.thread_count(n)
        dw_parts = self._buffer("dw_parts", (threads, k, self.out_channels))
        dw_tmp = self._buffer("dw_tmp", (threads, k, self.out_channels))
        db_parts = self._buffer("db_parts", (threads, self.out_channels))
        dx = np.empty(x.shape, dtype=self.dtype) if need_dx else np.empty((0, 1, 1, 1), self.dtype)
        out_img, relu = out.reshape(dout_img.shape), self.activation == "relu"
        with kernels.one_blas_thread:
            if self._wide():
                xp, cols_t, grad = self._wide_buffers(threads, ho, wo)
                dcols_t = self._buffer("dcols_t", cols_t.shape)
                kernels.conv_backward_wide(
                    x, out_img, dout_img, w_mat, relu, *self.kernel_size, pt, pl, ho, wo,
                    xp=xp, cols_t=cols_t, grad_wide=grad, dcols_t=dcols_t,      # scratch
                    dw_tmp=dw_tmp, dw_parts=dw_parts, db_parts=db_parts,        # outputs:
                    dx=dx, need_dx=need_dx)                     # dW, db by thread; dx
            else:
                cols = self._buffer("cols", (threads, ho * wo, k))
                grad = self._buffer("grad", (threads, ho * wo, self.out_channels))
                dcols = self._buffer("dcols", (threads, ho * wo, k))
                kernels.conv_backward(
                    x, out_img, dout_img, w_mat, relu, *self.kernel_size, self.stride, pt, pl,
                    ho, wo,                                     # inputs and geometry
                    cols=cols, grad=grad, dcols=dcols, dw_tmp=dw_tmp,           # scratch
                    dw_parts=dw_parts, db_parts=db_parts,       # outputs: dW, db by thread;
                    dx=dx, need_dx=need_dx)                     # dx if need_dx
        np.sum(dw_parts, axis=0, out=self.grads["W"].reshape(k, self.out_channels))
        np.sum(db_parts, axis=0, out=self.grads["b"])
        return dx if need_dx else None

    # Forward+backward at batch 128 against the one-value-at-a-time im2col: 0.6x
    # the time with 1 or 3 input channels, 1.0x with 8, 1.1-1.2x with 16 (there
    # the product dominates and the copy was already cheap).
    WIDE_MAX_IN_CHANNELS = 8

    def _wide(self):
        """Stride 1 and few input channels: im2col's one-value-at-a-time copy costs as
        much as the product, so the kernels build cols transposed from block copies
        (see kernels.conv_forward_wide)."""
        return self.stride == 1 and self.in_channels <= self.WIDE_MAX_IN_CHANNELS

    def _wide_buffers(self, threads, ho, wo):
        """Per-thread (padded flat image, cols_t, wide output or gradient) buffers."""
        kh, kw = self.kernel_size
        wp = wo + kw - 1
        return (self._buffer("xp", (threads, self.in_channels, (ho + kh - 1) * wp + kw)),
                self._buffer("cols_t", (threads, kh * kw * self.in_channels, ho * wp)),
                self._buffer("wide", (threads, ho * wp, self.out_channels)))

    def _buffer(self, name, shape):
        """A C-contiguous (shape) view into a reused, growing buffer."""
        size = int(np.prod(shape))
        buf = self._workspace.get(name)
        if buf is None or buf.size < size:
            buf = np.empty(size, dtype=self.dtype)
            self._workspace[name] = buf
        return buf[:size].reshape(shape)


class ReLU(Layer):
    """max(x, 0), elementwise. Any shape in, same shape out."""

    def forward(self, x):
        check_array(x, "ReLU input", dtype="float")
        out = np.maximum(x, 0)
        self.cache = out
        return out

    def backward(self, dout):
        out = self._take_cache()
        if dout.shape != out.shape:
            raise ValueError(f"ReLU upstream gradient: expected shape {out.shape}, "
                             f"received {dout.shape}")
        # The derivative at exactly 0 is taken as 0, as in Keras and PyTorch.
        dx = kernels.relu_backward(out.reshape(-1), np.ascontiguousarray(dout).reshape(-1))
        return dx.reshape(out.shape)


class Flatten(Layer):
    """(N, d1, d2, ...) -> (N, d1*d2*...), in C order (NHWC: channel fastest)."""

    def forward(self, x):
        check_array(x, "Flatten input")
        if x.ndim < 2:
            raise ValueError(f"Flatten input: expected at least 2-d (N, ...), received {x.shape}")
        self.cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self._take_cache())


class Dense(Layer):
    """Fully connected layer: out = x @ W + b.

    params["W"]: (in_features, out_features), Glorot-uniform; params["b"]: (out_features,), zeros.
    forward: x (N, in_features) -> (N, out_features).

    backward (the convolution's lines with cols = x): out[n, j] = sum_i x[n, i] W[i, j]
    + b[j], so by the chain rule dW[i, j] = sum_n x[n, i] dout[n, j], i.e. dW = x.T @ dout
    (in_features, out_features); db = dout summed over the N rows (out_features,); and
    dx[n, i] = sum_j dout[n, j] W[i, j], i.e. dx = dout @ W.T (N, in_features).
    SkipCNN's dense layer is this one; a route that ends at a narrower layer uses only
    some of its rows (``reference.routed_dense`` spells out which, and why).
    """

    def __init__(self, in_features, out_features, rng=0, dtype=np.float32):
        super().__init__()
        self.in_features = check_int("in_features", in_features, 1)
        self.out_features = check_int("out_features", out_features, 1)
        self.dtype = np.dtype(dtype)
        rng = np.random.default_rng(rng)
        self.params["W"] = glorot_uniform((in_features, out_features), in_features,
                                          out_features, rng, self.dtype)
        self.params["b"] = np.zeros(out_features, dtype=self.dtype)
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}

    def forward(self, x):
        check_array(x, "Dense input", ndim=2, last_dim=self.in_features, dtype=self.dtype)
        x = np.ascontiguousarray(x)
        self.cache = x
        # x @ W with the rows shared between numba's threads, each with a one-thread BLAS.
        with kernels.one_blas_thread:
            return kernels.dot_rows(x, self.params["W"]) + self.params["b"]

    def backward(self, dout):
        """dout: (N, out_features) -> dx: (N, in_features); fills grads W and b.

        dW = x.T @ dout,  db = sum of dout over the batch,  dx = dout @ W.T
        """
        x = self._take_cache()
        check_array(dout, "Dense upstream gradient", ndim=2, last_dim=self.out_features,
                    dtype=self.dtype)
        if dout.shape[0] != x.shape[0]:
            raise ValueError(f"Dense upstream gradient: expected {x.shape[0]} rows, "
                             f"received {dout.shape[0]}")
        dout = np.ascontiguousarray(dout)
        with kernels.one_blas_thread:
            self.grads["W"][...] = kernels.dot_tn_rows(x, dout)
            dx = kernels.dot_rows(dout, self.params["W"].T)
        np.sum(dout, axis=0, out=self.grads["b"])
        return dx
