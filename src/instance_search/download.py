"""Fetching, verifying and unpacking dataset archives.

- :func:`download` fetches one file over HTTP(S) or FTP from an address and its mirrors into
  ``<dest>.part``, resuming (HTTP Range requests; FTP REST where the server allows it, else from the
  start), retrying with exponential back-off, and renames it to ``dest`` only once it is complete
  and (when a hash is known) verified. A failure keeps the ``.part`` so that the next run resumes it.
- :func:`read_lock` / :func:`record_lock` keep the checked-in lock file: the sha256 of every archive,
  recorded the first time it is used (one log line says the lock changed and should be committed)
  and checked on every later run. In frozen mode (:func:`lock_frozen`: ``fetch.frozen`` in
  params.yaml or ``INSTANCE_SEARCH_FROZEN_LOCK=1``, as in CI) the lock is the only authority: an
  archive it has no sha256 for is refused (:func:`frozen_error`) instead of trusted on first use.
- :func:`download` tries the https addresses first, then the plain http and ftp ones (each group in
  the registry's order): a plain copy is checked against the lock like any other.
- :func:`unpack` unpacks tar(.gz), zip or rar into a temporary sibling folder that replaces the
  target only once complete, so a corrupt archive or a full disk leaves no half folder.

Every failure is an :class:`InstanceSearchError` whose one line names the file or address and what
to do. HTTP goes through ``requests``, FTP through the standard library's ``ftplib`` (anonymous,
passive mode); ``rarfile`` is imported only for rar archives.
"""

from __future__ import annotations

import contextlib
import errno
import ftplib
import gzip
import hashlib
import json
import logging
import os
import re
import shutil
import stat
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import Iterator, Sequence
from urllib.parse import unquote, urlsplit

import requests
import urllib3
from tqdm import tqdm

from . import io
from .hashing import sha256_file
from .errors import InstanceSearchError

log = logging.getLogger(__name__)

CHUNK = 1 << 20
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
MARKER = ".unpacked.json"  # written inside an unpacked folder: which archive (sha256) it came from


def human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"  # unreachable


# --- file locks (several Snakemake jobs may fetch or record at once) ---------------------------

@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if needed); a no-op where fcntl is missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        try:
            import fcntl
        except ImportError:  # not POSIX: no concurrent jobs to guard against in practice
            yield
            return
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


# --- checksums and the lock file ----------------------------------------------------------------

def read_lock(lock_path: str | os.PathLike) -> dict[str, dict]:
    """The lock file as ``{"<dataset>/<filename>": {"sha256": ..., "bytes": ...}}``; missing means empty."""
    lock_path = Path(lock_path)
    if not lock_path.exists():
        return {}
    try:
        data = json.loads(lock_path.read_text(encoding="utf-8") or "{}")
    except json.JSONDecodeError as exc:
        raise InstanceSearchError(
            f"{lock_path}: not valid JSON ({exc.msg} at line {exc.lineno}); restore it from git") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) and "sha256" in v for v in data.values()):
        raise InstanceSearchError(
            f"{lock_path}: expected {{\"<dataset>/<file>\": {{\"sha256\": ...}}}}; restore it from git")
    return data


def record_lock(lock_path: str | os.PathLike, key: str, sha256: str, nbytes: int,
                mutex_dir: str | os.PathLike | None = None) -> None:
    """Add one entry to the lock file (sorted keys, atomic write, serialised across processes).

    The read-modify-write is guarded by a mutex file in ``mutex_dir`` (default: the temp folder),
    named after the lock file, since the lock file itself is replaced by each write.
    """
    lock_path = Path(lock_path)
    tag = hashlib.sha1(str(lock_path.resolve()).encode()).hexdigest()[:16]
    with file_lock(Path(mutex_dir or tempfile.gettempdir()) / f"instance-search-{tag}.lock"):
        data = read_lock(lock_path)  # re-read under the lock: another job may have added entries
        data[key] = {"sha256": sha256, "bytes": nbytes}
        io.write_json(lock_path, data)


FROZEN_ENV = "INSTANCE_SEARCH_FROZEN_LOCK"
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def lock_frozen(params: dict | None = None, environ: dict | None = None) -> bool:
    """Frozen mode: ``fetch.frozen: true`` in the params, or the environment's ``INSTANCE_SEARCH_FROZEN_LOCK=1``."""
    value = (os.environ if environ is None else environ).get(FROZEN_ENV, "").strip().lower()
    if value not in _TRUE + _FALSE:
        raise InstanceSearchError(f"environment variable {FROZEN_ENV}={value!r}: expected 1 (frozen) or 0")
    return value in _TRUE or bool(((params or {}).get("fetch") or {}).get("frozen", False))


def frozen_error(what: str | os.PathLike, key: str, lock_path: str | os.PathLike) -> InstanceSearchError:
    return InstanceSearchError(
        f"{what}: {lock_path} has no sha256 for {key} and the lock is frozen (fetch.frozen in params.yaml or "
        f"{FROZEN_ENV}=1), so an unchecked file is refused; record it on a trusted machine (fetch once without "
        f"frozen mode) and commit {lock_path}, or restore the lock file from git")


def log_lock_changed(lock_path: str | os.PathLike, key: str, sha256: str) -> None:
    """The one line that says a first use changed the lock file, which belongs in version control."""
    log.warning("%s changed: recorded sha256 %s of %s (first use); commit it so that every later download "
                "is checked against it", lock_path, sha256, key)


def mismatch_error(path: Path, key: str, lock_path: str | os.PathLike, expected: str,
                   actual: str) -> InstanceSearchError:
    return InstanceSearchError(
        f"{path}: sha256 {actual} does not match {expected} recorded for {key} in {lock_path}; "
        f"delete the file and re-run to download it again, or, if the publisher changed it on purpose, "
        f"delete its entry from {lock_path} and re-run")


# --- disk space ---------------------------------------------------------------------------------

def check_free_space(folder: str | os.PathLike, need: int, what: str) -> None:
    """Fail before writing a byte when ``need`` bytes will not fit on the disk holding ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if need > free:
        raise InstanceSearchError(
            f"{folder}: not enough disk space for {what}: needs {human(need)}, {human(free)} free; "
            f"free some space or put data/raw on a bigger disk (a symbolic link will do), then re-run")


def _disk_full(path: Path, what: str) -> InstanceSearchError:
    return InstanceSearchError(
        f"{path}: disk full while {what}; free some space on {path.parent} and re-run")


def _write_error(part: Path, url: str, exc: OSError) -> InstanceSearchError:
    """An error writing a ``.part`` file (disk full, not writable) is this machine's: one line, never
    mistaken for a network failure worth retrying."""
    if exc.errno in DISK_FULL:
        return _disk_full(part, f"downloading {url} (the partial file is kept and resumed next time)")
    return InstanceSearchError(f"{part}: cannot write it ({exc.strerror or exc}); "
                               f"check that {part.parent} is writable, then re-run")


def _write_part(part: Path, url: str, offset: int, total: int | None, desc: str, chunks: Iterator[bytes]) -> None:
    """``chunks`` into ``part`` (appended after its ``offset`` bytes, or from the start) under a progress
    bar: HTTP's and FTP's downloads alike. Opening, writing or closing the file fails as
    :func:`_write_error`; the chunks' source raises its own errors (the network's)."""
    try:
        fh = open(part, "ab" if offset else "wb")
    except OSError as exc:
        raise _write_error(part, url, exc) from None
    try:
        with tqdm(total=total, initial=offset, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                  mininterval=0.5 if sys.stderr.isatty() else 30, file=sys.stderr) as bar:
            for chunk in chunks:
                try:
                    fh.write(chunk)
                except OSError as exc:
                    raise _write_error(part, url, exc) from None
                bar.update(len(chunk))
    except BaseException:
        with contextlib.suppress(OSError):
            fh.close()
        raise
    try:
        fh.close()
    except OSError as exc:
        raise _write_error(part, url, exc) from None


# --- HTTP download ------------------------------------------------------------------------------

class DownloadError(InstanceSearchError):
    """No address served the file; ``failures`` holds one "<url>: <what happened>" per address."""

    def __init__(self, message: str, failures: list[str]):
        super().__init__(message)
        self.failures = failures


class _Transient(Exception):
    """Worth retrying the same address (dropped connection, 5xx, timeout)."""


class _Permanent(Exception):
    """This address will not serve the file (404, 403, 410 ...): go to the next one."""


def _part_paths(dest: Path) -> tuple[Path, Path]:
    return dest.with_name(dest.name + ".part"), dest.with_name(dest.name + ".part.json")


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """``bytes 100-199/1000`` -> (100, 1000); ``bytes */1000`` -> (None, 1000)."""
    m = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not m:
        return None, None
    return (int(m.group(1)) if m.group(1) else None), (int(m.group(2)) if m.group(2) != "*" else None)


def _get_once(session: requests.Session, url: str, dest: Path, timeout: float, reserve: int) -> None:
    """One GET of ``url`` into ``dest``.part, resuming what an earlier attempt left there."""
    part, meta_path = _part_paths(dest)
    meta = {}
    if part.exists() and meta_path.exists():
        with contextlib.suppress(ValueError, OSError):
            meta = json.loads(meta_path.read_text())
    # Resume only a .part that came from this very address: mirrors may hold other versions.
    offset = part.stat().st_size if part.exists() and meta.get("url") == url else 0
    headers = {"Accept-Encoding": "identity"}  # the archive's own bytes, never re-encoded in transit
    if offset:
        headers["Range"] = f"bytes={offset}-"
        if meta.get("validator"):
            headers["If-Range"] = meta["validator"]  # the server sends the whole file if it changed
    with session.get(url, headers=headers, stream=True, timeout=(timeout, timeout)) as r:
        if r.status_code == 416 and offset:
            if _content_range(r.headers.get("Content-Range"))[1] == offset:
                return  # the .part was already complete
            part.unlink()
            raise _Transient("server refused to resume; starting again")
        if r.status_code in (408, 429) or r.status_code >= 500:
            raise _Transient(f"HTTP {r.status_code} {r.reason}")
        if r.status_code not in (200, 206):
            raise _Permanent(f"HTTP {r.status_code} {r.reason}")
        if r.status_code == 206:
            start, total = _content_range(r.headers.get("Content-Range"))
            if start != offset:
                part.unlink(missing_ok=True)
                raise _Transient(f"server resumed at byte {start}, not {offset}; starting again")
        else:
            if offset:
                log.info("%s: the server ignored the resume request; downloading from the start", url)
            offset = 0
            length = r.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
        check_free_space(dest.parent, (total - offset if total else 0) + reserve, f"downloading {dest.name}")
        validator = r.headers.get("ETag") or r.headers.get("Last-Modified")
        io.write_json(meta_path, {"url": url, "validator": validator, "total": total})
        try:
            _write_part(part, url, offset, total, dest.name, r.raw.stream(CHUNK, decode_content=False))
        except OSError as exc:  # raised by the stream
            if isinstance(exc, ConnectionError):  # the network's, not the file's: retried by the caller
                raise
            raise _write_error(part, url, exc) from None
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Transient(f"connection closed after {size} of {total} bytes")


def _ftp_once(url: str, dest: Path, timeout: float, reserve: int) -> None:
    """One anonymous passive-mode RETR of ``url`` into ``dest``.part, resuming with REST where the
    server allows it. The file's size (SIZE) stands for HTTP's validator: a .part is resumed only
    from the same address and the same size, and a short transfer is retried."""
    part, meta_path = _part_paths(dest)
    meta = {}
    if part.exists() and meta_path.exists():
        with contextlib.suppress(ValueError, OSError):
            meta = json.loads(meta_path.read_text())
    parts = urlsplit(url)
    if not parts.hostname or not parts.path or parts.path.endswith("/"):
        raise _Permanent("not an ftp address of a file")
    remote = unquote(parts.path)
    ftp = ftplib.FTP(timeout=timeout)
    try:
        try:
            ftp.connect(parts.hostname, parts.port or 21)
            ftp.login(unquote(parts.username or "anonymous"), unquote(parts.password or "anonymous@"))
            ftp.voidcmd("TYPE I")  # binary: SIZE and REST count bytes
            try:
                total = ftp.size(remote)
            except ftplib.error_perm as exc:
                if str(exc).startswith("550"):  # no such file (SIZE is otherwise optional: then unknown)
                    raise _Permanent(f"FTP {_first_line(exc)}") from None
                total = None
            same = meta.get("url") == url and meta.get("total") == total
            offset = part.stat().st_size if part.exists() and same else 0
            if total is not None and offset > total:
                offset = 0
            if total is not None and offset == total:
                return  # the .part was already complete
            check_free_space(dest.parent, (total - offset if total else 0) + reserve, f"downloading {dest.name}")
            io.write_json(meta_path, {"url": url, "validator": None, "total": total})
            if offset:
                try:
                    ftp.sendcmd(f"REST {offset}")
                except ftplib.error_perm:
                    log.info("%s: the server does not resume (REST); downloading from the start", url)
                    offset = 0
            # the REST above applies to this RETR (ftplib's rest= would send it again, unchecked)
            with ftp.transfercmd(f"RETR {remote}") as conn:
                _write_part(part, url, offset, total, dest.name, iter(lambda: conn.recv(CHUNK), b""))
            ftp.voidresp()
        except ftplib.error_perm as exc:  # 5xx: this address will not serve the file
            raise _Permanent(f"FTP {_first_line(exc)}") from None
        except (ftplib.error_temp, ftplib.error_reply, ftplib.error_proto, EOFError, OSError) as exc:
            raise _Transient(f"FTP {_first_line(exc)}") from None  # the network's: retried by the caller
    finally:
        with contextlib.suppress(Exception):
            ftp.close()
    size = part.stat().st_size
    if total is not None and size != total:
        raise _Transient(f"connection closed after {size} of {total} bytes")


def _first_line(exc: BaseException) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


def _fetch_url(session: requests.Session, url: str, dest: Path, attempts: int, base_delay: float,
               timeout: float, reserve: int) -> None:
    """Fetch one address, retrying transient failures with exponential back-off.

    An attempt that added bytes resets the count: a flaky link that keeps making progress finishes.
    """
    part = _part_paths(dest)[0]
    failed = 0
    while True:
        before = part.stat().st_size if part.exists() else 0
        try:
            if url.lower().startswith("ftp://"):
                _ftp_once(url, dest, timeout, reserve)
            else:
                _get_once(session, url, dest, timeout, reserve)
            return
        except (_Permanent, requests.exceptions.InvalidURL, requests.exceptions.MissingSchema,
                requests.exceptions.InvalidSchema) as exc:
            raise _Permanent(str(exc)) from None
        except (_Transient, requests.RequestException, urllib3.exceptions.HTTPError, ConnectionError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if part.exists() and part.stat().st_size > before:
                failed = 0
            failed += 1
            if failed >= attempts:
                raise _Permanent(f"{reason} (gave up after {attempts} attempts)") from None
            delay = base_delay * 2 ** (failed - 1)
            log.warning("%s: %s; retrying in %.1f s (attempt %d of %d)", url, reason, delay, failed + 1, attempts)
            time.sleep(delay)


def download(urls: Sequence[str], dest: str | os.PathLike, *, expected_sha256: str | None = None,
             lock_key: str = "", lock_path: str | os.PathLike = "", reserve: int = 0, attempts: int = 5,
             base_delay: float = 2.0, timeout: float = 60.0, session: requests.Session | None = None) -> str:
    """Download ``dest`` from the first address in ``urls`` that serves it; return its sha256.

    The https addresses are tried before the plain http ones, each group in the given order.
    ``reserve`` bytes beyond the file itself must also be free (room to unpack it). With
    ``expected_sha256`` a mismatching file is deleted and reported; ``dest`` only ever appears
    complete and verified. ``lock_key``/``lock_path`` only word the messages.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part, meta_path = _part_paths(dest)
    session = session or requests.Session()
    failures = []
    # https before plain http (a stable sort: the registry's order within each group).
    for url in sorted(urls, key=lambda u: not u.lower().startswith("https://")):
        try:
            _fetch_url(session, url, dest, attempts, base_delay, timeout, reserve)
        except _Permanent as exc:
            failures.append(f"{url}: {exc}")
            log.warning("%s: %s", url, exc)
            continue
        sha = sha256_file(part)
        if expected_sha256 and sha != expected_sha256:
            part.unlink()
            meta_path.unlink(missing_ok=True)
            raise mismatch_error(dest, lock_key or dest.name, lock_path or "the lock file", expected_sha256, sha)
        os.replace(part, dest)
        meta_path.unlink(missing_ok=True)
        return sha
    raise DownloadError(
        f"{dest.name}: could not download it from any address ({'; '.join(failures) or 'no address known'}); "
        f"fetch it by other means and put it at {dest}, then re-run (it is verified and used without network)",
        failures)


# --- unpacking ----------------------------------------------------------------------------------

class _Unsafe(Exception):
    """A member whose path would land outside the target folder."""


class _Link(Exception):
    """A symbolic or hard link member (or another non-file): dataset archives hold files and folders only."""

    def __init__(self, name: str, what: str):
        super().__init__(name)
        self.name, self.what = name, what


class _NoTool(Exception):
    """A rar archive with compressed members and no external tool to decompress them."""


def _safe_relpath(name: str, strip: int) -> PurePosixPath | None:
    """A member name as a relative path inside the target; None for what ``strip`` removes."""
    name = name.replace("\\", "/")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if name.startswith("/") or ".." in parts or (parts and ":" in parts[0]):
        raise _Unsafe(name)
    parts = parts[strip:]
    return PurePosixPath(*parts) if parts else None


def _tar_members(tf: tarfile.TarFile, strip: int) -> Iterator[tarfile.TarInfo]:
    """Every member checked before it is extracted: no link of either kind (whatever the Python: the
    link filters of some releases can be walked out of the folder by a chain of symbolic links,
    CVE-2025-4517), no device or fifo, no path leaving the folder; names stripped of ``strip`` folders."""
    for member in tf:
        to = member.linkname if len(member.linkname) <= 60 else member.linkname[:57] + "..."
        if member.issym():
            raise _Link(member.name, f"a symbolic link (to {to})")
        if member.islnk():
            raise _Link(member.name, f"a hard link (to {to})")
        if not (member.isreg() or member.isdir()):
            raise _Link(member.name, "a device, fifo or other special file")
        rel = _safe_relpath(member.name, strip)
        if rel is None:
            continue
        # Owner and permissions as the "data" filter sets them: ours, no set-id bits, not executable.
        mode = (0o755 if member.isdir() else 0o644) if member.mode is None else (
            (member.mode & 0o755) | (0o700 if member.isdir() else 0o600))
        if member.isreg():
            mode &= ~0o111
        yield member.replace(name=str(rel), mode=mode, uid=None, gid=None, uname=None, gname=None, deep=False) \
            if hasattr(member, "replace") else _renamed(member, str(rel), mode)


def _renamed(member: tarfile.TarInfo, name: str, mode: int) -> tarfile.TarInfo:
    """``TarInfo.replace`` for Pythons without it."""
    import copy

    out = copy.copy(member)
    out.name, out.mode = name, mode
    return out


def _untar(archive: Path, out: Path, strip: int) -> None:
    with tarfile.open(archive, "r:*") as tf:
        if hasattr(tarfile, "data_filter"):  # a second line of defence where the filters exist
            tf.extractall(out, members=_tar_members(tf, strip), filter="data")
        else:
            tf.extractall(out, members=_tar_members(tf, strip))


def _copy_members(members, opener, out: Path, strip: int) -> None:
    """Extract zip/rar members one by one, each path checked, so nothing lands outside ``out``."""
    for name, is_dir, info in members:
        rel = _safe_relpath(name, strip)
        if rel is None:
            continue
        target = out / rel
        if is_dir:
            target.mkdir(parents=True, exist_ok=True)
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        with opener(info) as src, open(target, "wb") as dst:
            shutil.copyfileobj(src, dst, CHUNK)


def _zip_link(info: zipfile.ZipInfo) -> str | None:
    """What a zip member is when it is not a plain file or folder (Unix modes in the external attributes)."""
    mode = info.external_attr >> 16
    kind = stat.S_IFMT(mode)
    if not mode or kind in (0, stat.S_IFREG, stat.S_IFDIR):
        return None
    return "a symbolic link" if kind == stat.S_IFLNK else "a device, fifo or other special file"


def _unzip(archive: Path, out: Path, strip: int) -> None:
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        for info in infos:  # all checked before the first byte is written
            what = _zip_link(info)
            if what:
                raise _Link(info.filename, what)
        _copy_members(((i.filename, i.is_dir(), i) for i in infos), zf.open, out, strip)


def _unrar(archive: Path, out: Path, strip: int) -> None:
    try:
        import rarfile
    except ImportError:
        raise _NoTool("the Python package rarfile is not installed (pip install rarfile)") from None

    with rarfile.RarFile(archive) as rf:
        infos = rf.infolist()
        for info in infos:
            if info.is_symlink():
                raise _Link(info.filename, "a symbolic link")
            if getattr(info, "file_redir", None):  # RAR5 hard links, junctions and file copies
                raise _Link(info.filename, "a hard link or file reference")
        # Stored members are read directly; compressed ones need an external tool: say which up front.
        if any(i.compress_type != rarfile.RAR_M0 for i in infos if not i.is_dir()):
            try:
                rarfile.tool_setup()
            except rarfile.RarCannotExec:
                raise _NoTool("it needs one of the tools unrar, unar, 7z or bsdtar and none was found; "
                              "install one (Debian/Ubuntu: apt-get install unar)") from None
        _copy_members(((i.filename, i.is_dir(), i) for i in infos), rf.open, out, strip)


_FORMATS = ((".tar.gz", _untar), (".tgz", _untar), (".tar", _untar), (".zip", _unzip), (".rar", _unrar))


def unpacked_name(filename: str) -> str:
    """The default folder for an archive: its name without the archive suffix."""
    for suffix, _ in _FORMATS:
        if filename.lower().endswith(suffix):
            return filename[: -len(suffix)]
    return Path(filename).stem


def _corrupt_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, EOFError, zlib.error]
    if "rarfile" in sys.modules:
        errors.append(sys.modules["rarfile"].Error)
    return tuple(errors)


def sweep_unpacking(target: str | os.PathLike) -> list[Path]:
    """Remove the hidden ``.<target>.*.unpacking`` folders an interrupted unpack left beside ``target``.

    Only for a caller that alone unpacks into ``target`` (the fetch step holds the archive's lock).
    """
    target = Path(target)
    if not target.parent.is_dir():
        return []
    stale = [p for p in target.parent.glob(f".{io.glob_escape(target.name)}.*.unpacking")
             if p.is_dir() and not p.is_symlink()]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
        log.info("%s: removed a folder left by an interrupted unpack", p)
    return stale


def unpack(archive: str | os.PathLike, target: str | os.PathLike, *, strip: int = 0,
           marker: dict | None = None) -> None:
    """Unpack ``archive`` so that ``target`` holds its members (minus ``strip`` leading folders).

    The members go to a temporary sibling folder that replaces ``target`` only once everything is
    out; ``marker`` (e.g. the archive's sha256) is written inside it as ``.unpacked.json``. On any
    failure the temporary folder is removed and an earlier ``target`` is left as it was. Links of
    either kind, devices and fifos are refused, in every format: dataset archives need none.
    """
    archive, target = Path(archive), Path(target)
    extract = next((fn for suffix, fn in _FORMATS if archive.name.lower().endswith(suffix)), None)
    if extract is None:
        raise InstanceSearchError(f"{archive}: unknown archive format; expected .tar.gz, .tgz, .tar, .zip or .rar")
    untouched = f"{target} was left as it was" if target.exists() else f"no {target} was made"
    tmp = None
    try:
        try:
            sweep_unpacking(target)
            tmp = io.make_temp_dir(target, suffix=".unpacking")
            extract(archive, tmp, strip)
            if marker is not None:
                (tmp / MARKER).write_text(json.dumps(marker, sort_keys=True) + "\n", encoding="utf-8")
        except _NoTool as exc:
            raise InstanceSearchError(
                f"{archive}: cannot unpack rar: {exc}, then re-run; or unpack it by hand into {target}") from None
        except _Link as exc:
            raise InstanceSearchError(
                f"{archive}: unsafe member {exc.name}: {exc.what}, and dataset archives hold only files and "
                f"folders; not unpacked ({untouched}); the archive is not the expected one: delete it and re-run") from None
        except _Unsafe as exc:
            raise InstanceSearchError(
                f"{archive}: member {exc} would land outside {target}; not unpacked ({untouched}); "
                f"the archive is not the expected one: delete it and re-run") from None
        except OSError as exc:
            if exc.errno in DISK_FULL:
                raise _disk_full(archive, f"unpacking it into {target.parent} ({untouched})") from None
            if isinstance(exc, _corrupt_errors()):  # gzip.BadGzipFile is an OSError
                raise _corrupt(archive, exc, untouched) from None
            raise
        except _corrupt_errors() as exc:
            if isinstance(exc, getattr(tarfile, "FilterError", ())):
                raise InstanceSearchError(
                    f"{archive}: unsafe member ({exc}); not unpacked ({untouched}); "
                    f"the archive is not the expected one: delete it and re-run") from None
            raise _corrupt(archive, exc, untouched) from None
        io.replace_dir(tmp, target)
    finally:
        if tmp is not None:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            io.unregister_temporary(tmp)


def _corrupt(archive: Path, exc: BaseException, untouched: str) -> InstanceSearchError:
    reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return InstanceSearchError(
        f"{archive}: corrupt or truncated archive ({reason}); {untouched}; "
        f"delete the file and re-run to download it again, or replace it with a good copy")


def read_marker_file(path: str | os.PathLike) -> dict | None:
    """A small JSON record we wrote, or None when it is missing or unreadable (then it is redone)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def read_marker(folder: str | os.PathLike) -> dict | None:
    """The marker :func:`unpack` left in ``folder``, or None when the folder is missing or unfinished."""
    return read_marker_file(Path(folder) / MARKER)
