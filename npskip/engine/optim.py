"""RMSprop with the semantics of Keras 3, the paper's toolkit.

For each parameter w with gradient g:

    v = rho * v + (1 - rho) * g**2
    w = w - lr * g / sqrt(v + eps)

Epsilon sits inside the square root (Keras); PyTorch adds it outside,
``sqrt(v) + eps``. With eps = 1e-7 the two differ tenfold for tiny gradients:
sqrt(1e-7) ~ 3e-4 against 1e-7.

``step(layers)`` updates exactly the layers it is given. The model passes only
the layers that ran in the last forward pass, so a layer that every sample
skipped is not touched at all: weights and the running average ``v`` stay
bit-identical ("the weights ... were left untouched", section 3 of the paper).

The update runs as one numba pass per parameter (``rmsprop_update``); its plain
twin ``rmsprop_update_plain`` is the same rule in NumPy, and the tests check
that the two agree bit for bit.
"""

import numba
import numpy as np
from numba import njit, prange


@njit(cache=True)
def rmsprop_update(w, g, v, lr, rho, one_minus_rho, eps, start, stop):
    """One RMSprop step in place for elements [start, stop).

    w, g, v: flat (P,) arrays of one dtype; lr, rho, one_minus_rho, eps: scalars of
    that dtype, so that every operation rounds as NumPy's float32 arithmetic does.
    Why fast: NumPy's form makes five passes over the parameter and three
    temporaries the size of it; here each element is read and written once
    (2x faster on 3.3 M float32 weights, measured on the build machine).
    Arguments are passed explicitly: numba's dispatch of omitted defaults
    costs about 0.1 ms a call, more than a small parameter's whole update.
    """
    for i in range(start, stop):
        gi = g[i]
        vi = rho * v[i] + one_minus_rho * (gi * gi)
        v[i] = vi
        # gi == 0 moves w by exactly 0: w - 0.0 == w, bit for bit.
        w[i] -= (lr * gi) / np.sqrt(vi + eps)


@njit(cache=True, parallel=True)
def rmsprop_update_parallel(w, g, v, lr, rho, one_minus_rho, eps, threads):
    """``rmsprop_update`` with the elements shared out in blocks between ``threads`` threads.

    Only worth it for large parameters: waking the threads costs more than a
    small parameter's whole update. On CIFAR-shaped CNN1 (3.3 M dense weights)
    the fused update took the optimizer from about 32 ms to 9 ms a step on the
    build machine (2 cores, shared and loaded at the time).
    """
    n = w.size
    for t in prange(threads):
        rmsprop_update(w, g, v, lr, rho, one_minus_rho, eps, t * n // threads,
                       (t + 1) * n // threads)


PARALLEL_FROM = 1 << 20    # elements; below this one thread does the whole update


def rmsprop_update_plain(w, g, v, lr, rho, eps):
    """The same step as ``rmsprop_update`` in NumPy: the rule as written above."""
    v *= rho
    v += (1 - rho) * (g * g)
    w -= (lr * g) / np.sqrt(v + eps)


class RMSprop:
    """RMSprop(lr=1e-3, rho=0.9, eps=1e-7), Keras' defaults."""

    def __init__(self, lr=1e-3, rho=0.9, eps=1e-7):
        if lr <= 0 or not 0 <= rho < 1 or eps <= 0:
            raise ValueError(f"RMSprop: expected lr > 0, 0 <= rho < 1, eps > 0; "
                             f"received lr={lr}, rho={rho}, eps={eps}")
        self.lr, self.rho, self.eps = lr, rho, eps
        # Running averages of g**2, one per parameter array, keyed by the
        # array's identity (parameters are updated in place, so it is stable).
        self.state = {}

    def step(self, layers):
        """Update every parameter of ``layers`` in place from its ``grads`` entry."""
        for layer in layers:
            for name, w in layer.params.items():
                g = layer.grads[name]
                v = self.state.get(id(w))
                if v is None:
                    v = self.state[id(w)] = np.zeros_like(w)
                if not (w.flags.c_contiguous and g.flags.c_contiguous and v.flags.c_contiguous
                        and w.dtype == g.dtype == v.dtype):
                    # the flat views below would be copies, and the update would be lost
                    rmsprop_update_plain(w, g, v, self.lr, self.rho, self.eps)
                    continue
                f = w.dtype.type       # scalars in the parameter's precision, as NumPy would
                args = (w.reshape(-1), g.reshape(-1), v.reshape(-1), f(self.lr), f(self.rho),
                        f(1 - self.rho), f(self.eps))
                if w.size >= PARALLEL_FROM:
                    rmsprop_update_parallel(*args, numba.get_num_threads())
                else:
                    rmsprop_update(*args, 0, w.size)

    def state_for(self, layer):
        """The running averages of one layer, by parameter name (empty before its first step)."""
        return {k: self.state[id(w)] for k, w in layer.params.items() if id(w) in self.state}
