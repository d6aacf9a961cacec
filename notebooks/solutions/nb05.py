"""Reference solutions for the exercises of notebook 5. Try them yourself first."""

import numpy as np

from npskip.engine.losses import softmax_cross_entropy


def route_multiply_adds(input_shape, widths, num_classes, route):
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


def routed_train_step(model, optimizer, xb, yb, routes):
    """One step in which each image runs only its route's layers, and only the layers
    that ran are updated. Returns the batch's loss.

    The routes go to forward, so no image enters a layer past its route; the optimizer
    gets model.ran_layers(), so a layer nobody reached keeps its weights and its
    RMSprop running average (a zero gradient would still decay that average).
    """
    loss, dlogits = softmax_cross_entropy(model.forward(xb, routes), yb)
    model.backward(dlogits)
    optimizer.step(model.ran_layers())
    return loss
