"""npskip: layer skipping in CNNs, from scratch in NumPy and numba.

A reproduction of "Systematic Model Complexity Reduction by Elimination of
Irrelevant Layers in Convolutional Neural Networks" (Gadepally, Dhal,
Kalafatis, Nowka). See README.md for a map of the package.
"""

import os

# numba's parallel kernels (the convolution, the dense layer's products) run between BLAS
# calls. OpenMP's threads spin for a while after each parallel loop and steal
# the cores from the BLAS call that follows; the workqueue layer does not spin.
# A user's own NUMBA_THREADING_LAYER wins.
if "NUMBA_THREADING_LAYER" not in os.environ:
    import numba

    numba.config.THREADING_LAYER = "workqueue"

__version__ = "0.1.0"
