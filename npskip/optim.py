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
"""

import numpy as np


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
                v *= self.rho
                v += (1 - self.rho) * (g * g)
                # An element with g == 0 moves by exactly 0: w - 0.0 == w, bit for bit.
                w -= (self.lr * g) / np.sqrt(v + self.eps)

    def state_for(self, layer):
        """The running averages of one layer, by parameter name (empty before its first step)."""
        return {k: self.state[id(w)] for k, w in layer.params.items() if id(w) in self.state}
