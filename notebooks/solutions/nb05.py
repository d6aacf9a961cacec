"""Reference solutions for the exercises of notebook 5. Try them yourself first."""

import numpy as np


def route_flops(input_shape, widths, num_classes, route):
    """Multiply-adds per image on ``route``: conv 1..route+1, then the dense rows it meets.

    A 3x3 'same' convolution makes H * W * C_out outputs, each a sum of 3 * 3 * C_in
    products; the dense layer multiplies H * W * c features (c = the route's last
    width, not the widest) by num_classes columns.
    """
    h, w, c = input_shape
    ins = (c,) + tuple(widths[:-1])
    convs = sum(h * w * widths[k] * 3 * 3 * ins[k] for k in range(route + 1))
    return convs + h * w * widths[route] * num_classes


def dense_rows(h, w, c, max_width):
    """Rows of the dense W met by c real channels: pixel p's rows are p*max_width .. +c-1."""
    return (np.arange(h * w)[:, None] * max_width + np.arange(c)[None, :]).ravel()
