"""Atomic output writing and checked image reading.

Every output is written to a temporary name in the same folder and renamed into place, so an
interrupted run never leaves a half-written file that looks finished.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import cv2
import numpy as np

from .errors import InstanceSearchError


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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
    so that two identical runs produce identical files.
    """
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asarray(arrays[name]), allow_pickle=False)
    write_bytes(path, buf.getvalue())


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.asarray(array), allow_pickle=False)
    write_bytes(path, buf.getvalue())


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
    if old is not None:
        shutil.rmtree(old)


def read_image(path: str | os.PathLike, flags: int = cv2.IMREAD_COLOR) -> np.ndarray:
    """Read an image with OpenCV; a missing, truncated or non-image file is a one-line error.

    OpenCV silently decodes the readable part of a truncated JPEG, so the file's end-of-image
    marker is checked as well.
    """
    path = Path(path)
    if not path.is_file():
        raise InstanceSearchError(f"{path}: image not found; check the dataset folder")
    data = np.fromfile(path, dtype=np.uint8)
    if path.suffix.lower() in (".jpg", ".jpeg") and (data.size < 4 or data[-2:].tobytes() != b"\xff\xd9"
                                                    and b"\xff\xd9" not in data[-64:].tobytes()):
        raise InstanceSearchError(f"{path}: truncated or corrupt JPEG (no end-of-image marker); replace the file or list it as corrupt")
    image = cv2.imdecode(data, flags | cv2.IMREAD_IGNORE_ORIENTATION)
    if image is None or image.size == 0:
        raise InstanceSearchError(f"{path}: not a readable image; replace the file or list it as corrupt")
    return image
