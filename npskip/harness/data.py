"""The data sets: where they come from, how they are checked, and how they are read.

    ds = load("mnist")                     # fetched on first use, verified every time
    ds.x_train  (60000, 28, 28, 1) uint8   ds.y_train (60000,) int64
    x_tr, y_tr, x_val, y_val = ds.validation_split(0.1, seed=0)
    x = as_float32(x_tr)                   # float32 in [0, 1]

MNIST and Fashion-MNIST are IDX files (big-endian header, then raw bytes).
CIFAR-100 is read from its *binary* version: fixed 3074-byte records, no
pickle. Every parser checks what it reads and names the file when it is wrong.

Files live under ``<data dir>/<data set>/<canonical name>``, the same layout as
a mirror; the data dir is $NPSKIP_DATA or a per-user cache folder.
"""

import gzip
import hashlib
import os
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npskip.harness.download import (DataError, WriteError, default_data_dir, fetch_file, mirror_base,
                       safe_extract)

MNIST_URLS = [
    "https://yann.lecun.com/exdb/mnist/",                  # the original; often answers 403
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
]
FASHION_URLS = [
    "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
    "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/data/fashion/",
]
CIFAR_URLS = ["https://www.cs.toronto.edu/~kriz/"]

IDX_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
             "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")

DATASETS = {
    "mnist": {
        "urls": MNIST_URLS,
        "files": dict(zip(IDX_FILES, [
            {"sha256_gunzip": "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"},
            {"sha256_gunzip": "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"},
            {"sha256_gunzip": "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"},
            {"sha256_gunzip": "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"},
        ])),
        "class_names": [str(i) for i in range(10)],
        "shape": (28, 28, 1),
    },
    "fashion-mnist": {
        "urls": FASHION_URLS,
        "files": dict(zip(IDX_FILES, [
            {"sha256_gunzip": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888"},
            {"sha256_gunzip": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9"},
            {"sha256_gunzip": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b"},
            {"sha256_gunzip": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34"},
        ])),
        "class_names": ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                        "Shirt", "Sneaker", "Bag", "Ankle boot"],
        "shape": (28, 28, 1),
    },
    "cifar100": {
        "urls": CIFAR_URLS,
        "files": {"cifar-100-binary.tar.gz": {"md5": "03b5dce01913d631647c71ecec9e9cb8",
                                              "size": 168_513_733}},
        "shape": (32, 32, 3),
    },
}

CIFAR_MEMBERS = ["cifar-100-binary/train.bin", "cifar-100-binary/test.bin",
                 "cifar-100-binary/fine_label_names.txt",
                 "cifar-100-binary/coarse_label_names.txt"]
CIFAR_RECORD = 1 + 1 + 3 * 32 * 32      # coarse label, fine label, R, G, B planes


def _check_name(name):
    if name not in DATASETS:
        raise ValueError(f"unknown data set {name!r}; expected one of {sorted(DATASETS)}")


def fetch(name, data_dir=None, mirror=None):
    """Download (if needed) and verify every file of a data set; unpack CIFAR-100.

    mirror: a base URL or folder whose ``<name>/`` subfolder holds the files
        (default $NPSKIP_MIRROR; when neither is set, the canonical sites).
    Returns a list of (path, downloaded: bool).
    """
    _check_name(name)
    spec = DATASETS[name]
    dest = Path(data_dir or default_data_dir()).expanduser() / name
    given = "--mirror" if mirror else "$NPSKIP_MIRROR"
    mirror = mirror or os.environ.get("NPSKIP_MIRROR")
    urls = [mirror_base(mirror) + name + "/"] if mirror else spec["urls"]
    results = []
    for fname, fspec in spec["files"].items():
        try:
            results.append(fetch_file(fname, fspec, urls, dest))
        except WriteError:
            raise                       # a local folder problem: a mirror would not help
        except DataError as e:
            raise DataError(f"{e}\n" + (mirror_advice(mirror, given, name, fname) if mirror
                                        else no_mirror_advice(name, fname))) from None
    if name == "cifar100":
        folder = dest / "cifar-100-binary"
        downloaded = results[0][1]
        if downloaded or not all((dest / m).exists() for m in CIFAR_MEMBERS):
            safe_extract(dest / "cifar-100-binary.tar.gz", CIFAR_MEMBERS, dest)
        results += [(folder / Path(m).name, downloaded) for m in CIFAR_MEMBERS]
    return results


def mirror_advice(mirror, given, name, fname):
    """What to do when the mirror the user gave (``given``: the option or the variable
    that named it) lacks a file or holds a bad copy of it."""
    return (f"The mirror given ({given} {mirror}) lacks {name}/{fname} or holds a bad copy of "
            f"it (the lines above say which): put the data set's own file at "
            f"{mirror_base(mirror)}{name}/{fname}, or choose another mirror, or leave "
            f"{given} out to fetch from the data set's sites.")


def no_mirror_advice(name, fname):
    return (f"If this machine is offline or these sites are down, use a mirror: python "
            f"data_fetch.py {name} --mirror URL (or set NPSKIP_MIRROR), where URL/{name}/{fname} "
            f"exists; file:// URLs and plain folders work.")


# --------------------------------------------------------------------------
# parsers
# --------------------------------------------------------------------------

IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path, sha256=None):
    """Read a (gzip-compressed or raw) IDX file into an array.

    Format: two zero bytes, a dtype code, the number of dimensions, then one
    big-endian uint32 per dimension, then the data in C order. Checks the magic
    number, the dtype code, the dimensions and the exact file length, and the
    SHA-256 of the uncompressed bytes when ``sha256`` is given.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        if raw[:2] == b"\x1f\x8b":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: cannot read or decompress ({e})") from None
    if sha256 is not None and hashlib.sha256(raw).hexdigest() != sha256:
        raise DataError(f"{path}: SHA-256 of the content is {hashlib.sha256(raw).hexdigest()}, "
                        f"expected {sha256}")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(f"{path}: not an IDX file (magic number should start with two zero "
                        f"bytes, found {raw[:4].hex() or 'nothing'})")
    code, ndim = raw[2], raw[3]
    if code not in IDX_DTYPES:
        raise DataError(f"{path}: unknown IDX dtype code 0x{code:02x}")
    if ndim == 0 or len(raw) < 4 + 4 * ndim:
        raise DataError(f"{path}: header truncated ({len(raw)} bytes for {ndim} dimensions)")
    dims = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = 4 + 4 * ndim + int(np.prod(dims)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes, but the header's dimensions {dims} "
                        f"need {expected} (file truncated or corrupt)")
    return np.frombuffer(raw, dtype=dtype, offset=4 + 4 * ndim).reshape(dims).astype(
        dtype.newbyteorder("="))


def read_cifar_bin(path, label="fine"):
    """Read a CIFAR-100 binary file: returns (images (N, 32, 32, 3) uint8, labels (N,) int64).

    Each 3074-byte record: coarse label (0..19), fine label (0..99), then 1024
    red, 1024 green and 1024 blue bytes, each plane a 32x32 image, row-major.
    """
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % CIFAR_RECORD:
        raise DataError(f"{path}: {raw.size} bytes is not a whole number of "
                        f"{CIFAR_RECORD}-byte CIFAR-100 records")
    records = raw.reshape(-1, CIFAR_RECORD)
    coarse, fine = records[:, 0], records[:, 1]
    if coarse.max() >= 20:
        raise DataError(f"{path}: coarse label {coarse.max()} out of range 0..19")
    if fine.max() >= 100:
        raise DataError(f"{path}: fine label {fine.max()} out of range 0..99")
    images = records[:, 2:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).copy()
    labels = fine if label == "fine" else coarse
    return images, labels.astype(np.int64)


# --------------------------------------------------------------------------
# the loaded data set
# --------------------------------------------------------------------------

@dataclass
class Dataset:
    """A loaded data set. Images are uint8 NHWC; labels are int64 class indices."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def input_shape(self):
        """(H, W, C) of one image."""
        return tuple(self.x_train.shape[1:])

    def validation_split(self, fraction=0.1, seed=0):
        """Hold out a seeded random ``fraction`` of the training set.

        Returns (x_train, y_train, x_val, y_val); the same seed gives the same split.
        """
        if not 0 <= fraction < 1:
            raise ValueError(f"fraction: expected 0 <= fraction < 1, received {fraction}")
        n = len(self.y_train)
        order = np.random.default_rng(seed).permutation(n)
        n_val = int(round(n * fraction))
        tr, val = np.sort(order[n_val:]), np.sort(order[:n_val])
        return self.x_train[tr], self.y_train[tr], self.x_train[val], self.y_train[val]


def as_float32(x):
    """uint8 images -> float32 in [0, 1] (a new array)."""
    if x.dtype != np.uint8:
        raise ValueError(f"as_float32: expected uint8 images, received {x.dtype}")
    return x.astype(np.float32) / np.float32(255)


def load(name, data_dir=None, label="fine", download=True, mirror=None):
    """Load a data set, fetching it first if it is not on disk yet.

    name: "mnist", "fashion-mnist" or "cifar100".
    label: for CIFAR-100, "fine" (100 classes, default) or "coarse" (20).
    download: if False, a missing data set raises DataError naming the command to run.
    """
    _check_name(name)
    if label not in ("fine", "coarse"):
        raise ValueError(f"label: expected 'fine' or 'coarse', received {label!r}")
    dest = Path(data_dir or default_data_dir()).expanduser() / name
    needed = ([dest / m for m in CIFAR_MEMBERS] if name == "cifar100"
              else [dest / f for f in IDX_FILES])
    command = f"python data_fetch.py {name} --data-dir {dest.parent}" + (
        f" --mirror {mirror}" if mirror else "")
    if not all(p.exists() for p in needed):
        if not download:
            raise DataError(f"{name} is not in {dest.parent}; run: {command}"
                            + ("" if mirror else "  (add --mirror URL when offline)"))
        fetch(name, data_dir=dest.parent, mirror=mirror)
    try:
        return _read(name, dest, label)
    except DataError as e:
        # the files were verified when fetched: one that fails now was changed since
        way_out = (f"delete {dest / 'cifar-100-binary'} and rerun: it is unpacked again from "
                   f"the verified archive" if name == "cifar100" else
                   f"delete the file and rerun: it is fetched again (or run {command}, which "
                   f"keeps it as .bad)")
        raise DataError(f"{e}; {way_out}") from None


def _read(name, dest, label):
    """The Dataset parsed from the files of ``dest`` (a data set's folder)."""
    if name == "cifar100":
        folder = dest / "cifar-100-binary"
        x_train, y_train = read_cifar_bin(folder / "train.bin", label)
        x_test, y_test = read_cifar_bin(folder / "test.bin", label)
        names_file = folder / f"{label}_label_names.txt"
        class_names = [s for s in names_file.read_text().splitlines() if s.strip()]
        if len(class_names) <= max(y_train.max(), y_test.max()):
            raise DataError(f"{names_file}: {len(class_names)} names, but labels go up to "
                            f"{max(y_train.max(), y_test.max())}")
        return Dataset(name, x_train, y_train, x_test, y_test, class_names)
    files = DATASETS[name]["files"]
    arrays = [read_idx(dest / f, files[f]["sha256_gunzip"]) for f in IDX_FILES]
    x_train, y_train, x_test, y_test = arrays
    for x, y, split in ((x_train, y_train, "train"), (x_test, y_test, "t10k")):
        if x.ndim != 3 or len(x) != len(y) or y.ndim != 1:
            raise DataError(f"{dest}: {split} images {x.shape} and labels {y.shape} do not match")
        if y.max() >= 10:
            raise DataError(f"{dest}: {split} label {y.max()} out of range 0..9")
    return Dataset(name, x_train[..., None], y_train.astype(np.int64),
                   x_test[..., None], y_test.astype(np.int64), DATASETS[name]["class_names"])
