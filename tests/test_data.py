"""Data: real MNIST / Fashion-MNIST through a file:// mirror, CIFAR-100 on
fixtures in the official binary layout, and every fault we could think of."""

import errno
import gzip
import hashlib
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest

from npskip.harness import data

from npskip.harness import download
from npskip.harness.data import DataError, as_float32, fetch, load, read_cifar_bin, read_idx

REPO = Path(__file__).resolve().parents[1]


class DataSource:
    """Where the data tests copy MNIST and Fashion-MNIST from (as a file:// mirror):

    $NPSKIP_TEST_MIRROR if set; else ``../shared/data`` beside the repository, if it
    exists (this repository's CI); else the user's npskip data cache, which
    ``as_uri()`` first fills from the canonical sites, as ``npskip.data.load`` would
    (downloading only what is missing, so a fresh clone needs only a network).
    """

    def __init__(self):
        env, ci = os.environ.get("NPSKIP_TEST_MIRROR"), REPO.parent / "shared" / "data"
        self.path = Path(env) if env else ci if (ci / "mnist").is_dir() else None

    def folder(self):
        if self.path is None:
            from npskip.harness.download import default_data_dir
            cache = default_data_dir()
            for name in ("mnist", "fashion-mnist"):
                fetch(name, data_dir=cache)
            self.path = cache
        return self.path

    def as_uri(self):
        return self.folder().resolve().as_uri()

    def __truediv__(self, name):
        return self.folder() / name


MIRROR = DataSource()
MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory):
    if not (MIRROR / "mnist").is_dir():
        pytest.fail(f"no data mirror at {MIRROR.folder()}; set NPSKIP_TEST_MIRROR to a folder "
                    f"holding mnist/ and fashion-mnist/")
    dest = tmp_path_factory.mktemp("data")
    for name in ("mnist", "fashion-mnist"):
        results = fetch(name, data_dir=dest, mirror=MIRROR.as_uri())
        assert all(downloaded for _, downloaded in results)
    return dest


def test_real_mnist_loads(real_dir):
    ds = load("mnist", data_dir=real_dir, download=False)
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_train.dtype == np.uint8
    assert ds.x_test.shape == (10000, 28, 28, 1) and ds.y_test.shape == (10000,)
    assert ds.y_train.dtype == np.int64
    assert np.bincount(ds.y_train).tolist() == MNIST_TRAIN_COUNTS
    assert ds.class_names == [str(i) for i in range(10)] and ds.num_classes == 10
    assert abs(as_float32(ds.x_train).mean() - 0.1307) < 1e-3


def test_real_fashion_mnist_loads(real_dir):
    ds = load("fashion-mnist", data_dir=real_dir, download=False)
    assert ds.x_train.shape == (60000, 28, 28, 1)
    assert np.bincount(ds.y_train).tolist() == [6000] * 10
    assert np.bincount(ds.y_test).tolist() == [1000] * 10
    assert ds.class_names[9] == "Ankle boot"


def test_second_fetch_downloads_nothing(real_dir):
    before = {p: p.stat().st_mtime_ns for p in (real_dir / "mnist").iterdir()}
    results = fetch("mnist", data_dir=real_dir, mirror=MIRROR.as_uri())
    assert not any(downloaded for _, downloaded in results)
    assert {p: p.stat().st_mtime_ns for p in (real_dir / "mnist").iterdir()} == before


def test_validation_split_is_seeded_and_disjoint(real_dir):
    ds = load("mnist", data_dir=real_dir, download=False)
    x_tr, y_tr, x_val, y_val = ds.validation_split(0.1, seed=3)
    assert len(y_val) == 6000 and len(y_tr) == 54000
    again = ds.validation_split(0.1, seed=3)
    np.testing.assert_array_equal(again[3], y_val)
    assert not np.array_equal(ds.validation_split(0.1, seed=4)[3], y_val)


def test_data_fetch_cli_twice(real_dir, tmp_path):
    cmd = [sys.executable, str(REPO / "data_fetch.py"), "mnist", "--mirror", MIRROR.as_uri(),
           "--dest", str(tmp_path)]
    first = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("downloaded and verified") == 4
    second = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert second.stdout.count("already present") == 4


# --------------------------------------------------------------------------
# faults in IDX files
# --------------------------------------------------------------------------

def _idx(array, code=0x08):
    header = bytes([0, 0, code, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(">u1" if code == 0x08 else ">i4").tobytes()


def test_read_idx_roundtrip_and_faults(tmp_path):
    a = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    good = tmp_path / "good.gz"
    good.write_bytes(gzip.compress(_idx(a)))
    np.testing.assert_array_equal(read_idx(good), a)
    np.testing.assert_array_equal(read_idx(good, hashlib.sha256(_idx(a)).hexdigest()), a)

    cases = {
        "magic": (b"\x01\x00" + _idx(a)[2:], "not an IDX file"),
        "dtype": (b"\x00\x00\x07" + _idx(a)[3:], "unknown IDX dtype code 0x07"),
        "short": (_idx(a)[:-1], "truncated or corrupt"),
        "long": (_idx(a) + b"\x00", "truncated or corrupt"),
    }
    for name, (raw, message) in cases.items():
        p = tmp_path / name
        p.write_bytes(raw)
        with pytest.raises(DataError, match=message) as err:
            read_idx(p)
        assert name in str(err.value)          # the file is named
    with pytest.raises(DataError, match="SHA-256"):
        read_idx(good, "0" * 64)
    trunc = tmp_path / "trunc.gz"
    trunc.write_bytes(gzip.compress(_idx(a))[:-8])
    with pytest.raises(DataError, match="trunc.gz"):
        read_idx(trunc)


@pytest.fixture
def fake_mirror(tmp_path, monkeypatch):
    """A mirror serving a tiny 'mnist' whose checksums we control."""
    root = tmp_path / "mirror"
    (root / "mnist").mkdir(parents=True)
    arrays = {f: np.full((3, 2, 2) if "images" in f else (3,), i, np.uint8)
              for i, f in enumerate(data.IDX_FILES)}
    specs = {}
    for f, a in arrays.items():
        (root / "mnist" / f).write_bytes(gzip.compress(_idx(a)))
        specs[f] = {"sha256_gunzip": hashlib.sha256(_idx(a)).hexdigest()}
    monkeypatch.setitem(data.DATASETS["mnist"], "files", specs)
    return root


@pytest.mark.parametrize("fault,message", [
    ("truncated", "not a complete gzip file"),
    ("wrong-magic", "SHA-256 of the decompressed content"),
    ("wrong-checksum", "SHA-256 of the decompressed content"),
    ("missing", "could not fetch t10k-images"),
])
def test_faulty_download_leaves_nothing_and_a_rerun_succeeds(fake_mirror, tmp_path, fault,
                                                            message):
    target = fake_mirror / "mnist" / "t10k-images-idx3-ubyte.gz"
    good = target.read_bytes()
    if fault == "truncated":
        target.write_bytes(good[: len(good) // 2])
    elif fault == "wrong-magic":
        target.write_bytes(gzip.compress(b"\x01\x02" + gzip.decompress(good)[2:]))
    elif fault == "wrong-checksum":
        raw = bytearray(gzip.decompress(good))
        raw[-1] ^= 0xFF
        target.write_bytes(gzip.compress(bytes(raw)))
    else:
        target.unlink()
    dest = tmp_path / "dest"
    with pytest.raises(DataError, match=message) as err:
        fetch("mnist", data_dir=dest, mirror=fake_mirror.as_uri())
    assert "--mirror" in str(err.value)
    assert not (dest / "mnist" / target.name).exists()
    assert not list((dest / "mnist").glob("*.part"))
    target.write_bytes(good)                                   # the fault is mended
    results = fetch("mnist", data_dir=dest, mirror=fake_mirror.as_uri())
    # the first two were kept; the mended file and the one after it are fetched now
    assert [d for _, d in results] == [False, False, True, True]


@pytest.mark.parametrize("fault, said", [("missing", "No such file"),
                                          ("wrong-checksum", "downloaded, but")])
@pytest.mark.parametrize("named_by", ["--mirror", "$NPSKIP_MIRROR"])
def test_a_mirror_that_lacks_a_file_or_holds_a_bad_copy_is_said_to(fake_mirror, tmp_path,
                                                                     monkeypatch, fault, said,
                                                                     named_by):
    target = fake_mirror / "mnist" / "t10k-labels-idx1-ubyte.gz"
    if fault == "missing":
        target.unlink()
    else:
        target.write_bytes(gzip.compress(b"not the labels"))
    monkeypatch.setenv("NPSKIP_MIRROR", str(fake_mirror))
    with pytest.raises(DataError) as err:
        fetch("mnist", data_dir=tmp_path / "d",
              mirror=str(fake_mirror) if named_by == "--mirror" else None)
    message = str(err.value)
    assert said in message and "use a mirror" not in message and "offline" not in message
    assert f"The mirror given ({named_by} {fake_mirror}) lacks mnist/t10k-labels-idx1-ubyte.gz " \
           f"or holds a bad copy of it" in message
    assert f"{fake_mirror.as_uri()}/mnist/t10k-labels-idx1-ubyte.gz" in message


def test_a_damaged_local_file_is_named_with_the_mirror_given(fake_mirror, tmp_path):
    dest = tmp_path / "d"
    load("mnist", data_dir=dest, mirror=str(fake_mirror))
    (dest / "mnist" / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"changed"))
    with pytest.raises(DataError) as err:
        load("mnist", data_dir=dest, mirror=str(fake_mirror))
    assert "train-labels-idx1-ubyte.gz" in str(err.value)
    assert f"python data_fetch.py mnist --data-dir {dest} --mirror {fake_mirror}, which keeps " \
           f"it as .bad" in str(err.value)


def test_corrupted_file_in_data_dir_is_moved_aside_and_refetched(fake_mirror, tmp_path):
    dest = tmp_path / "dest"
    fetch("mnist", data_dir=dest, mirror=str(fake_mirror))
    victim = dest / "mnist" / "train-labels-idx1-ubyte.gz"
    victim.write_bytes(b"garbage")
    results = fetch("mnist", data_dir=dest, mirror=str(fake_mirror))
    assert [d for _, d in results] == [False, True, False, False]
    assert (dest / "mnist" / "train-labels-idx1-ubyte.gz.bad").read_bytes() == b"garbage"


def test_load_without_data_names_the_command(tmp_path):
    with pytest.raises(DataError, match="python data_fetch.py mnist"):
        load("mnist", data_dir=tmp_path, download=False)


def test_unreachable_mirror_says_what_to_do(tmp_path):
    # --data-dir, as npskip names it (--dest, the older name, works too)
    cmd = [sys.executable, str(REPO / "data_fetch.py"), "mnist",
           "--mirror", (tmp_path / "nowhere").as_uri(), "--data-dir", str(tmp_path / "d")]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 1
    assert "nowhere/mnist/train-images-idx3-ubyte.gz" in run.stderr and "--mirror" in run.stderr


def test_a_dest_that_cannot_be_written_says_so_not_offline(fake_mirror, tmp_path):
    (tmp_path / "afile").write_text("")
    cmd = [sys.executable, str(REPO / "data_fetch.py"), "mnist", "--mirror", str(fake_mirror),
           "--dest", str(tmp_path / "afile" / "data")]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 1 and "Traceback" not in run.stderr, run.stderr
    assert "cannot write" in run.stderr and "--data-dir" in run.stderr
    assert "offline" not in run.stderr and "use a mirror" not in run.stderr


def test_a_read_only_dest_says_so(fake_mirror, tmp_path, monkeypatch):
    # (the tests may run as root, whom chmod does not stop: the refusal is simulated)
    def read_only(self, *args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))
    monkeypatch.setattr(Path, "mkdir", read_only)
    with pytest.raises(download.WriteError, match="cannot write .*Permission denied; choose a "
                                                  "folder you can write with --data-dir"):
        fetch("mnist", data_dir=tmp_path / "ro", mirror=str(fake_mirror))


def test_a_full_disk_says_so_and_the_rerun_resumes_from_a_file_mirror(fake_mirror, tmp_path,
                                                                       monkeypatch):
    real_open = open

    class FullDisk:
        """A file on a disk that fills up after 20 bytes."""
        def __init__(self, f):
            self.f = f

        def write(self, block):
            room = 20 - self.f.tell()
            self.f.write(block[:max(room, 0)])
            if len(block) > room:
                raise OSError(errno.ENOSPC, "No space left on device")

        def __getattr__(self, name):
            return getattr(self.f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

    def small_disk(path, mode="r", *a, **k):
        f = real_open(path, mode, *a, **k)
        return FullDisk(f) if "w" in mode or "a" in mode else f
    monkeypatch.setattr(download, "open", small_disk, raising=False)
    dest = tmp_path / "dest"
    with pytest.raises(download.WriteError, match="the disk is full; free some space and rerun"):
        fetch("mnist", data_dir=dest, mirror=fake_mirror.as_uri())
    name = data.IDX_FILES[0]
    assert (dest / "mnist" / (name + ".part")).stat().st_size == 20
    monkeypatch.delattr(download, "open")              # the disk has room again
    opened = []
    real = download._open
    monkeypatch.setattr(download, "_open", lambda url, have: opened.append(have) or real(url, have))
    fetch("mnist", data_dir=dest, mirror=fake_mirror.as_uri())
    assert opened[0] == 20                                    # resumed, not restarted
    assert (dest / "mnist" / name).read_bytes() == (fake_mirror / "mnist" / name).read_bytes()


def test_a_part_that_is_not_a_prefix_is_fetched_again_from_scratch(fake_mirror, tmp_path):
    dest = tmp_path / "dest" / "mnist"
    dest.mkdir(parents=True)
    name = data.IDX_FILES[0]
    (dest / (name + ".part")).write_bytes(b"not the start of the file")
    fetch("mnist", data_dir=dest.parent, mirror=fake_mirror.as_uri())
    assert (dest / name).read_bytes() == (fake_mirror / "mnist" / name).read_bytes()


def test_file_localhost_urls_and_tilde_folders(fake_mirror, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    assert download.mirror_base(f"file://localhost{fake_mirror}") == fake_mirror.as_uri() + "/"
    results = fetch("mnist", data_dir="~/data", mirror=f"file://localhost{fake_mirror}")
    assert all(path.is_relative_to(tmp_path / "data") for path, _ in results)
    assert load("mnist", data_dir="~/data", download=False).y_train.tolist() == [1, 1, 1]
    cmd = [sys.executable, str(REPO / "data_fetch.py"), "mnist", "--mirror", str(fake_mirror),
           "--dest", "~/other"]
    # data_fetch.py runs with the real checksums: only the expansion of ~ is checked here
    subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "HOME": str(tmp_path)})
    assert (tmp_path / "other" / "mnist").is_dir() and not Path("~").exists()


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files with HTTP Range support, as real download sites do."""
    requests = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = Path(self.translate_path(self.path)).read_bytes()
        rng = self.headers.get("Range")
        _RangeHandler.requests.append(rng)
        if rng:
            start = int(rng.split("=")[1].rstrip("-"))
            self.send_response(206)
            body = body[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_interrupted_http_download_resumes(fake_mirror, tmp_path):
    handler = lambda *a, **k: _RangeHandler(*a, directory=str(fake_mirror), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        dest = tmp_path / "dest" / "mnist"
        dest.mkdir(parents=True)
        name = "train-images-idx3-ubyte.gz"
        whole = (fake_mirror / "mnist" / name).read_bytes()
        (dest / (name + ".part")).write_bytes(whole[:10])       # an interrupted download
        _RangeHandler.requests.clear()
        fetch("mnist", data_dir=dest.parent, mirror=f"http://127.0.0.1:{server.server_port}")
        assert _RangeHandler.requests[0] == "bytes=10-"
        assert (dest / name).read_bytes() == whole
    finally:
        server.shutdown()


# --------------------------------------------------------------------------
# CIFAR-100 in the official binary layout
# --------------------------------------------------------------------------

def _cifar_records(n, rng, coarse_max=20, fine_max=100):
    coarse = rng.integers(0, coarse_max, n, dtype=np.uint8)
    fine = rng.integers(0, fine_max, n, dtype=np.uint8)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    planes = images.transpose(0, 3, 1, 2).reshape(n, 3072)     # R plane, G plane, B plane
    raw = np.concatenate([coarse[:, None], fine[:, None], planes], axis=1).tobytes()
    return raw, images, coarse, fine


def _tar(path, members):
    """members: {name: bytes} or {name: tarfile.TarInfo} for special members."""
    with tarfile.open(path, "w:gz") as tar:
        for name, content in members.items():
            if isinstance(content, tarfile.TarInfo):
                tar.addfile(content)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))


@pytest.fixture
def cifar_mirror(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    train, *train_parts = _cifar_records(7, rng)
    test, *test_parts = _cifar_records(3, rng)
    members = {
        "cifar-100-binary/train.bin": train,
        "cifar-100-binary/test.bin": test,
        "cifar-100-binary/fine_label_names.txt": "\n".join(f"fine{i}" for i in range(100)).encode(),
        "cifar-100-binary/coarse_label_names.txt": "\n".join(f"coarse{i}" for i in range(20)).encode(),
    }
    root = tmp_path / "mirror"

    def publish(members):
        (root / "cifar100").mkdir(parents=True, exist_ok=True)
        archive = root / "cifar100" / "cifar-100-binary.tar.gz"
        _tar(archive, members)
        raw = archive.read_bytes()
        monkeypatch.setitem(data.DATASETS["cifar100"], "files", {archive.name: {
            "md5": hashlib.md5(raw).hexdigest(), "size": len(raw)}})

    publish(members)
    return root, members, train_parts, test_parts, publish


@pytest.mark.parametrize("label", ["fine", "coarse"])
def test_cifar100_fixture_roundtrip(cifar_mirror, tmp_path, label):
    root, _, (images, coarse, fine), (t_images, t_coarse, t_fine), _ = cifar_mirror
    ds = load("cifar100", data_dir=tmp_path / "d", mirror=root.as_uri(), label=label)
    np.testing.assert_array_equal(ds.x_train, images)
    np.testing.assert_array_equal(ds.x_test, t_images)
    np.testing.assert_array_equal(ds.y_train, fine if label == "fine" else coarse)
    np.testing.assert_array_equal(ds.y_test, t_fine if label == "fine" else t_coarse)
    assert ds.x_train.shape == (7, 32, 32, 3) and ds.input_shape == (32, 32, 3)
    assert len(ds.class_names) == (100 if label == "fine" else 20)


def test_cifar_parser_refuses_bad_length_and_labels(tmp_path):
    rng = np.random.default_rng(1)
    raw, *_ = _cifar_records(2, rng)
    (tmp_path / "short.bin").write_bytes(raw[:-1])
    with pytest.raises(DataError, match="short.bin.*3074-byte"):
        read_cifar_bin(tmp_path / "short.bin")
    bad = bytearray(raw)
    bad[1] = 100                                               # fine label of record 0
    (tmp_path / "fine.bin").write_bytes(bytes(bad))
    with pytest.raises(DataError, match="fine label 100 out of range"):
        read_cifar_bin(tmp_path / "fine.bin")
    bad = bytearray(raw)
    bad[3074] = 20                                             # coarse label of record 1
    (tmp_path / "coarse.bin").write_bytes(bytes(bad))
    with pytest.raises(DataError, match="coarse label 20 out of range"):
        read_cifar_bin(tmp_path / "coarse.bin")


def _link(name, target):
    info = tarfile.TarInfo(name)
    info.type = tarfile.SYMTYPE
    info.linkname = target
    return info


@pytest.mark.parametrize("extra,message", [
    ({"cifar-100-binary/../../evil.txt": b"x"}, r"absolute path or '\.\.'"),
    ({"/etc/evil.txt": b"x"}, r"absolute path or '\.\.'"),
    ({"cifar-100-binary/link": _link("cifar-100-binary/link", "/etc/passwd")}, "links"),
    ({"cifar-100-binary/extra.bin": b"x"}, "unexpected member"),
])
def test_crafted_cifar_archive_is_refused(cifar_mirror, tmp_path, extra, message):
    root, members, _, _, publish = cifar_mirror
    publish({**members, **extra})
    dest = tmp_path / "d"
    with pytest.raises(DataError, match=message):
        fetch("cifar100", data_dir=dest, mirror=root.as_uri())
    assert not (dest / "cifar100" / "cifar-100-binary").exists()
    assert not (tmp_path / "evil.txt").exists() and not (dest / "evil.txt").exists()


def test_data_fetch_ctrl_c_says_how_to_resume(monkeypatch, capsys):
    sys.path.insert(0, str(REPO))
    import data_fetch

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(data_fetch, "fetch", interrupted)
    assert data_fetch.main(["mnist"]) == 130
    assert "interrupted; rerun the same command to resume" in capsys.readouterr().err


def test_a_corrupted_data_file_is_named_with_the_way_out(tmp_path, capsys):
    from npskip import cli
    data_dir = tmp_path / "data"
    fetch("mnist", data_dir=data_dir, mirror=MIRROR.as_uri())
    victim = data_dir / "mnist" / "train-labels-idx1-ubyte.gz"
    victim.write_bytes(victim.read_bytes()[:-100])       # changed after it was verified
    argv = ["train", "--limit", "300", "--epochs", "1", "--no-progress", "--data-dir",
            str(data_dir), "--mirror", MIRROR.as_uri(), "--out", str(tmp_path / "run")]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert f"{victim}: cannot read or decompress" in err and "Traceback" not in err, err
    assert "delete the file and rerun: it is fetched again (or run python data_fetch.py " \
           f"mnist --data-dir {data_dir} --mirror {MIRROR.as_uri()}, which keeps it as .bad)" \
        in err
    assert "--dest" not in err and len(err.strip().splitlines()) == 1
    victim.unlink()                                       # the way out
    assert cli.main(argv) == 0
