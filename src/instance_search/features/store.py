"""Sharded on-disk store of per-image local features with their positions.

Layout of a finished store (a folder)::

    manifest.json        n_images, shard_size, descriptor dim/dtype, the extraction config
    shard-00000.npz      xy float32 (n, 2) pixel positions, desc (n, D), offsets int64 (m + 1)
    ...

Shards are written into ``<out>.partial/`` first; a restarted extraction keeps the shards already
there when its config (parameters and image list) is unchanged, and the folder is renamed onto
``<out>`` only when every shard exists, so an interrupted run never looks finished.
"""

from __future__ import annotations

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
from ..io import load_npz, read_json, replace_dir, save_npz, write_json

log = logging.getLogger(__name__)

# extract(i) -> (xy float32 (n, 2), desc (n, D)) for image i of the list; or, batched,
# extract(range of images) -> a list of those pairs (a CNN runs whole batches at once)
ExtractFn = Callable[[int], tuple[np.ndarray, np.ndarray]]
BatchExtractFn = Callable[[range], list[tuple[np.ndarray, np.ndarray]]]


def _shard_name(s: int) -> str:
    return f"shard-{s:05d}.npz"


def config_digest(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()


def build_store(out_dir: str | os.PathLike, n_images: int, extract: ExtractFn | BatchExtractFn, *,
                shard_size: int, config: dict, desc: str = "extract", workers: int = 1, batched: bool = False) -> None:
    """Extract features of images 0..n_images-1 into a sharded store at ``out_dir``.

    Per-image ``extract``: ``workers`` threads extract the images of a shard concurrently (OpenCV
    releases the GIL); the result does not depend on their number. ``batched``: ``extract`` gets a
    whole shard's range of images and schedules them itself.
    """
    out_dir = Path(out_dir)
    partial = out_dir.with_name(out_dir.name + ".partial")
    digest = config_digest(config)
    stamp = partial / "config.json"
    if partial.exists() and (not stamp.is_file() or read_json(stamp).get("digest") != digest):
        log.info("%s: discarding shards of an earlier run with another configuration", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    write_json(stamp, {"digest": digest, "config": config})

    n_shards = (n_images + shard_size - 1) // shard_size
    done = sum((partial / _shard_name(s)).is_file() for s in range(n_shards))
    if done:
        log.info("resuming: %d of %d shards already extracted", done, n_shards)
    dim, dtype, total = None, None, 0
    with tqdm(total=n_images, desc=desc, unit="img", mininterval=5) as bar:
        for s in range(n_shards):
            path = partial / _shard_name(s)
            lo, hi = s * shard_size, min(n_images, (s + 1) * shard_size)
            if not path.is_file():
                if batched:
                    xys, descs = zip(*extract(range(lo, hi)))
                else:
                    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
                        xys, descs = zip(*pool.map(extract, range(lo, hi)))
                counts = np.array([len(x) for x in xys], dtype=np.int64)
                save_npz(path, xy=np.concatenate(xys).astype(np.float32, copy=False).reshape(-1, 2),
                         desc=np.concatenate(descs), offsets=np.concatenate([[0], np.cumsum(counts)]))
            with np.load(path) as shard:
                dim, dtype = shard["desc"].shape[1], str(shard["desc"].dtype)
                total += int(shard["offsets"][-1])
            bar.update(hi - lo)
            if (s + 1) % 10 == 0 or s + 1 == n_shards:
                log.info("%d/%d shards", s + 1, n_shards)
    write_json(partial / "manifest.json", {
        "n_images": n_images, "shard_size": shard_size, "n_shards": n_shards,
        "dim": dim, "dtype": dtype, "n_features": total, "config": config,
    })
    stamp.unlink()
    replace_dir(partial, out_dir)
    log.info("%s: %d features of %d images", out_dir, total, n_images)


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
