"""The peers npskip is timed against: PyTorch's CPU build, and a plain-NumPy im2col.

Both build exactly CNN1 (3x3 same convolutions, ReLU, one dense layer, RMSprop
with Keras' epsilon placement for npskip and PyTorch's own for torch), so that a
ratio of images per second compares implementations, not networks.
"""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from npskip.engine.layers import Conv2D
from npskip.engine.model import SkipCNN


class NumpyConv2D(Conv2D):
    """Conv2D (3x3-style, stride 1, 'same') whose im2col/col2im are plain NumPy, no numba.

    im2col: a strided window view of the padded input, copied into rows.
    col2im: one sliced ``+=`` per kernel offset (kh*kw of them).
    ReLU (activation="relu"): np.maximum after the product, its mask before the backward ones.
    """

    def forward(self, x):
        kh, kw = self.kernel_size
        n, h, w, c = x.shape
        xp = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
        windows = sliding_window_view(xp, (kh, kw), axis=(1, 2))   # (N, H, W, C, kh, kw)
        cols = windows.transpose(0, 1, 2, 4, 5, 3).reshape(n * h * w, kh * kw * c)
        out = cols @ self.params["W"].reshape(-1, self.out_channels) + self.params["b"]
        if self.activation == "relu":
            out = np.maximum(out, 0)
        self.cache = (x.shape, cols, out)
        return out.reshape(n, h, w, self.out_channels)

    def backward(self, dout, need_dx=True):
        (n, h, w, c), cols, out = self._take_cache()
        kh, kw = self.kernel_size
        d = dout.reshape(-1, self.out_channels)
        if self.activation == "relu":
            d = np.where(out > 0, d, 0)
        w_mat = self.params["W"].reshape(-1, self.out_channels)
        self.grads["W"][...] = (cols.T @ d).reshape(self.grads["W"].shape)
        self.grads["b"][...] = d.sum(axis=0)
        if not need_dx:
            return None
        dcols = (d @ w_mat.T).reshape(n, h, w, kh, kw, c)
        dxp = np.zeros((n, h + kh - 1, w + kw - 1, c), dtype=dout.dtype)
        for i in range(kh):
            for j in range(kw):
                dxp[:, i:i + h, j:j + w, :] += dcols[:, :, :, i, j, :]
        return dxp[:, kh // 2:kh // 2 + h, kw // 2:kw // 2 + w, :]


def numpy_cnn(input_shape, num_classes, widths, seed=0):
    """SkipCNN with every convolution replaced by NumpyConv2D (same weights)."""
    model = SkipCNN(input_shape, num_classes, widths, seed=seed)
    for k, conv in enumerate(model.convs):
        twin = NumpyConv2D(conv.in_channels, conv.out_channels, 3, activation=conv.activation)
        for name in conv.params:
            twin.params[name][...] = conv.params[name]
        model.convs[k] = twin
    return model


def torch_cnn(input_shape, num_classes, widths):
    """CNN1 in PyTorch (NCHW), with its RMSprop at the same settings."""
    import torch
    from torch import nn

    h, w, c = input_shape
    layers, prev = [], c
    for width in widths:
        layers += [nn.Conv2d(prev, width, 3, padding=1), nn.ReLU()]
        prev = width
    model = nn.Sequential(*layers, nn.Flatten(), nn.Linear(h * w * prev, num_classes))
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
    return model, opt
