"""The numba kernels: the fast twins of ``reference.py``, which reads like the math.

Read ``reference.py`` first. The kernels here compute the same convolution,
image by image and shared between numba's threads, each thread calling BLAS
for its products (so BLAS must run on one thread: ``one_blas_thread``). The
tests check every kernel against its twin. Set ``NUMBA_DISABLE_JIT=1`` to step
through the kernels as plain Python in a debugger.
"""

import importlib

import numba
import numpy as np
from numba import njit, prange


# --------------------------------------------------------------------------
# numba kernels (the fast path)
# --------------------------------------------------------------------------

@njit(cache=True)
def im2col_image(x, b, kh, kw, stride, pad_top, pad_left, ho, wo, cols):
    """Copy every kh x kw window of image ``b`` of ``x`` into a row of ``cols`` (in place).

    x: (N, H, W, C); cols: (Ho*Wo, kh*kw*C), same dtype, fully overwritten.
    """
    _, h, w, c = x.shape
    for oy in range(ho):
        for ox in range(wo):
            row = oy * wo + ox
            for i in range(kh):
                iy = oy * stride - pad_top + i
                for j in range(kw):
                    ix = ox * stride - pad_left + j
                    col = (i * kw + j) * c
                    if 0 <= iy < h and 0 <= ix < w:
                        for ch in range(c):
                            cols[row, col + ch] = x[b, iy, ix, ch]
                    else:
                        for ch in range(c):
                            cols[row, col + ch] = 0.0


@njit(cache=True)
def col2im_image(dcols, kh, kw, stride, pad_top, pad_left, ho, wo, dx, b):
    """Add every row of ``dcols`` back onto the pixel of image ``b`` it came from.

    dcols: (Ho*Wo, kh*kw*C); dx: (N, H, W, C); dx[b] is zeroed, then accumulated.
    Gradient that lands in the padding is dropped: padding is not an input.
    """
    _, h, w, c = dx.shape
    dx[b] = 0.0
    for oy in range(ho):
        for ox in range(wo):
            row = oy * wo + ox
            for i in range(kh):
                iy = oy * stride - pad_top + i
                if iy < 0 or iy >= h:
                    continue
                for j in range(kw):
                    ix = ox * stride - pad_left + j
                    if ix < 0 or ix >= w:
                        continue
                    col = (i * kw + j) * c
                    for ch in range(c):
                        dx[b, iy, ix, ch] += dcols[row, col + ch]


@njit(cache=True)
def im2col(x, kh, kw, stride, pad_top, pad_left, ho, wo, cols):
    """The whole batch at once: image b fills rows [b*Ho*Wo, (b+1)*Ho*Wo) of ``cols``.

    x: (N, H, W, C); cols: (N*Ho*Wo, kh*kw*C). This is the textbook form (one
    big matrix); Conv2D uses the per-image kernels below, which keep it in cache.
    """
    p = ho * wo
    for b in range(x.shape[0]):
        im2col_image(x, b, kh, kw, stride, pad_top, pad_left, ho, wo, cols[b * p:(b + 1) * p])


@njit(cache=True)
def col2im(dcols, kh, kw, stride, pad_top, pad_left, ho, wo, dx):
    """The adjoint of im2col for the whole batch. dcols: (N*Ho*Wo, kh*kw*C); dx: (N, H, W, C)."""
    p = ho * wo
    for b in range(dx.shape[0]):
        col2im_image(dcols[b * p:(b + 1) * p], kh, kw, stride, pad_top, pad_left, ho, wo, dx, b)


# --------------------------------------------------------------------------
# the convolution, image by image
# --------------------------------------------------------------------------
# One big (N*Ho*Wo, kh*kw*C) matrix for a batch of 128 MNIST images is 58 MB for
# conv2: writing it and reading it back runs at memory speed, and a product with
# only 16 or 32 columns cannot hide that. One image's block is 0.45 MB and stays
# in the core's cache between im2col and the product, which made the forward pass
# about twice as fast. Images are shared out between numba's threads, each with
# its own buffers; each thread's products (np.dot, i.e. SciPy's BLAS) must then
# be single-threaded: see ``one_blas_thread``.

@njit(cache=True, parallel=True)
def conv_forward(x, wmat, bias, relu, kh, kw, stride, pad_top, pad_left, ho, wo, cols, out):
    """out[b] = im2col(x[b]) @ wmat + bias for every image b, then max(., 0) if ``relu``.

    x: (N, H, W, C_in); wmat: (kh*kw*C_in, C_out); bias: (C_out,);
    cols: (T, Ho*Wo, kh*kw*C_in) one buffer per thread; out: (N, Ho*Wo, C_out).
    Adding the bias and the ReLU here, while out[b] is in cache, spares two more
    passes over the whole batch's output in memory.
    """
    n, threads = x.shape[0], cols.shape[0]
    for t in prange(threads):
        for b in range(t, n, threads):
            im2col_image(x, b, kh, kw, stride, pad_top, pad_left, ho, wo, cols[t])
            np.dot(cols[t], wmat, out[b])
            for p in range(ho * wo):
                for c in range(out.shape[2]):
                    v = out[b, p, c] + bias[c]
                    out[b, p, c] = max(v, 0.0) if relu else v


@njit(cache=True, parallel=True)
def conv_backward(x, out, dout, wmat, relu, kh, kw, stride, pad_top, pad_left, ho, wo,
                  cols, grad, dcols, dw_parts, dw_tmp, db_parts, dx, need_dx):
    """Gradients of out = act(im2col(x) @ wmat + bias), image by image.

    g[b] = dout[b] where out[b] > 0, else 0   (if ``relu``; else g[b] = dout[b])
    dW = sum over images of im2col(x[b]).T @ g[b]   (each thread sums its own images
         into dw_parts[t]; the caller adds the T parts)
    db = sum over images and pixels of g[b]         (likewise, into db_parts[t])
    dx[b] = col2im(g[b] @ wmat.T)                   (only if need_dx)
    x: (N, H, W, C_in); out, dout: (N, Ho*Wo, C_out) (out is read only if relu);
    cols, dcols: (T, Ho*Wo, kh*kw*C_in); grad: (T, Ho*Wo, C_out);
    dw_parts, dw_tmp: (T, kh*kw*C_in, C_out); db_parts: (T, C_out); dx: (N, H, W, C_in).
    im2col is recomputed rather than kept from the forward pass: redoing it in
    cache is cheaper than storing the whole batch's matrix and reading it back.
    """
    n, threads = x.shape[0], cols.shape[0]
    for t in prange(threads):
        dw_parts[t] = 0.0
        db_parts[t] = 0.0
        g = grad[t]
        for b in range(t, n, threads):
            # ReLU's backward and the bias gradient, in one pass over dout[b].
            for p in range(ho * wo):
                for c in range(dout.shape[2]):
                    v = dout[b, p, c]
                    if relu and out[b, p, c] <= 0.0:
                        v = 0.0        # the derivative at exactly 0 is taken as 0
                    g[p, c] = v
                    db_parts[t, c] += v
            im2col_image(x, b, kh, kw, stride, pad_top, pad_left, ho, wo, cols[t])
            np.dot(cols[t].T, g, dw_tmp[t])
            dw_parts[t] += dw_tmp[t]
            if need_dx:
                np.dot(g, wmat.T, dcols[t])
                col2im_image(dcols[t], kh, kw, stride, pad_top, pad_left, ho, wo, dx, b)


# --------------------------------------------------------------------------
# stride 1: im2col transposed, on a "wide" grid
# --------------------------------------------------------------------------
# ``im2col_image`` copies one value at a time, with a bounds test for each
# kernel offset. With stride 1, im2col can be built transposed from block
# copies instead: pad the image to (Hp, Wp) = (Ho + kh - 1, Wo + kw - 1), lay
# it out channel by channel (xp[ch] = one flat padded plane); then for output
# pixel p' = oy*Wp + ox on a grid Wp wide (its last kw - 1 columns are
# discarded),
#
#     cols_t[(i*kw + j)*C + ch, p'] = xp[ch, p' + i*Wp + j]
#
# so every row of cols_t is one contiguous slice of a plane. The product is
# the same, out_wide = cols_t.T @ W_mat, on (kw - 1)/Wp more rows (7% for MNIST).
# With one input channel (conv1 on MNIST) the element-by-element copy cost
# about 9x the product it feeds (38 us against 4 us per 28x28 image); Conv2D
# takes this path for up to 8 input channels (see Conv2D.WIDE_MAX_IN_CHANNELS).

@njit(cache=True)
def pad_planes(x, b, pad_top, pad_left, wp, xp):
    """Image b of x (N, H, W, C), zero-padded, as C flat planes: xp (C, Hp*Wp + kw)."""
    _, h, w, c = x.shape
    xp[:] = 0.0
    for y in range(h):
        row = (y + pad_top) * wp + pad_left
        for xx in range(w):
            for ch in range(c):
                xp[ch, row + xx] = x[b, y, xx, ch]


@njit(cache=True)
def im2col_wide(xp, kh, kw, wp, cols_t):
    """cols_t[(i*kw + j)*C + ch] = xp[ch, i*Wp + j : i*Wp + j + P'], P' = cols_t.shape[1]."""
    c, pw = xp.shape[0], cols_t.shape[1]
    for i in range(kh):
        for j in range(kw):
            for ch in range(c):
                cols_t[(i * kw + j) * c + ch] = xp[ch, i * wp + j:i * wp + j + pw]


@njit(cache=True, parallel=True)
def conv_forward_wide(x, wmat, bias, relu, kh, kw, pad_top, pad_left, ho, wo, xp, cols_t,
                      out_wide, out):
    """``conv_forward`` for stride 1, through the transposed wide im2col.

    x: (N, H, W, C_in); wmat: (kh*kw*C_in, C_out); bias: (C_out,); out: (N, Ho*Wo, C_out).
    Per thread: xp (T, C_in, Hp*Wp + kw), cols_t (T, kh*kw*C_in, Ho*Wp),
    out_wide (T, Ho*Wp, C_out).
    """
    n, threads = x.shape[0], xp.shape[0]
    wp = wo + kw - 1
    for t in prange(threads):
        for b in range(t, n, threads):
            pad_planes(x, b, pad_top, pad_left, wp, xp[t])
            im2col_wide(xp[t], kh, kw, wp, cols_t[t])
            np.dot(cols_t[t].T, wmat, out_wide[t])
            for oy in range(ho):
                for ox in range(wo):
                    for c in range(out.shape[2]):
                        v = out_wide[t, oy * wp + ox, c] + bias[c]
                        out[b, oy * wo + ox, c] = max(v, 0.0) if relu else v


@njit(cache=True, parallel=True)
def conv_backward_wide(x, out, dout, wmat, relu, kh, kw, pad_top, pad_left, ho, wo, xp, cols_t,
                       grad_wide, dcols_t, dw_parts, dw_tmp, db_parts, dx, need_dx):
    """``conv_backward`` for stride 1, on the wide grid.

    g_wide holds g at the real pixels and zeros in the discarded columns, so
    dW = cols_t @ g_wide sums real pixels only; dcols_t = W_mat @ g_wide.T, and
    col2im becomes kh*kw*C slice additions into the padded planes, then a crop.
    grad_wide: (T, Ho*Wp, C_out); dcols_t: (T, kh*kw*C_in, Ho*Wp); the rest as
    ``conv_forward_wide`` and ``conv_backward``; dx: (N, H, W, C_in).
    """
    n, h, w, c_in = x.shape
    threads, c_out = xp.shape[0], dout.shape[2]
    wp = wo + kw - 1
    pw = ho * wp
    for t in prange(threads):
        dw_parts[t] = 0.0
        db_parts[t] = 0.0
        g = grad_wide[t]
        g[:] = 0.0                     # the discarded columns stay zero
        for b in range(t, n, threads):
            for oy in range(ho):
                for ox in range(wo):
                    for c in range(c_out):
                        v = dout[b, oy * wo + ox, c]
                        if relu and out[b, oy * wo + ox, c] <= 0.0:
                            v = 0.0    # the derivative at exactly 0 is taken as 0
                        g[oy * wp + ox, c] = v
                        db_parts[t, c] += v
            pad_planes(x, b, pad_top, pad_left, wp, xp[t])
            im2col_wide(xp[t], kh, kw, wp, cols_t[t])
            np.dot(cols_t[t], g, dw_tmp[t])
            dw_parts[t] += dw_tmp[t]
            if need_dx:
                np.dot(wmat, g.T, dcols_t[t])
                dxp = xp[t]            # reused as the padded planes' gradient
                dxp[:] = 0.0
                for i in range(kh):
                    for j in range(kw):
                        off = i * wp + j
                        for ch in range(c_in):
                            src = dcols_t[t, (i * kw + j) * c_in + ch]
                            dst = dxp[ch, off:off + pw]
                            for q in range(pw):
                                dst[q] += src[q]
                for y in range(h):
                    row = (y + pad_top) * wp + pad_left
                    for xx in range(w):
                        for ch in range(c_in):
                            dx[b, y, xx, ch] = dxp[ch, row + xx]


# --------------------------------------------------------------------------
# the dense layer's products, shared out by rows
# --------------------------------------------------------------------------
# Inside SkipCNN BLAS runs on one thread (see ``one_blas_thread``), so the dense
# layer's products are split between numba's threads instead: each thread takes
# a contiguous block of the batch's rows.

@njit(cache=True, parallel=True)
def matmul_rows(a, b, out, threads):
    """out = a @ b, each of ``threads`` threads computing a block of rows.

    a: (N, K); b: (K, M) (C- or F-ordered, e.g. a transpose); out: (N, M).
    """
    n = a.shape[0]
    for t in prange(threads):
        start, stop = t * n // threads, (t + 1) * n // threads
        if stop > start:
            np.dot(a[start:stop], b, out[start:stop])


@njit(cache=True, parallel=True)
def matmul_tn_rows(a, b, parts):
    """parts[t] = a[rows of t].T @ b[rows of t]; their sum over t is a.T @ b.

    a: (N, K); b: (N, M); parts: (T, K, M). The caller adds the T parts.
    """
    n, threads = a.shape[0], parts.shape[0]
    for t in prange(threads):
        start, stop = t * n // threads, (t + 1) * n // threads
        if stop > start:
            np.dot(a[start:stop].T, b[start:stop], parts[t])
        else:
            parts[t] = 0.0


def thread_count(n):
    """How many numba threads to share n rows between (at least one row each)."""
    return max(1, min(numba.get_num_threads(), n))


def dot_rows(a, b):
    """a @ b, (N, K) @ (K, M) -> (N, M), a's rows shared between numba's threads.

    Call it with BLAS at one thread (``one_blas_thread``): every thread calls BLAS.
    """
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.result_type(a, b))
    matmul_rows(a, b, out, thread_count(a.shape[0]))
    return out


def dot_tn_rows(a, b):
    """a.T @ b, (N, K) and (N, M) -> (K, M), each numba thread summing its own rows."""
    threads = thread_count(a.shape[0])
    parts = np.empty((threads, a.shape[1], b.shape[1]), dtype=np.result_type(a, b))
    matmul_tn_rows(a, b, parts)
    return parts.sum(axis=0)


class _OneBlasThread:
    """Context manager: BLAS libraries at one thread each, restored on exit.

    Inside ``conv_forward``/``conv_backward`` every numba thread calls BLAS at
    once; a BLAS that starts its own threads on top of them oversubscribes the
    cores (measured on two cores: 5-15x slower). A threaded BLAS call just before
    a numba kernel hurts too: its idle threads spin for a while and take cores
    from numba's. So SkipCNN holds this for a whole forward or backward pass.
    Nested uses are counted and only the outermost one acts. Finding the
    libraries is slow, so it is done once. Not for use from several Python
    threads at once.
    """

    def __init__(self):
        self._controller, self._limiter, self._depth = None, None, 0

    def __enter__(self):
        if self._depth == 0:
            if self._controller is None:
                from threadpoolctl import ThreadpoolController
                importlib.import_module("scipy.linalg.cython_blas")   # load the BLAS numba calls
                self._controller = ThreadpoolController().select(user_api="blas")
            self._limiter = self._controller.limit(limits=1)
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            self._limiter.restore_original_limits()
        return False


one_blas_thread = _OneBlasThread()


# --------------------------------------------------------------------------
# average pooling (an exit head's input)
# --------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def avg_pool(x, factor, out):
    """out[b, i, j, c] = mean of the factor x factor block x[b, i*f:(i+1)*f, j*f:(j+1)*f, c].

    x: (N, H, W, C) with H and W multiples of factor; out: (N, H/f, W/f, C).
    Why: NumPy's ``reshape(...).mean(axis=(2, 4))`` walks a 6-d strided view and
    took about 30 ms for 2048 MNIST images, one pass over x with images shared
    between threads about 1 ms. Sums block rows in order, then divides by f*f.
    """
    n, ho, wo, c = out.shape
    scale = 1.0 / (factor * factor)
    for b in prange(n):
        for i in range(ho):
            for j in range(wo):
                for ch in range(c):
                    total = x[b, i * factor, j * factor, ch]
                    for u in range(factor):
                        for v in range(factor):
                            if u or v:
                                total += x[b, i * factor + u, j * factor + v, ch]
                    out[b, i, j, ch] = total * scale


# --------------------------------------------------------------------------
# ReLU's backward pass
# --------------------------------------------------------------------------

@njit(cache=True, parallel=True)
def relu_backward(out, dout):
    """dx = dout where out > 0, else 0, in one pass (flat, same-size contiguous arrays).

    ``np.where(out > 0, dout, 0)`` does the same in two passes and a boolean
    temporary; on a (128, 28, 28, 32) batch that costs about twice the time.
    """
    dx = np.empty_like(dout)
    for i in prange(out.size):
        dx[i] = dout[i] if out[i] > 0 else 0.0
    return dx

