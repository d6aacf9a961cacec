"""Input validation shared by the layers, the loss and the training loop.

Every check raises ``ValueError`` with a message that names what was expected
and what was received, because "shapes (128, 28, 28) and (3, 3, 1, 16) not
aligned" from deep inside NumPy tells a learner nothing about which layer was
fed the wrong thing.
"""

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_array(x, name, ndim=None, last_dim=None, dtype=None):
    """Check that ``x`` is an ndarray of the given rank, last axis and dtype.

    ``ndim``, ``last_dim`` and ``dtype`` may each be None (not checked).
    ``dtype`` is a NumPy dtype, or the string "float" for float32/float64.
    Returns ``x`` unchanged.
    """
    if not isinstance(x, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array, received {type(x).__name__}")
    if ndim is not None and x.ndim != ndim:
        raise ValueError(
            f"{name}: expected a {ndim}-d array{_shape_hint(ndim, last_dim)}, "
            f"received shape {x.shape}"
        )
    if last_dim is not None and x.shape[-1] != last_dim:
        raise ValueError(
            f"{name}: expected shape{_shape_hint(x.ndim, last_dim)}, received shape {x.shape}"
        )
    if dtype == "float":
        if x.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{name}: expected float32 or float64, received {x.dtype}")
    elif dtype is not None and x.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {np.dtype(dtype)}, received {x.dtype}")
    return x


def check_finite(x, name):
    """Raise ``FloatingPointError`` if ``x`` holds a NaN or an infinity."""
    if not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise FloatingPointError(
            f"{name}: expected finite values, found {bad} NaN or infinite value(s)"
        )
    return x


def _shape_hint(ndim, last_dim):
    if ndim is None:
        return ""
    dims = ["N"] + ["?"] * (ndim - 1)
    if last_dim is not None:
        dims[-1] = str(last_dim)
    if ndim == 4:
        dims[1:3] = ["H", "W"]
    return " (" + ", ".join(dims) + ")"


class ConfigError(ValueError):
    """A setting out of its range: names the setting, the value and what is allowed."""

    def __init__(self, name, value, expected):
        self.name, self.value, self.expected = name, value, expected
        super().__init__(f"{name}: expected {expected}, received {value!r}")


def is_int(v):
    """True for Python and NumPy integers, False for bools (True is not an epoch count)."""
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_int(name, value, low, high=None):
    """``value`` as an int in low..high (high None: no upper bound), else ConfigError."""
    if not is_int(value) or value < low or (high is not None and value > high):
        raise ConfigError(name, value, f"an integer >= {low}" if high is None
                          else f"an integer in {low}..{high}")
    return int(value)
