"""Sharded on-disk store of per-image local features with their positions.

Layout of a finished store (a folder)::

    manifest.json        n_images, shard_size, descriptor dim/dtype, the extraction config
    shard-00000.npz      xy float32 (n, 2) pixel positions, desc (n, D), offsets int64 (m + 1)
    ...

(:func:`build_shards` writes other shard layouts the same way: frcnn's proposals, for one.)

Shards are written into ``<out>.partial/`` first, each recorded (name, bytes, mtime) in its
``shards.json`` once written; a restarted extraction keeps the recorded shards whose size and time
still match when its config (parameters and image list) is unchanged, and extracts the others again.
Only when every shard exists are the manifest's shards (nothing else of the ``.partial`` folder:
no stray file changes the output's hash) moved into a fresh folder that then replaces ``<out>``, so
an interrupted run never looks finished.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import json
import logging
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
from tqdm import tqdm

from ..errors import InstanceSearchError
from ..io import glob_escape, load_npz, make_temp_dir, read_json, replace_dir, save_npz, write_json
from . import parts

log = logging.getLogger(__name__)

# extract(i) -> (xy float32 (n, 2), desc (n, D)) for image i of the list; or, batched,
# extract(range of images) -> a list of those pairs (a CNN runs whole batches at once)
ExtractFn = Callable[[int], tuple[np.ndarray, np.ndarray]]
BatchExtractFn = Callable[[range], list[tuple[np.ndarray, np.ndarray]]]


PROGRESS = "shards.json"  # in <out>.partial: {shard name: {"bytes": ..., "mtime_ns": ...}} of finished shards


def _shard_name(s: int) -> str:
    return f"shard-{s:05d}.npz"


def _read_progress(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _finished(path: Path, entry) -> bool:
    """A shard written by an earlier run and recorded then, unchanged since (size and time)."""
    try:
        st = path.stat()
    except OSError:
        return False
    return (isinstance(entry, dict) and path.is_file() and st.st_size == entry.get("bytes")
            and st.st_mtime_ns == entry.get("mtime_ns"))


def config_digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def build_store(out_dir: str | os.PathLike, n_images: int, extract: ExtractFn | BatchExtractFn, *,
                shard_size: int, config: dict, desc: str = "extract", workers: int = 1, batched: bool = False,
                part: tuple[int, int] | None = None) -> None:
    """Extract features of images 0..n_images-1 into a sharded store at ``out_dir``.

    Per-image ``extract``: ``workers`` threads extract the images of a shard concurrently (OpenCV
    releases the GIL); the result does not depend on their number. ``batched``: ``extract`` gets a
    whole shard's range of images and schedules them itself. ``part`` (i, n): only that part's
    shards (:mod:`.parts`), into a part folder that :func:`gather_store` joins with the others.
    """
    build_shards(out_dir, n_images, lambda images: _local_features(extract, images, batched, workers),
                 shard_size=shard_size, config=config, desc=desc, part=part)


def build_shards(out_dir: str | os.PathLike, n_images: int, make_shard: Callable[[range], dict[str, np.ndarray]], *,
                 shard_size: int, config: dict, desc: str = "extract", part: tuple[int, int] | None = None,
                 key: str = "desc") -> None:
    """:func:`build_store` for any shard layout: ``make_shard(images)`` returns a shard's arrays, among
    them ``offsets`` (per image, into the rows of ``key``: the manifest's dim, dtype and n_features)."""
    out_dir = Path(out_dir)
    images = parts.image_range(n_images, shard_size, part)
    first, stop = images.start // shard_size, -(-images.stop // shard_size)
    partial = out_dir.with_name(out_dir.name + ".partial")
    for stale in out_dir.parent.glob(f".{glob_escape(out_dir.name)}.*.tmp"):  # a finishing folder of a killed run
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    digest = config_digest(config if part is None else {**config, "part": list(part)})
    stamp = partial / "config.json"
    if partial.exists() and (not stamp.is_file() or read_json(stamp).get("digest") != digest):
        log.info("%s: discarding shards of an earlier run with another configuration", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    write_json(stamp, {"digest": digest, "config": config})

    n_shards = (n_images + shard_size - 1) // shard_size
    names = {s: _shard_name(s) for s in range(first, stop)}
    progress = _read_progress(partial / PROGRESS)
    progress = {name: progress.get(name) for name in names.values() if _finished(partial / name, progress.get(name))}
    if progress:
        log.info("resuming: %d of %d shards already extracted", len(progress), len(names))
    dim, dtype, total = None, None, 0
    with tqdm(total=len(images), desc=desc, unit="img", mininterval=5) as bar:
        for s in range(first, stop):
            path = partial / names[s]
            lo, hi = s * shard_size, min(n_images, (s + 1) * shard_size)
            if names[s] not in progress:
                dim, dtype, rows = _write_shard(path, make_shard, range(lo, hi), key)
                _return_freed_memory()
                st = path.stat()
                progress[names[s]] = {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}
                write_json(partial / PROGRESS, progress)
            else:  # written by an earlier run: read back
                with np.load(path) as shard:
                    dim, dtype, rows = _summary(shard, key)
            total += rows
            bar.update(hi - lo)
            if (s + 1 - first) % 10 == 0 or s + 1 == stop:
                log.info("%d/%d shards", s + 1 - first, len(names))
    manifest = {
        "n_images": n_images, "shard_size": shard_size, "n_shards": n_shards,
        "dim": dim, "dtype": dtype, "n_features": total, "config": config,
    }
    _finish(out_dir, {partial / name for name in names.values()}, manifest, part, images)
    shutil.rmtree(partial)
    log.info("%s: %d features of %d images", out_dir, total, len(images))


def _write_shard(path: Path, make_shard, images: range, key: str) -> tuple[int, str, int]:
    """Extract one shard's images and save them; their arrays are freed when this returns."""
    arrays = make_shard(images)
    save_npz(path, **arrays)
    return _summary(arrays, key)


def _summary(shard, key: str) -> tuple[int, str, int]:
    """(dim, dtype, rows) of a shard's ``key`` array, as the manifest records them."""
    return shard[key].shape[1], str(shard[key].dtype), int(shard["offsets"][-1])


def _local_features(extract, images: range, batched: bool, workers: int) -> dict[str, np.ndarray]:
    """A shard of local features: positions ``xy``, descriptors ``desc`` and per-image ``offsets``."""
    if batched:
        xys, descs = zip(*extract(images))
    else:
        pool = ThreadPoolExecutor(max_workers=max(1, workers))
        try:
            xys, descs = zip(*pool.map(extract, images))
        finally:  # interrupted: do not wait for the shard's queued images
            pool.shutdown(wait=True, cancel_futures=True)
    counts = np.array([len(x) for x in xys], dtype=np.int64)
    return {"xy": np.concatenate(xys).astype(np.float32, copy=False).reshape(-1, 2), "desc": np.concatenate(descs),
            "offsets": np.concatenate([[0], np.cumsum(counts)])}


@functools.cache
def _malloc_trim():
    """glibc's malloc_trim, or None where the C library is another."""
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def _return_freed_memory() -> None:
    """Hand the C heap's freed pages back to the system (glibc's malloc_trim; elsewhere nothing). glibc
    keeps a freed shard's pages, and the next shard's DataLoader workers fork that bigger heap
    (docs/settings.md says how much)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def _finish(out_dir: Path, shards: set[Path], manifest: dict, part=None, images: range | None = None) -> None:
    """The finished store (or part): the shards and the manifest, nothing else. The shards are linked
    (moved where links are not possible), so an interruption here loses none."""
    final = make_temp_dir(out_dir)
    for path in sorted(shards):
        try:
            os.link(path, final / path.name)
        except OSError:
            os.replace(path, final / path.name)
    if part is None:
        write_json(final / "manifest.json", manifest)
    else:
        parts.write_manifest(final, part, images, manifest["config"],
                             store={k: manifest[k] for k in ("dim", "dtype", "n_features", "shard_size")})
    replace_dir(final, out_dir)


def gather_store(folders: list[str | os.PathLike], n_images: int, out_dir: str | os.PathLike) -> None:
    """The store one job would have written, from the part folders of :func:`build_store` (linked)."""
    found = parts.read_manifests(folders, n_images)
    stores = [m["store"] for m in found]
    shard_size = stores[0]["shard_size"]
    written = [s for s in stores if s["dim"] is not None]  # a part with no shard (more parts than shards)
    manifest = {
        "n_images": n_images, "shard_size": shard_size, "n_shards": -(-n_images // shard_size),
        "dim": written[0]["dim"] if written else None, "dtype": written[0]["dtype"] if written else None,
        "n_features": sum(s["n_features"] for s in stores), "config": found[0]["config"],
    }
    shards = {path for m in found for path in m["folder"].glob("shard-*.npz")}
    if len(shards) != manifest["n_shards"]:
        raise InstanceSearchError(f"{Path(out_dir)}: the parts hold {len(shards)} shards, not "
                                  f"{manifest['n_shards']}; re-run the extraction's part jobs")
    _finish(Path(out_dir), shards, manifest)
    log.info("%s: %d features of %d images, gathered from %d parts", out_dir, manifest["n_features"], n_images,
             len(found))


class FeatureStore:
    """Read access to a finished store: per image, or shard by shard."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        manifest = self.path / "manifest.json"
        if not manifest.is_file():
            raise InstanceSearchError(f"{self.path}: not a finished feature store (no manifest.json); re-run the extract step")
        m = read_json(manifest)
        self.n_images: int = m["n_images"]
        self.shard_size: int = m["shard_size"]
        self.n_shards: int = m["n_shards"]
        self.dim: int = m["dim"]
        self.n_features: int = m["n_features"]
        self.config: dict = m["config"]
        self._cache: tuple[int, dict] | None = None

    def shard(self, s: int) -> dict[str, np.ndarray]:
        if self._cache is None or self._cache[0] != s:
            self._cache = (s, load_npz(self.path / _shard_name(s)))
        return self._cache[1]

    def image(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(xy, desc) of image i."""
        if not 0 <= i < self.n_images:
            raise IndexError(i)
        sh = self.shard(i // self.shard_size)
        j = i % self.shard_size
        a, b = sh["offsets"][j], sh["offsets"][j + 1]
        return sh["xy"][a:b], sh["desc"][a:b]

    def shards(self, n_images: int | None = None) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield (first image index, shard arrays) for the shards covering images[:n_images]."""
        n = self.n_images if n_images is None else n_images
        for s in range(self.n_shards):
            if s * self.shard_size >= n:
                break
            yield s * self.shard_size, self.shard(s)
