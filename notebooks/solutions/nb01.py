"""Reference solutions to the exercises of notebook 01. Try them yourself first."""

import numpy as np

from npskip.engine.reference import conv_output_shape


def col2im(dcols, x_shape, kh, kw, stride, padding):
    """Add each row of dcols back onto the pixels its window covers; drop the padding."""
    n, h, w, c = x_shape
    ho, wo, pt, pl = conv_output_shape(h, w, kh, kw, stride, padding)
    dx = np.zeros(x_shape, dtype=dcols.dtype)
    for b in range(n):
        for oy in range(ho):
            for ox in range(wo):
                window = dcols[(b * ho + oy) * wo + ox].reshape(kh, kw, c)
                for i in range(kh):
                    for j in range(kw):
                        iy, ix = oy * stride - pt + i, ox * stride - pl + j
                        if 0 <= iy < h and 0 <= ix < w:      # padding is not an input
                            dx[b, iy, ix] += window[i, j]
    return dx


def dense_backward(x, W, dout):
    """out = x @ W + b: dx = dout @ W.T, dW = x.T @ dout, db = dout summed over the batch."""
    return dout @ W.T, x.T @ dout, dout.sum(axis=0)


# (N, Ho, Wo, C_out): 'same' gives ceil(H / 2), 'valid' floor((H - 3) / 2) + 1.
OUTPUT_SHAPES = {"a": (5, 14, 14, 8), "b": (5, 13, 13, 8), "c": (1, 4, 4, 32)}
