"""The plain twins: every computation of the engine, written the way the math reads.

Start reading npskip here. Each function is slow, short and obviously right; the
numba kernels in ``kernels.py`` compute the same thing fast, and the tests check
that the two agree. Layout is NHWC: images are ``(N, H, W, C)``.

A 2-D convolution is one matrix product once every receptive field is copied
out as a row ("image to columns"):

    x: (N, H, W, C)  --im2col-->  cols: (N*Ho*Wo, kh*kw*C)
    out = cols @ W.reshape(kh*kw*C, C_out)          # (N*Ho*Wo, C_out)

Row ``(n*Ho + oy)*Wo + ox`` holds the window whose top-left input pixel is
``(oy*stride - pad_top, ox*stride - pad_left)``; its columns run over the kernel
offset (i, j) and then the channel, matching W's (kh, kw, C_in) axes. col2im is
the adjoint: it adds every row back onto the pixels it was copied from, with
``+=`` because windows overlap.
"""

import math

import numpy as np


def conv_output_shape(h, w, kh, kw, stride, padding):
    """Output size and leading padding of a convolution: (Ho, Wo, pad_top, pad_left).

    padding="valid": Ho = floor((H - kh) / stride) + 1, no padding.
    padding="same":  Ho = ceil(H / stride); the total padding
        max((Ho - 1)*stride + kh - H, 0) is split with the smaller half on top
        (and on the left), as TensorFlow/Keras do.
    """
    if padding == "valid":
        ho, wo = (h - kh) // stride + 1, (w - kw) // stride + 1
        if ho < 1 or wo < 1:
            raise ValueError(f"input {h}x{w} is smaller than the {kh}x{kw} kernel with "
                             f"padding='valid'")
        return ho, wo, 0, 0
    if padding == "same":
        ho, wo = math.ceil(h / stride), math.ceil(w / stride)
        pad_h = max((ho - 1) * stride + kh - h, 0)
        pad_w = max((wo - 1) * stride + kw - w, 0)
        return ho, wo, pad_h // 2, pad_w // 2
    raise ValueError(f"padding: expected 'same' or 'valid', received {padding!r}")


def _padded_size(h, w, kh, kw, stride, padding):
    """(Ho, Wo, pad_top, pad_left, Hp, Wp): the output, and a zero-padded input big
    enough for every window."""
    ho, wo, pt, pl = conv_output_shape(h, w, kh, kw, stride, padding)
    return ho, wo, pt, pl, max((ho - 1) * stride + kh, h + pt), max((wo - 1) * stride + kw, w + pl)


def im2col(x, kh, kw, stride=1, padding="same"):
    """(N, H, W, C) -> (cols (N*Ho*Wo, kh*kw*C), Ho, Wo).

    One loop over the kernel offsets, not over the pixels: for offset (i, j), the
    pixel each output position sees is one strided slice of the padded image, so a
    3x3 kernel needs 9 slice copies.
    """
    n, h, w, c = x.shape
    ho, wo, pt, pl, hp, wp = _padded_size(h, w, kh, kw, stride, padding)
    xp = np.zeros((n, hp, wp, c), dtype=x.dtype)
    xp[:, pt:pt + h, pl:pl + w] = x
    cols = np.empty((n, ho, wo, kh, kw, c), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j, :] = xp[:, i:i + stride * (ho - 1) + 1:stride,
                                        j:j + stride * (wo - 1) + 1:stride]
    return cols.reshape(n * ho * wo, kh * kw * c), ho, wo


def col2im(dcols, x_shape, kh, kw, stride=1, padding="same"):
    """The adjoint of im2col: (N*Ho*Wo, kh*kw*C) -> (N, H, W, C).

    The same 9 slices, added back (``+=``: a pixel sits in several windows); what
    lands in the padding is dropped, since padding is not an input.
    """
    n, h, w, c = x_shape
    ho, wo, pt, pl, hp, wp = _padded_size(h, w, kh, kw, stride, padding)
    d = dcols.reshape(n, ho, wo, kh, kw, c)
    dxp = np.zeros((n, hp, wp, c), dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, i:i + stride * (ho - 1) + 1:stride,
                j:j + stride * (wo - 1) + 1:stride] += d[:, :, :, i, j, :]
    return dxp[:, pt:pt + h, pl:pl + w].copy()


def conv2d(x, W, b, stride=1, padding="same"):
    """Convolution by the definition, one output pixel at a time.

    x: (N, H, W, C_in); W: (kh, kw, C_in, C_out); b: (C_out,) -> (N, Ho, Wo, C_out).
    Like every deep-learning "convolution" this is a cross-correlation: the kernel
    is not flipped.
    """
    n, h, w, _ = x.shape
    kh, kw, _, c_out = W.shape
    ho, wo, pt, pl = conv_output_shape(h, w, kh, kw, stride, padding)
    out = np.zeros((n, ho, wo, c_out), dtype=np.result_type(x, W))
    for oy in range(ho):
        for ox in range(wo):
            for i in range(kh):
                for j in range(kw):
                    iy, ix = oy * stride - pt + i, ox * stride - pl + j
                    if 0 <= iy < h and 0 <= ix < w:
                        out[:, oy, ox, :] += x[:, iy, ix, :] @ W[i, j]
    return out + b


def conv2d_backward(x, W, b, dout, stride=1, padding="same", activation=None):
    """Backward pass of a convolution (and its fused ReLU), as plain matrix products.

    Forward, with K = kh*kw*C_in and P = N*Ho*Wo:

        cols = im2col(x)                    (P, K)       one row per output pixel
        z    = cols @ W_mat + b             (P, C_out)   W_mat = W.reshape(K, C_out)
        out  = max(z, 0) if activation == "relu" else z

    Backward, one line per line of the forward, last first (dout = dL/dout, read as
    P rows of C_out):

        g      = dout * [z > 0]  (ReLU),  else dout     (P, C_out)   max(z, 0) has slope 1 or 0
        db     = g summed over the P rows               (C_out,)     b is added to every row
        dW_mat = cols.T @ g                             (K, C_out)
        dcols  = g @ W_mat.T                            (P, K)
        dx     = col2im(dcols)                          (N, H, W, C_in)

    From z[p, c] = sum_k cols[p, k] W_mat[k, c]: dL/dW_mat[k, c] = sum_p cols[p, k] g[p, c]
    and dL/dcols[p, k] = sum_c g[p, c] W_mat[k, c]. A pixel copied into several rows
    gets the sum of their gradients: that is col2im. ReLU's slope at exactly 0 is
    taken as 0, as in the fast kernel.

    Returns (dx (N, H, W, C_in), dW (kh, kw, C_in, C_out), db (C_out,)).
    """
    if activation not in (None, "relu"):
        raise ValueError(f"activation: expected None or 'relu', received {activation!r}")
    kh, kw, c_in, c_out = W.shape
    cols, ho, wo = im2col(x, kh, kw, stride, padding)
    if dout.shape != (x.shape[0], ho, wo, c_out):
        raise ValueError(f"dout: expected shape {(x.shape[0], ho, wo, c_out)}, "
                         f"received {dout.shape}")
    w_mat = W.reshape(kh * kw * c_in, c_out)
    g = dout.reshape(-1, c_out)
    if activation == "relu":
        z = cols @ w_mat + b                      # recomputed: ReLU's mask needs it
        g = np.where(z > 0, g, 0.0)
    db = g.sum(axis=0)
    dw = (cols.T @ g).reshape(W.shape)
    dx = col2im(g @ w_mat.T, x.shape, kh, kw, stride, padding)
    return dx, dw, db


def relu_backward(out, dout):
    """The slope of max(x, 0) is 1 where the output is positive, else 0."""
    return np.where(out > 0, dout, 0).astype(dout.dtype)


def routed_dense(feats, W, b, dlogits):
    """The dense layer for a route that ends at a narrower conv layer, by the definition.

    The m samples of one route reach the dense layer with c channels; it expects
    C_max. The definition pads the missing channels with zeros (ResNet's "option
    A") and multiplies; SkipCNN never builds the padding but uses only the rows of
    W the real channels meet (W viewed as (H*W, C_max, classes), slice [:, :c]).
    They agree because a zero input adds nothing to the logits and gives its
    weights exactly zero gradient:

        padded  = feats zero-padded to C_max channels, flattened   (m, H*W*C_max)
        logits  = padded @ W + b                                   (m, classes)
        dW      = padded.T @ dlogits   (rows of padding channels: exactly 0)
        db      = dlogits summed over the m rows                   (classes,)
        dfeats  = (dlogits @ W.T) reshaped, padding channels dropped   (m, H, W, c)

    feats: (m, H, W, c), c <= C_max; W: (H*W*C_max, classes); b: (classes,);
    dlogits: (m, classes). Returns (logits, dfeats, dW, db).
    """
    m, h, w, c = feats.shape
    if W.shape[0] % (h * w) or W.shape[0] // (h * w) < c:
        raise ValueError(f"W: expected H*W*C_max rows with C_max >= {c} for {h}x{w} features, "
                         f"received {W.shape}")
    c_max = W.shape[0] // (h * w)
    padded = np.zeros((m, h, w, c_max), dtype=np.result_type(feats, W))
    padded[..., :c] = feats
    flat = padded.reshape(m, -1)
    logits = flat @ W + b
    dfeats = (dlogits @ W.T).reshape(m, h, w, c_max)[..., :c]
    return logits, dfeats, flat.T @ dlogits, dlogits.sum(axis=0)


def avg_pool(x, factor):
    """(N, H, W, C) -> (N, H/f, W/f, C): the mean of each f x f block (an exit head's input)."""
    n, h, w, c = x.shape
    return x.reshape(n, h // factor, factor, w // factor, factor, c).mean(axis=(2, 4))
