"""What a run folder records about itself, and the checks that keep it honest.

A seed folder (``runs/reproduce-mnist/seed0``, or the folder of ``npskip train``)
holds, besides the stage files:

    settings.json   the settings that made it and the identity of its data (the
                    data set's published checksums and a SHA-256 of the very
                    images and labels the seed used)
    <stage>.json    a finished stage's results, with ``made_from``: the SHA-256 of
                    every file it was built from and of every file it wrote
    .lock           locked (``flock``) by the one run working in the folder

A rerun with other settings is refused, naming each setting that differs; a
stage whose files no longer match its record is redone, and with it everything
built from it. The lock is the kernel's: it goes away with the process that
held it, so a killed run never leaves the folder stuck.
"""

import fcntl
import hashlib
import json
import os
from pathlib import Path

import numpy as np

from npskip.harness.checkpoint import atomic_write
from npskip.harness.data import DATASETS

SETTINGS = "settings.json"
LOCK = ".lock"


class RunFolderError(Exception):
    """A run folder was made by other settings, is in use, or holds a broken file."""


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_identity(dataset, arrays):
    """The data's identity: the data set's name and published checksums, and one
    SHA-256 over the given arrays (shape, dtype and bytes of each, in order)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(memoryview(a).cast("B"))
    files = DATASETS.get(dataset, {}).get("files", {})
    return {"dataset": dataset, "published_checksums": files, "arrays_sha256": h.hexdigest()}


def read_json(path, recover):
    """A JSON object from ``path``; anything else raises RunFolderError naming the file
    and ``recover`` (what to do about it)."""
    path = Path(path)
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise RunFolderError(f"{path}: truncated or not valid JSON ({e}); {recover}") from None
    if not isinstance(obj, dict):
        raise RunFolderError(f"{path}: expected a JSON object, found {type(obj).__name__}; "
                             f"{recover}")
    return obj


def _show(value):
    return json.dumps(value) if not isinstance(value, str) else repr(value)


def differences(recorded, wanted, prefix=""):
    """'name: recorded (now wanted)' for every leaf that differs between two dicts."""
    out = []
    for key in sorted(set(recorded) | set(wanted)):
        a, b = recorded.get(key, "(not recorded)"), wanted.get(key, "(not set)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {_show(a)} in the folder, {_show(b)} now")
    return out


FRESH_ADVICE = ("Use another folder (--out DIR), or start this one afresh with --fresh (in "
                "Python: SeedRun(..., fresh=True)), which deletes its stage files.")


def check_settings(folder, record, fresh=False):
    """Compare ``record`` with the folder's settings.json, or write it into a new folder.

    record: {"settings": {...}, "data": {...}} (seed included in settings).
    fresh: delete the folder's stage files first and start it afresh.
    Raises RunFolderError naming every differing setting, or a folder holding stage
    files but no record of what made them.
    """
    folder = Path(folder)
    path = folder / SETTINGS
    if fresh:
        wipe(folder)
    if path.exists():
        old = read_json(path, "delete the folder or start it afresh with --fresh")
        diff = differences(old.get("settings", {}), record["settings"]) + differences(
            old.get("data", {}), record["data"], "data: ")
        if diff:
            raise RunFolderError(f"{folder} was made with other settings:\n  "
                                 + "\n  ".join(diff) + "\n" + FRESH_ADVICE)
        return
    leftovers = sorted(p.name for p in stage_files(folder))
    if leftovers:
        raise RunFolderError(f"{folder} holds stage files ({', '.join(leftovers[:4])}"
                             f"{', ...' if len(leftovers) > 4 else ''}) but no {SETTINGS} saying "
                             f"what settings made them (an older npskip, or copied in). "
                             + FRESH_ADVICE)
    write_json(path, record)


def stage_files(folder):
    """The files npskip writes into a seed folder: stage .json and .npz, settings.json."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.is_file() and p.suffix in (".json", ".npz")]


def wipe(folder):
    """Delete a seed folder's stage files and settings record (nothing else)."""
    for p in stage_files(folder):
        p.unlink()


class FolderLock:
    """An exclusive lock on ``folder/.lock``, taken without waiting.

    Re-entrant within one object (stages take it, and the command holds it around
    all of them). ``flock`` locks belong to the open file, so the kernel drops them
    when the process ends, however it ends.
    """

    def __init__(self, folder, wait=False):
        self.path, self.wait = Path(folder) / LOCK, wait
        self._fd, self._depth = None, 0

    def __enter__(self):
        if self._depth == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunFolderError(
                    f"{self.path.parent} is in use by another npskip run (process {holder}); "
                    f"wait for it to finish, or use another folder (--out DIR). Seeds run side "
                    f"by side each need their own seed (--seeds 0 in one command, --seeds 1 in "
                    f"the other).") from None
            os.ftruncate(fd, 0)
            os.write(fd, str(os.getpid()).encode())
            self._fd = fd
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            os.close(self._fd)                 # closing the file releases the lock
            self._fd = None
        return False


def write_json(path, obj):
    """Write JSON atomically (temporary name, then rename). NaN and infinities are
    refused (ValueError naming the file): they are not JSON."""
    try:
        text = json.dumps(obj, indent=2, default=_jsonable, allow_nan=False).encode()
    except ValueError as e:
        raise ValueError(f"{path}: refusing to write a NaN or infinity ({e})") from None
    atomic_write(path, lambda f: f.write(text))


def _jsonable(o):
    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def save_arrays(path, **arrays):
    """Write arrays to an .npz atomically."""
    atomic_write(path, lambda f: np.savez(f, **arrays))
