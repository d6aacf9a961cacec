"""npskip: layer skipping in CNNs, from scratch in NumPy and numba.

A reproduction of "Systematic Model Complexity Reduction by Elimination of
Irrelevant Layers in Convolutional Neural Networks" (Gadepally, Dhal,
Kalafatis, Nowka). See README.md for a map of the package.
"""

__version__ = "0.1.0"
