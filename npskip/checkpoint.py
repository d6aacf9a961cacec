"""Saving and loading models: one .npz per checkpoint, written atomically, never unpickled.

A checkpoint holds the weights (``conv1.W``, ``conv1.b``, ..., ``dense.b``), the
architecture as JSON (``architecture.json``, stored as UTF-8 bytes so that
``np.load(allow_pickle=False)`` can read it), optionally the RMSprop running
averages (``rmsprop.conv1.W``, ...) and any JSON-able ``extra`` (e.g. the
training history, to resume).

It is written to a temporary file in the same folder, flushed to disk, and
renamed over the final name, so a crash mid-save leaves the old checkpoint.
"""

import json
import os
import zipfile
from pathlib import Path

import numpy as np

from .model import SkipCNN
from .optim import RMSprop


class CheckpointError(Exception):
    """A checkpoint is missing, truncated, or does not match its architecture."""


def _named_layers(model):
    return {f"conv{k + 1}": conv for k, conv in enumerate(model.convs)} | {"dense": model.dense}


def _json_bytes(obj):
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8)


def save(path, model, optimizer=None, extra=None):
    """Write ``model`` (and RMSprop state, and ``extra``) to ``path`` (.npz) atomically."""
    arrays = {"architecture.json": _json_bytes(model.config())}
    if extra is not None:
        arrays["extra.json"] = _json_bytes(extra)
    for lname, layer in _named_layers(model).items():
        for pname, value in layer.params.items():
            arrays[f"{lname}.{pname}"] = value
        if optimizer is not None:
            for pname, v in optimizer.state_for(layer).items():
                arrays[f"rmsprop.{lname}.{pname}"] = v
    if optimizer is not None:
        arrays["rmsprop.json"] = _json_bytes({"lr": optimizer.lr, "rho": optimizer.rho,
                                              "eps": optimizer.eps})
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def atomic_write(path, write):
    """Call ``write(f)`` on a temporary file beside ``path``, flush it to disk, rename it
    over ``path``. A crash or an exception midway leaves any old ``path`` whole and no
    temporary file behind. Returns ``path``. (Every file npskip saves goes through here.)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def load(path, with_optimizer=False):
    """Rebuild a SkipCNN from ``path``.

    Returns the model, or (model, optimizer or None, extra or None) when
    ``with_optimizer`` is True. Raises CheckpointError for a missing, truncated
    or inconsistent file, naming the file and what is wrong.
    """
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except (zipfile.BadZipFile, ValueError, EOFError, OSError) as e:
        raise CheckpointError(f"{path}: truncated or not an npskip checkpoint ({e})") from None
    if "architecture.json" not in arrays:
        raise CheckpointError(f"{path}: no architecture.json entry; not an npskip checkpoint")
    try:
        config = json.loads(arrays["architecture.json"].tobytes())
        model = SkipCNN(config["input_shape"], config["num_classes"], config["widths"],
                        seed=config.get("seed", 0), dtype=config.get("dtype", "float32"))
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable architecture ({e})") from None
    optimizer = None
    if with_optimizer and "rmsprop.json" in arrays:
        optimizer = RMSprop(**json.loads(arrays["rmsprop.json"].tobytes()))
    for lname, layer in _named_layers(model).items():
        for pname, value in layer.params.items():
            key = f"{lname}.{pname}"
            if key not in arrays:
                raise CheckpointError(f"{path}: missing {key}")
            got = arrays[key]
            if got.shape != value.shape or got.dtype != value.dtype:
                raise CheckpointError(f"{path}: {key} is {got.dtype} {got.shape}, but the "
                                      f"architecture needs {value.dtype} {value.shape}")
            value[...] = got
            if optimizer is not None and f"rmsprop.{key}" in arrays:
                optimizer.state[id(value)] = arrays[f"rmsprop.{key}"].copy()
    if not with_optimizer:
        return model
    extra = json.loads(arrays["extra.json"].tobytes()) if "extra.json" in arrays else None
    return model, optimizer, extra
