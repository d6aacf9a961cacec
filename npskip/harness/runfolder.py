"""What a run folder records about itself, and the checks that keep it honest.

A seed folder (``runs/reproduce-mnist/seed0``, or the folder of ``npskip train``)
holds:

    settings.json   the settings that made it and the identity of its data (the
                    data set's published checksums and a SHA-256 of the very
                    images and labels the seed used)
    <stage>.json    a finished stage's results, with ``made_from``
    <name>.npz      a checkpoint or the arrays of a stage, with the same record
    .lock           locked (``flock``) by the one run working in the folder

``made_from``, in every stage file and checkpoint, says what made it: the seed
and the settings it depends on, the SHA-256 of the data, of every file it was
built from and (in a stage's JSON) of every file the stage wrote. A rerun with
other settings is refused, naming each setting that differs; a file whose record
does not match the run is redone (a checkpoint trained afresh), never resumed or
evaluated, and with it everything built from it. Only the names in
``SEED_FILES`` are npskip's: ``--fresh`` deletes those and nothing else. The
lock is the kernel's: it goes away with the process that held it, so a killed
run never leaves the folder stuck. Every file is written under a temporary name
and renamed (``atomic_write``), so an interruption leaves the old file whole.
"""

import errno
import fcntl
import hashlib
import json
import os
import re
import zipfile
import zlib
from pathlib import Path

import numpy as np

from npskip.harness.data import DATASETS

SETTINGS = "settings.json"
LOCK = ".lock"
RECORD = "made_from.json"            # the record's entry in an array file
# Every name npskip writes into a seed folder, and the only ones --fresh deletes.
PAPER_STAGES = ("cnn1", "ranking", "cnn2", "cnn3_paper", "routes", "cnn3_deploy", "controls",
                "efficiency")
STAGE_NAMES = PAPER_STAGES + ("exits", "exit_curve")
ARRAY_FILES = ("cnn1.npz", "ranking.npz", "cnn2.npz", "cnn3_paper.npz", "routes.npz",
               "cnn3_deploy.npz", "exits.npz")
SEED_FILES = (SETTINGS,) + tuple(f"{s}.json" for s in STAGE_NAMES) + ARRAY_FILES
_TEMPORARY = re.compile(r"\.(.+)\.\d+\.tmp")     # atomic_write's, left by a killed write


class RunFolderError(Exception):
    """A run folder was made by other settings, is in use, holds a broken file, or
    cannot be written."""


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


# --------------------------------------------------------------------------
# writing: whole or not at all, and a message with the way out when it fails
# --------------------------------------------------------------------------

def cannot_write(path, e):
    """A RunFolderError for OSError ``e`` met while writing ``path``, saying what to do."""
    if e.errno == errno.ENOSPC:
        why = ("the disk is full; free some space and rerun the same command (every file is "
               "written whole or not at all: finished stages are kept, and a training resumes "
               "at its last epoch)")
    elif isinstance(e, (NotADirectoryError, FileExistsError)):
        why = f"{e.strerror}: a file stands where a folder should be; choose a folder (--out DIR)"
    else:
        why = f"{e.strerror or e}; choose a folder you can write (--out DIR)"
    return RunFolderError(f"cannot write {path}: {why}")


def make_folder(path):
    """Create folder ``path`` (and its parents) if needed; RunFolderError if it cannot be."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise RunFolderError(f"{path} is a file, not a folder; choose a folder (--out DIR)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise cannot_write(path, e) from None
    return path


def atomic_write(path, write):
    """Call ``write(f)`` on a temporary file beside ``path``, flush it to disk, rename it
    over ``path``. A crash or an exception midway leaves any old ``path`` whole and no
    temporary file behind; a full disk or a folder that cannot be written raises
    RunFolderError saying so. Returns ``path``. (Every file npskip saves goes through here.)
    """
    path = Path(path)
    make_folder(path.parent)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        raise cannot_write(path, e) from e
    finally:
        tmp.unlink(missing_ok=True)
    return path


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


def save_arrays(path, made_from=None, **arrays):
    """Write arrays to an .npz atomically, with ``made_from`` (JSON) as its record."""
    if made_from is not None:
        text = json.dumps(made_from, default=_jsonable).encode()
        arrays[RECORD] = np.frombuffer(text, dtype=np.uint8)
    atomic_write(path, lambda f: np.savez(f, **arrays))


# --------------------------------------------------------------------------
# reading records, and saying how they differ
# --------------------------------------------------------------------------

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


# What reading a damaged .npz raises (a changed byte in zip's own records can surface
# as any of these).
NPZ_ERRORS = (OSError, ValueError, EOFError, KeyError, NotImplementedError,
              zipfile.BadZipFile, zlib.error)


def read_npz(path):
    """Every entry of the .npz at ``path`` as a dict, read whole (zip checks each entry's
    CRC, so a changed byte is caught) and never unpickled; RunFolderError naming the file
    if it is missing, truncated or damaged."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except NPZ_ERRORS as e:
        raise RunFolderError(f"{path}: missing, truncated or damaged ({e})") from None


def read_record(path):
    """The ``made_from`` record of a stage's .json, a checkpoint or an array file; None
    if it has none or cannot be read."""
    path = Path(path)
    try:
        if path.suffix == ".json":
            made = json.loads(path.read_text()).get("made_from")
        else:
            with np.load(path, allow_pickle=False) as f:
                if RECORD in f.files:
                    made = json.loads(f[RECORD].tobytes())
                else:
                    made = json.loads(f["extra.json"].tobytes()).get("made_from")
    except NPZ_ERRORS + (AttributeError,):
        return None
    return made if isinstance(made, dict) else None


def _show(value):
    return json.dumps(value) if not isinstance(value, str) else repr(value)


def differences(recorded, wanted, prefix="", where="in the folder"):
    """'name: recorded <where>, wanted now' for every leaf that differs between two dicts."""
    out = []
    for key in sorted(set(recorded) | set(wanted)):
        a, b = recorded.get(key, "(not recorded)"), wanted.get(key, "(not set)")
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, f"{prefix}{key}.", where)
        elif a != b:
            out.append(f"{prefix}{key}: {_show(a)} {where}, {_show(b)} now")
    return out


def record_changes(old, new, inputs=True):
    """Why a file's record ``old`` does not match the run's ``new``: phrases such as
    "seed is 0 now, 1 then"; [] if it matches. Records are {"settings", "data_sha256",
    "inputs"} (see SeedRun.stage); the settings compared are ``new``'s, so ``new`` may
    hold fewer than ``old``. inputs=False leaves the input files out."""
    was = old.get("settings") if isinstance(old, dict) else None
    if not isinstance(was, dict) or "data_sha256" not in old:
        return ["its record does not say which data, seed and settings made it (written by "
                "an older npskip, or not by npskip)"]
    out = [f"{k} is {_show(v)} now, " + (f"{_show(was[k])} then" if k in was else
                                          "not recorded then")
           for k, v in new["settings"].items() if was.get(k, ...) != v]
    if old["data_sha256"] != new["data_sha256"]:
        out.append("made from other images or labels")
    for f, digest in (new.get("inputs", {}) if inputs else {}).items():
        if not isinstance(old.get("inputs"), dict) or old["inputs"].get(f) != digest:
            out.append(f"{f}, which it is built from, changed since")
    return out


# --------------------------------------------------------------------------
# the folder's settings record
# --------------------------------------------------------------------------

FRESH_ADVICE = ("Use another folder (--out DIR), or start this one afresh with --fresh (in "
                "Python: SeedRun(..., fresh=True)), which deletes npskip's files in it "
                "(settings.json and the stages' .json and .npz) and nothing else.")
REBUILD_ADVICE = ("delete it and rerun the same command: npskip writes it again when the "
                  "records of the stage files prove they were made with this command's data, "
                  "seed and settings, and keeps those stages; or start afresh with --fresh")


def check_settings(folder, record, fresh=False, log=print):
    """Compare ``record`` with the folder's settings.json, or write it into a new folder.

    record: {"settings": {...}, "data": {...}} (seed included in settings).
    fresh: delete npskip's files in the folder first (SEED_FILES; nothing else) and
    say which. A folder without settings.json keeps its npskip files if every one
    records this data, seed and settings, and gets settings.json again.
    Raises RunFolderError naming every differing setting, or every file whose
    record does not match.
    """
    folder = Path(folder)
    path = folder / SETTINGS
    if fresh:
        deleted = wipe(folder)
        if deleted:
            log(f"starting {folder} afresh: deleted {', '.join(deleted)}")
    if path.exists():
        old = read_json(path, REBUILD_ADVICE)
        diff = differences(old.get("settings", {}), record["settings"]) + differences(
            old.get("data", {}), record["data"], "data: ")
        if diff:
            raise RunFolderError(f"{folder} was made with other settings:\n  "
                                 + "\n  ".join(diff) + "\n" + FRESH_ADVICE)
        return
    kept = _adopt(folder, record)
    if kept:
        log(f"{folder}: no {SETTINGS}, but the records of its files ({', '.join(kept)}) "
            f"show this data, seed and settings made them: kept, and {SETTINGS} written again")
    write_json(path, record)


def _adopt(folder, record):
    """The names of npskip's files in a folder without settings.json, if every one
    records ``record``'s data, seed and settings; else RunFolderError naming those
    that do not."""
    names = [p.name for p in npskip_files(folder) if p.name != SETTINGS
             and not _TEMPORARY.fullmatch(p.name)]
    now = {"settings": record["settings"], "data_sha256": record["data"]["arrays_sha256"]}
    problems = []
    for name in names:
        made = read_record(folder / name)
        # settings the file does not depend on are not asked of it
        wanted = {**now, "settings": {k: v for k, v in now["settings"].items()
                                      if k in ((made or {}).get("settings") or {})}}
        why = record_changes(made, wanted, inputs=False)
        if why:
            problems.append(f"{name}: " + "; ".join(why))
    if problems:
        raise RunFolderError(f"{folder} has no {SETTINGS}, and not every npskip file in it was "
                             f"made by this run:\n  " + "\n  ".join(problems) + "\n"
                             + FRESH_ADVICE)
    return names


def is_seed_file(name):
    """True for the names npskip writes into a seed folder (and their temporary files)."""
    m = _TEMPORARY.fullmatch(name)
    return name in SEED_FILES or bool(m and m.group(1) in SEED_FILES)


def npskip_files(folder, owns=is_seed_file):
    """The files of ``folder`` that npskip writes (``owns(name)``), sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_file() and owns(p.name)),
                  key=lambda p: p.name)


def wipe(folder, owns=is_seed_file):
    """Delete npskip's files in ``folder`` (nothing else); returns their names."""
    deleted = []
    for p in npskip_files(folder, owns):
        p.unlink()
        deleted.append(p.name)
    return deleted


def probe(folder, wait=False, hint=""):
    """Say now, before any work, if ``folder`` is a file, cannot be written or is in use
    by another run (RunFolderError; ``hint`` is added to the last). Leaves behind none
    of the folders or the lock file it had to create: a command that stops later (the
    data cannot be fetched, say) leaves no empty folder."""
    folder = Path(folder)
    created = [p for p in (folder, *folder.parents) if not p.exists()]   # deepest first
    with FolderLock(folder, wait, hint):
        if created:                 # a folder this call made: nobody else uses its lock
            (folder / LOCK).unlink()
    for p in created:
        try:
            p.rmdir()
        except OSError:             # another command filled it meanwhile: it stays
            break


class FolderLock:
    """An exclusive lock on ``folder/.lock``, taken without waiting.

    Re-entrant within one object (stages take it, and the command holds it around
    all of them). ``flock`` locks belong to the open file, so the kernel drops them
    when the process ends, however it ends.
    """

    def __init__(self, folder, wait=False, hint=""):
        self.path, self.wait, self.hint = Path(folder) / LOCK, wait, hint
        self._fd, self._depth = None, 0

    def __enter__(self):
        if self._depth == 0:
            make_folder(self.path.parent)
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise cannot_write(self.path, e) from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if self.wait else fcntl.LOCK_NB))
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunFolderError(
                    f"{self.path.parent} is in use by another npskip run (process {holder}); "
                    f"wait for it to finish, or use another folder (--out DIR)."
                    + (f" {self.hint}" if self.hint else "")) from None
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
