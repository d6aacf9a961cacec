"""Fetching data files: verified, atomic, resumable, and honest when it fails.

A file is streamed to ``<name>.part`` beside its final place, checked, and only
then renamed to its final name, so an interrupted or corrupt download never
sits under the name the loaders read. A ``.part`` left by an interrupted
download (or a full disk) is resumed: with an HTTP Range request where the
server allows it, from the same offset of a file:// mirror. A folder that
cannot be written, or a full disk, is reported as that (WriteError), not as a
failed download.

Checks: for gzip-compressed IDX files, the SHA-256 of the *decompressed*
content (mirrors re-compress, so the ``.gz`` bytes may differ while the data
is the same); for archives, MD5 and size, as their sites publish them.

Nothing here unpickles anything.
"""

import errno
import gzip
import hashlib
import os
import shutil
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

from tqdm import tqdm

CHUNK = 1 << 20


class DataError(Exception):
    """A data file could not be fetched, verified, unpacked or parsed."""


class WriteError(DataError):
    """The data folder cannot be written (read-only, not a folder, or its disk is full)."""


def write_error(path, e):
    """A WriteError for OSError ``e`` raised while writing ``path``, saying what to do."""
    if e.errno == errno.ENOSPC:
        what = ("the disk is full; free some space and rerun (the download resumes where it "
                "stopped)")
    else:
        what = (f"{e.strerror or e}; choose a folder you can write with --data-dir (or "
                f"$NPSKIP_DATA)")
    return WriteError(f"cannot write {path}: {what}")


def file_url_path(url):
    """The local path of a file:// URL: file:///abs, file://localhost/abs -> /abs."""
    parsed = urllib.parse.urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise ValueError(f"{url}: a file:// URL names a folder on this machine, "
                         f"e.g. file:///data/mirror")
    return Path(urllib.request.url2pathname(parsed.path))


def default_data_dir():
    """$NPSKIP_DATA, else $XDG_CACHE_HOME/npskip, else ~/.cache/npskip."""
    if os.environ.get("NPSKIP_DATA"):
        return Path(os.environ["NPSKIP_DATA"]).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "npskip"


def mirror_base(mirror):
    """Normalise a mirror given as a URL or a plain folder path to a base URL ending in '/'.

    'file://relative/dir' and 'relative/dir' are both taken relative to the
    current folder, since that is what a user typing them means;
    'file://localhost/abs' is the absolute folder /abs, as RFC 8089 says.
    """
    if "://" not in mirror:
        mirror = Path(mirror).expanduser().resolve().as_uri()
    elif mirror.startswith("file://"):
        host = urllib.parse.urlparse(mirror).netloc
        if host in ("", "localhost"):
            mirror = file_url_path(mirror).expanduser().resolve().as_uri()
        else:
            mirror = Path(mirror[len("file://"):]).expanduser().resolve().as_uri()
    return mirror.rstrip("/") + "/"


# --------------------------------------------------------------------------
# checksums
# --------------------------------------------------------------------------

def gunzip_sha256(path):
    """SHA-256 of a gzip file's decompressed content. Raises DataError if it is not valid gzip."""
    h = hashlib.sha256()
    try:
        with gzip.open(path, "rb") as f:
            for block in iter(lambda: f.read(CHUNK), b""):
                h.update(block)
    except (OSError, EOFError, zlib.error) as e:      # BadGzipFile is an OSError
        raise DataError(f"{path}: not a complete gzip file ({e})") from None
    return h.hexdigest()


def md5_and_size(path):
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(CHUNK), b""):
            h.update(block)
    return h.hexdigest(), os.path.getsize(path)


def verify(path, spec):
    """Check a file against its spec. Returns None if good, else a sentence saying what is wrong.

    spec: {"sha256_gunzip": hex} or {"md5": hex, "size": bytes}.
    """
    if "sha256_gunzip" in spec:
        try:
            got = gunzip_sha256(path)
        except DataError as e:
            return str(e)
        if got != spec["sha256_gunzip"]:
            return (f"{path.name}: SHA-256 of the decompressed content is {got}, "
                    f"expected {spec['sha256_gunzip']}")
        return None
    md5, size = md5_and_size(path)
    if size != spec["size"]:
        return f"{path.name}: {size:,} bytes, expected {spec['size']:,}"
    if md5 != spec["md5"]:
        return f"{path.name}: MD5 {md5}, expected {spec['md5']}"
    return None


# --------------------------------------------------------------------------
# downloading
# --------------------------------------------------------------------------

def _open(url, have):
    """Open ``url`` for reading from byte ``have`` where it can: (stream, resumed, total size).

    file:// mirrors are read as local files (seeked); http(s) gets a Range request,
    which a server may ignore (resumed is then False and the stream starts at 0)."""
    if url.startswith("file:"):
        path = file_url_path(url)
        size = path.stat().st_size
        src = open(path, "rb")
        resumed = 0 < have <= size
        src.seek(have if resumed else 0)
        return src, resumed, size
    request = urllib.request.Request(url, headers={"User-Agent": "npskip"})
    if have:
        request.add_header("Range", f"bytes={have}-")
    resp = urllib.request.urlopen(request, timeout=60)
    resumed = bool(have) and getattr(resp, "status", None) == 206
    length = resp.headers.get("Content-Length")
    return resp, resumed, ((have if resumed else 0) + int(length)) if length else None


def _stream(url, part):
    """Download ``url`` into ``part``, resuming an existing partial file where it can.

    Reading errors propagate as they are (URLError, OSError); writing errors become
    WriteError, so that a full disk is not mistaken for a site that is down."""
    have = part.stat().st_size if part.exists() else 0
    src, resumed, total = _open(url, have)
    with src:
        have = have if resumed else 0
        try:
            out = open(part, "ab" if resumed else "wb")
        except OSError as e:
            raise write_error(part, e) from None
        with out, tqdm(total=total, initial=have, unit="B", unit_scale=True,
                       desc=part.name[:-len(".part")], leave=False, disable=None) as bar:
            for block in iter(lambda: src.read(CHUNK), b""):
                try:
                    out.write(block)
                except OSError as e:
                    raise write_error(part, e) from None
                bar.update(len(block))
            try:
                out.flush()
                os.fsync(out.fileno())
            except OSError as e:
                raise write_error(part, e) from None


def fetch_file(name, spec, urls, dest):
    """Make sure ``dest/name`` exists and passes ``spec``, downloading it if needed.

    urls: base URLs to try in order (each + name). Returns the final path and
    whether anything was downloaded. Raises DataError naming every URL tried
    and what went wrong with each.
    """
    try:
        dest.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(dest, e) from None
    final = dest / name
    if final.exists():
        problem = verify(final, spec)
        if problem is None:
            return final, False
        # A file under the final name that fails its check came from outside
        # npskip (we never rename unverified files): move it aside, keep it.
        try:
            final.rename(final.with_name(final.name + ".bad"))
        except OSError as e:
            raise write_error(final, e) from None
    part = final.with_name(final.name + ".part")
    failures = []
    for base in urls:
        url = base + name
        for _ in range(2):
            resuming = part.exists() and part.stat().st_size > 0
            try:
                _stream(url, part)
            except (urllib.error.URLError, OSError, ValueError) as e:
                failures.append(f"{url}: {getattr(e, 'reason', e)}")
                break
            problem = verify(part, spec)
            if problem is None:
                try:
                    os.replace(part, final)          # atomic on one filesystem
                except OSError as e:
                    raise write_error(final, e) from None
                return final, True
            part.unlink()
            if not resuming:
                failures.append(f"{url}: downloaded, but {problem}")
                break
            # the old .part was not the start of this file: once more, from scratch
    if part.exists() and part.stat().st_size == 0:
        part.unlink()
    raise DataError(f"could not fetch {name}:\n  " + "\n  ".join(failures))


# --------------------------------------------------------------------------
# unpacking
# --------------------------------------------------------------------------

def safe_extract(archive, members, dest):
    """Unpack exactly ``members`` from a .tar.gz into ``dest`` (like ``tar -C dest``).

    All members must sit in one top folder (e.g. "cifar-100-binary/train.bin").
    Refuses, before writing anything, an archive holding any other name, an
    absolute path, a '..' component, a link or a device: a crafted archive
    cannot write outside ``dest``. Files are unpacked into a temporary folder
    that is renamed to ``dest/<top folder>`` once all of them are out.
    Returns ``dest/<top folder>``.
    """
    wanted = set(members)
    tops = {m.split("/")[0] for m in wanted}
    if len(tops) != 1:
        raise ValueError(f"members must share one top folder, got {sorted(tops)}")
    top = tops.pop()
    final = dest / top
    tmp = dest / (top + ".unpacking")
    try:
        with tarfile.open(archive, "r:gz") as tar:
            infos = tar.getmembers()
            for info in infos:
                parts = Path(info.name).parts
                if info.name.startswith(("/", "\\")) or ".." in parts:
                    raise DataError(f"{archive.name}: refusing member {info.name!r} "
                                    f"(absolute path or '..')")
                if not (info.isfile() or info.isdir()):
                    raise DataError(f"{archive.name}: refusing member {info.name!r} "
                                    f"(links and special files are not allowed)")
                if info.isfile() and info.name not in wanted:
                    raise DataError(f"{archive.name}: unexpected member {info.name!r}; "
                                    f"expected only {sorted(wanted)}")
            found = {i.name for i in infos if i.isfile()}
            if found != wanted:
                raise DataError(f"{archive.name}: missing members {sorted(wanted - found)}")
            shutil.rmtree(tmp, ignore_errors=True)
            for info in infos:
                if not info.isfile():
                    continue
                target = tmp / Path(info.name).relative_to(top)
                target.parent.mkdir(parents=True, exist_ok=True)
                with tar.extractfile(info) as src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out, CHUNK)
    except (tarfile.TarError, EOFError, zlib.error) as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive}: not a readable .tar.gz archive ({e})") from None
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final
