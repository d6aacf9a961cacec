"""Saving and loading models: one .npz per checkpoint, written atomically, never unpickled.

A checkpoint holds the weights (``conv1.W``, ``conv1.b``, ..., ``dense.b``), the
architecture as JSON (``architecture.json``, stored as UTF-8 bytes so that
``np.load(allow_pickle=False)`` can read it), optionally the RMSprop running
averages (``rmsprop.conv1.W``, ...) and any JSON-able ``extra`` (e.g. the
training history, to resume). ``fit_resumable`` trains with one such checkpoint
after every epoch and resumes from it.

It is written to a temporary file in the same folder, flushed to disk, and
renamed over the final name (``runfolder.atomic_write``), so a crash mid-save
leaves the old checkpoint.
"""

import json
from pathlib import Path

import numpy as np

from npskip.engine.model import SkipCNN
from npskip.engine.checks import check_int
from npskip.engine.optim import RMSprop
from npskip.engine.train import fit
from npskip.harness.runfolder import NPZ_ERRORS, atomic_write, record_changes


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


def _json_entry(arrays, key, path):
    try:
        return json.loads(arrays[key].tobytes())
    except (ValueError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: {key} is not valid JSON ({e})") from None


def _positive_ints(value, count=None):
    return (isinstance(value, list) and (count is None or len(value) == count) and len(value) > 0
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value))


def expected_shapes(config):
    """{"conv1.W": shape, ...} of the model an architecture dict describes, without building
    it: a checkpoint is checked against these before any weights are allocated."""
    h, w, c = config["input_shape"]
    widths, classes = config["widths"], config["num_classes"]
    shapes = {}
    for k, (cin, cout) in enumerate(zip([c] + widths[:-1], widths)):
        shapes[f"conv{k + 1}.W"], shapes[f"conv{k + 1}.b"] = (3, 3, cin, cout), (cout,)
    shapes["dense.W"], shapes["dense.b"] = (h * w * max(widths), classes), (classes,)
    return shapes


def load(path, with_optimizer=False):
    """Rebuild a SkipCNN from ``path``.

    Returns the model, or (model, optimizer or None, extra or None) when
    ``with_optimizer`` is True. Every entry is checked against the architecture
    before the model is built (a file cannot make npskip allocate more than the
    weights it holds); anything missing, truncated or inconsistent raises
    CheckpointError, naming the file and what is wrong.
    """
    path = Path(path)
    arrays = _read(path)
    config = _architecture(arrays, path)
    dtype = np.dtype(config.get("dtype", "float32"))
    _check_weights(arrays, expected_shapes(config), dtype, path)
    extra = _json_entry(arrays, "extra.json", path) if "extra.json" in arrays else None
    if extra is not None and not isinstance(extra, dict):
        raise CheckpointError(f"{path}: extra.json holds {type(extra).__name__}, expected an "
                              f"object")
    optimizer = None
    if with_optimizer and "rmsprop.json" in arrays:
        settings = _json_entry(arrays, "rmsprop.json", path)
        try:
            optimizer = RMSprop(**settings)
        except (TypeError, ValueError) as e:
            raise CheckpointError(f"{path}: unusable rmsprop.json {settings!r} ({e})") from None
    try:
        model = SkipCNN(config["input_shape"], config["num_classes"], config["widths"],
                        seed=config.get("seed", 0), dtype=dtype)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable architecture ({e})") from None
    for lname, layer in _named_layers(model).items():
        for pname, value in layer.params.items():
            key = f"{lname}.{pname}"
            value[...] = arrays[key]
            if optimizer is not None and f"rmsprop.{key}" in arrays:
                optimizer.state[id(value)] = arrays[f"rmsprop.{key}"].copy()
    return (model, optimizer, extra) if with_optimizer else model


def _read(path):
    """Every entry of the .npz at ``path`` (never unpickled), or CheckpointError."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except NPZ_ERRORS as e:
        raise CheckpointError(f"{path}: truncated or not an npskip checkpoint ({e})") from None


def _architecture(arrays, path):
    """The architecture.json entry, checked: input_shape, num_classes, widths, dtype."""
    if "architecture.json" not in arrays:
        raise CheckpointError(f"{path}: no architecture.json entry; not an npskip checkpoint")
    config = _json_entry(arrays, "architecture.json", path)
    if not (isinstance(config, dict) and _positive_ints(config.get("input_shape"), 3)
            and _positive_ints([config.get("num_classes")]) and _positive_ints(config.get("widths"))
            and config.get("dtype", "float32") in ("float32", "float64")):
        raise CheckpointError(f"{path}: unreadable architecture {config!r}: expected input_shape "
                              f"(3 positive ints), num_classes, widths (positive ints), dtype "
                              f"float32 or float64")
    return config


def _check_weights(arrays, shapes, dtype, path):
    """Every weight, and its RMSprop average if saved, has the shape and dtype it needs."""
    for key, shape in shapes.items():
        if key not in arrays:
            raise CheckpointError(f"{path}: missing {key}")
        got = arrays[key]
        if got.shape != shape or got.dtype != dtype:
            raise CheckpointError(f"{path}: {key} is {got.dtype} {got.shape}, but the "
                                  f"architecture needs {dtype} {shape}")
        state = arrays.get(f"rmsprop.{key}")
        if state is not None and (state.shape != shape or state.dtype != dtype):
            raise CheckpointError(f"{path}: rmsprop.{key} is {state.dtype} {state.shape}, but "
                                  f"{key} is {dtype} {shape}")


def fit_resumable(model, path, x, y, *, epochs, log=print, progress=True, made_from=None,
                  **fit_args):
    """fit() with a checkpoint (model, RMSprop state, history) after every epoch at ``path``.

    If ``path`` already holds a checkpoint, training resumes from it (the model
    passed in is then replaced by the saved one); a finished checkpoint trains
    no further. made_from: the record of what the training is built from
    ({"settings", "data_sha256", "inputs"}, see SeedRun.stage), saved in the
    checkpoint; a checkpoint whose record does not match is neither resumed nor
    used, but trained afresh, saying why. With progress=False, one log line per
    epoch replaces the bar. Returns (model, history).
    """
    path = Path(path)
    epochs = check_int("epochs", epochs, 1)
    optimizer, history = RMSprop(), None
    if path.exists():
        try:
            saved_model, saved, extra = load(path, with_optimizer=True)
        except CheckpointError as e:
            raise CheckpointError(f"{e}; delete it to train afresh") from None
        extra = extra or {}
        shape = {k: v for k, v in model.config().items() if k != "seed"}
        if made_from is not None and extra.get("made_from") != made_from:
            standard = isinstance(made_from, dict) and "settings" in made_from
            why = (record_changes(extra.get("made_from"), made_from) if standard else []) \
                or ["its record differs"]
            log(f"{path.name} was not made by this run ({'; '.join(why)}): training afresh")
        elif {k: v for k, v in saved_model.config().items() if k != "seed"} != shape:
            raise CheckpointError(
                f"{path}: holds {saved_model}, but this training needs {model}; delete it to "
                f"train afresh")
        elif len((extra.get("history") or {}).get("loss", [])) > epochs:
            raise CheckpointError(
                f"{path}: trained for {len(extra['history']['loss'])} epochs, more than the "
                f"{epochs} asked for; delete it to train afresh")
        else:
            model, optimizer, history = saved_model, saved or optimizer, extra.get("history")
            if history:
                log(f"resuming {path.name} after epoch {len(history['loss'])}")

    def on_epoch_end(epoch, h):
        save(path, model, optimizer, extra={"history": h, "made_from": made_from})
        if not progress:
            val = f", val_acc {h['val_accuracy'][-1]:.4f}" if h["val_accuracy"][-1] is not None else ""
            log(f"{path.stem} epoch {epoch + 1}/{epochs}: loss {h['loss'][-1]:.4f}, "
                f"acc {h['accuracy'][-1]:.4f}{val} ({h['seconds'][-1]:.0f} s)")

    history = fit(model, x, y, epochs=epochs, optimizer=optimizer, history=history,
                  on_epoch_end=on_epoch_end, progress=progress, **fit_args)
    return model, history
