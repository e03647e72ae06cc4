"""Atomic output writing and checked image reading.

Every output is written to a temporary name in the same folder (``.<name>.<random>.tmp``) and
renamed into place, so an interrupted run never leaves a half-written file that looks finished.
Temporaries in progress are registered (:func:`remove_temporaries` deletes them when a step is
interrupted, see :mod:`.runner`) and hold an advisory lock, so that :func:`sweep_temporaries` can
remove the stale ones a killed run left behind without touching another process's. Outputs get
the permissions of any file created under the current umask (``mkstemp`` alone would give 0600).
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import os
import shutil
import sys
import tempfile
import threading
import zipfile
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from .errors import InstanceSearchError

try:
    import fcntl
except ImportError:  # not POSIX: no lock, so the sweep leaves every temporary alone
    fcntl = None

TMP_SUFFIX = ".tmp"
# Images with more pixels than this are refused from their header, before any decoding allocates
# memory for them (a 200-megapixel RGB image takes 600 MB once decoded).
MAX_PIXELS = 200_000_000
# A JPEG cannot hold more pixels than this per byte of file: even a flat progressive image takes at
# least one bit per 8x8 block (libjpeg's flattest output is ~255 pixels a byte). A file that declares
# more is truncated or forged, and would decode to a large block of filler: refused before decoding.
JPEG_MAX_PIXELS_PER_BYTE = 2048

# --- the temporaries of this process ---------------------------------------------------------

_temporaries: dict[Path, int | None] = {}  # path -> fd holding its lock (None for folders)
# Reentrant: the signal handler (runner) runs remove_temporaries in the main thread, possibly while
# that thread is inside register/unregister holding the lock.
_temporaries_lock = threading.RLock()


def register_temporary(path: str | os.PathLike, fd: int | None = None) -> None:
    """Note a temporary file or folder that :func:`remove_temporaries` deletes on interruption."""
    with _temporaries_lock:
        _temporaries[Path(path)] = fd


def unregister_temporary(path: str | os.PathLike) -> None:
    with _temporaries_lock:
        _temporaries.pop(Path(path), None)


def remove_temporaries() -> list[Path]:
    """Delete every registered temporary (an interrupted step); returns those that existed."""
    with _temporaries_lock:
        items = list(_temporaries)
        _temporaries.clear()
    removed = []
    for path in items:
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink()
            removed.append(path)
        except FileNotFoundError:
            pass
        except OSError:
            pass  # best effort: the next run's sweep gets it
    return removed


def _umask() -> int:
    """The process umask, read without changing it where the system allows (Linux: /proc)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)  # elsewhere: set and restore (a brief window, at worst a 0644 file)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode an ordinary ``open()``/``mkdir()`` would give under the current umask."""
    return (0o777 if directory else 0o666) & ~_umask()


def make_temp_dir(target: str | os.PathLike, suffix: str = TMP_SUFFIX) -> Path:
    """A registered temporary folder beside ``target`` (``.<name>.<random><suffix>``), umask's mode."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent))
    register_temporary(tmp)
    os.chmod(tmp, default_mode(directory=True))
    return tmp


def _lock_nowait(fd: int) -> bool:
    if fcntl is None:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def sweep_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the stale temporaries of ``path`` (``.<name>.*.tmp`` beside it) that a killed run left.

    One that another process is writing holds its lock and is left alone; so is any of this process.
    """
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    with _temporaries_lock:
        ours = set(_temporaries)
    for tmp in path.parent.glob(f".{glob_escape(path.name)}.*{TMP_SUFFIX}"):
        if tmp in ours or tmp.is_symlink():
            continue
        if tmp.is_dir():
            continue  # folders (make_temp_dir) are swept by their owners, which know when they are stale
        try:
            fd = os.open(tmp, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _lock_nowait(fd) and os.fstat(fd).st_ino == os.stat(tmp).st_ino:
                tmp.unlink()
                removed.append(tmp)
        except OSError:
            pass
        finally:
            os.close(fd)
    return removed


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success.

    The temporary is registered (removed if the step is interrupted) and locked while in use; stale
    temporaries of ``path`` from a killed run are swept first. The result has the umask's mode.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sweep_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    tmp_path = Path(tmp)
    register_temporary(tmp_path, fd)
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.fchmod(fd, default_mode())
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        unregister_temporary(tmp_path)
        with contextlib.suppress(FileNotFoundError):
            tmp_path.unlink()
        os.close(fd)


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Deterministic JSON: sorted keys, fixed indentation, trailing newline."""
    write_text(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    path = Path(path)
    if not path.is_file():
        raise InstanceSearchError(f"{path}: file not found; run the step that produces it first")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InstanceSearchError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); delete it and re-run its step") from None


def save_npz(path: str | os.PathLike, **arrays: np.ndarray) -> None:
    """Write arrays as an uncompressed ``.npz`` whose bytes depend only on the arrays.

    ``np.savez`` stamps each member with the current time; here every member gets a fixed date
    so that two identical runs produce identical files. Written straight into the atomic temporary
    (not built in memory first: a large index would be held twice more).
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f, \
            zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(arrays[name]), allow_pickle=False)


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.lib.format.write_array(f, np.asarray(array), allow_pickle=False)


def load_npy(path: str | os.PathLike) -> np.ndarray:
    path = Path(path)
    if not path.is_file():
        raise InstanceSearchError(f"{path}: file not found; run the step that produces it first")
    try:
        return np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InstanceSearchError(f"{path}: unreadable array file ({exc}); delete it and re-run its step") from None


def load_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise InstanceSearchError(f"{path}: file not found; run the step that produces it first")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (ValueError, OSError, EOFError) as exc:
        raise InstanceSearchError(f"{path}: unreadable array file ({exc}); delete it and re-run its step") from None


def replace_dir(tmp_dir: str | os.PathLike, final_dir: str | os.PathLike) -> None:
    """Move a finished folder into place, replacing an older one (the old one is removed last)."""
    final_dir = Path(final_dir)
    old = None
    if final_dir.exists():
        old = final_dir.with_name(f".{final_dir.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(final_dir, old)
    os.replace(tmp_dir, final_dir)
    unregister_temporary(tmp_dir)
    if old is not None:
        shutil.rmtree(old)


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    import ctypes
    import ctypes.util

    if not sys.platform.startswith("linux"):
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    if not hasattr(libc, "renameat2"):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EPERM):  # a file system or kernel without it
        return False
    raise OSError(err, os.strerror(err), str(a))


def swap_dir(new_dir: str | os.PathLike, final_dir: str | os.PathLike) -> None:
    """Put the finished folder ``new_dir`` in the place of the existing ``final_dir`` in one atomic
    exchange, so that a reader (or a kill) sees the old folder or the new one, never neither; the old
    one is removed afterwards. Where the system cannot exchange, :func:`replace_dir`'s two renames."""
    new_dir, final_dir = Path(new_dir), Path(final_dir)
    if final_dir.exists() and _renameat2_exchange(new_dir, final_dir):
        unregister_temporary(new_dir)
        shutil.rmtree(new_dir)  # the old folder, now under the temporary name
        return
    replace_dir(new_dir, final_dir)


# --- images -----------------------------------------------------------------------------------

class UnreadableImage(InstanceSearchError):
    """An image file that cannot be used; ``reason`` is the short cause (for lists of many files),
    ``detail`` the decoder's own words (in the message of one file)."""

    def __init__(self, path: Path, reason: str, what_to_do: str, detail: str = ""):
        super().__init__(f"{path}: {reason}{f' ({detail})' if detail else ''}; {what_to_do}")
        self.path, self.reason, self.detail = path, reason, detail


_REPLACE = "replace the file or list it as corrupt"
_JPEG_MAGIC, _PNG_MAGIC = b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n"


def _first_line(exc: BaseException) -> str:
    text = (str(exc).splitlines() or [""])[0].strip() or type(exc).__name__
    return text if len(text) <= 100 else text[:97] + "..."


def _check_with_pil(path: Path, data: np.ndarray) -> None:
    """Header size first (nothing allocated), then the decoder's own verdict on the whole file.

    JPEG: a reduced-size decode (1/8 scale) that still reads every byte of every scan, so a
    truncated file fails (``LOAD_TRUNCATED_IMAGES`` off) while bytes after the end marker do not
    matter. PNG: every chunk's CRC up to IEND (OpenCV then decodes the pixels and fails on an
    incomplete image stream). Other formats: the header only.
    """
    from PIL import Image, ImageFile, JpegImagePlugin, PngImagePlugin

    head = data[:8].tobytes()
    fp = io.BytesIO(data.tobytes())
    kind = "JPEG" if head.startswith(_JPEG_MAGIC) else "PNG" if head.startswith(_PNG_MAGIC) else None
    limit = MAX_PIXELS
    try:
        if kind == "JPEG":  # the plugin class itself: Pillow's own bomb limit (~179 MP) is not ours
            im = JpegImagePlugin.JpegImageFile(fp)
        elif kind == "PNG":
            im = PngImagePlugin.PngImageFile(fp)
        else:
            limit = min(MAX_PIXELS, 2 * Image.MAX_IMAGE_PIXELS) if Image.MAX_IMAGE_PIXELS else MAX_PIXELS
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                im = Image.open(fp)
    except Image.DecompressionBombError:
        raise UnreadableImage(path, f"too many pixels (limit {limit})", "downscale the image or leave it out") from None
    except Image.UnidentifiedImageError:
        raise UnreadableImage(path, "not a readable image", _REPLACE) from None
    except Exception as exc:  # a decoder's verdict on hostile bytes: any error means unreadable
        raise UnreadableImage(path, "not a readable image", _REPLACE, _first_line(exc)) from None
    with im:
        width, height = im.size
        if width * height > limit:
            raise UnreadableImage(path, f"too many pixels (limit {limit}): {width}x{height}",
                                  "downscale the image or leave it out")
        if width <= 0 or height <= 0:
            raise UnreadableImage(path, "not a readable image", _REPLACE, f"size {width}x{height}")
        if kind == "JPEG" and width * height > JPEG_MAX_PIXELS_PER_BYTE * data.size:
            raise UnreadableImage(path, "truncated or corrupt JPEG", _REPLACE,
                                  f"{width}x{height} pixels declared in {data.size} bytes")
        if kind is None:
            return
        if ImageFile.LOAD_TRUNCATED_IMAGES:  # someone switched Pillow's check off for the process
            raise InstanceSearchError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES is set; truncated images "
                                      "would pass unnoticed: leave it False")
        try:
            if kind == "JPEG":
                im.draft("L", (1, 1))
                im.load()
            else:
                im.verify()
        except Exception as exc:
            raise UnreadableImage(path, f"truncated or corrupt {kind}", _REPLACE, _first_line(exc)) from None


def read_image(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Read an image with OpenCV; a missing, truncated, oversized or non-image file is a one-line error.

    Pillow checks the file first (:func:`_check_with_pil`): its header for the size (more than
    :data:`MAX_PIXELS` is refused before any decoding) and its decoder for truncation, which
    OpenCV does not report in every version. The pixels are OpenCV's.
    """
    path = Path(path)
    if not path.is_file():
        raise InstanceSearchError(f"{path}: image not found; check the dataset folder")
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise UnreadableImage(path, "cannot read the file", "check its permissions", str(exc.strerror or exc)) from None
    if data.size == 0:
        raise UnreadableImage(path, "not a readable image", _REPLACE, "empty file")
    _check_with_pil(path, data)
    try:
        image = cv2.imdecode(data, flags | cv2.IMREAD_IGNORE_ORIENTATION)
    except cv2.error as exc:
        raise UnreadableImage(path, "not a readable image", _REPLACE, _first_line(exc)) from None
    if image is None or image.size == 0:
        raise UnreadableImage(path, "not a readable image", _REPLACE)
    return image
