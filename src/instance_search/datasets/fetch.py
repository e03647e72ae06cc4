"""The fetch step: make a dataset's raw files present under ``data/<dataset>/``, checked.

Where a dataset comes from is ``datasets.<name>.source`` in params.yaml:

- ``generate``: the embedded benchmark, generated from ``generator`` (seeded);
- ``download``: the archives of :data:`sources.DATASETS` ``[<name>]``, downloaded, verified against
  the lock file and unpacked (:func:`sources.fetch_dataset`);
- ``local``: files already on this machine (``images``, ``groundtruth``), e.g. ../shared/data:
  their combined sha256 is recorded in the lock file the first time and checked afterwards.

Frozen mode (``fetch.frozen`` in params.yaml, or ``INSTANCE_SEARCH_FROZEN_LOCK=1`` read by the
step's script, as in CI): the lock file is the only authority, and a download or local copy it has
no sha256 for is refused instead of being recorded.

Every source ends with ``data/<dataset>/manifest.json``, the step's output, which later steps depend
on; it is rewritten only when its content changes, so make-like tools see no spurious change.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from .. import download as dl
from .. import io
from ..errors import InstanceSearchError
from . import sources, synthetic

log = logging.getLogger(__name__)

SOURCES = ("generate", "download", "local")


def _files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise InstanceSearchError(f"{root}: not found; check the dataset's images/groundtruth paths in params.yaml")
    return sorted(p for p in root.rglob("*") if p.is_file())


def tree_digest(*roots: str | os.PathLike) -> tuple[str, int, int]:
    """(sha256 over the relative names and sha256 of every file under the roots, files, bytes)."""
    h, n, size = hashlib.sha256(), 0, 0
    for root in map(Path, roots):
        for f in _files(root):
            rel = f.name if root.is_file() else f.relative_to(root).as_posix()
            h.update(f"{rel}\0{dl.sha256_file(f)}\n".encode())
            n += 1
            size += f.stat().st_size
    return h.hexdigest(), n, size


def _write_manifest(path: Path, manifest: dict) -> None:
    if dl.read_marker_file(path) != manifest:
        io.write_json(path, manifest)


def fetch(params: dict, dataset: str, data_dir: str | os.PathLike, lock_path: str | os.PathLike, *,
          frozen: bool | None = None) -> dict:
    """Make ``dataset`` present under ``data_dir``; returns the manifest written there.

    ``frozen`` (default: ``fetch.frozen`` of the params): refuse what the lock has no sha256 for.
    """
    if frozen is None:
        frozen = bool((params.get("fetch") or {}).get("frozen", False))
    cfg = params["datasets"][dataset]
    out = Path(data_dir) / dataset
    source = cfg["source"]
    if cfg.get("distractors"):  # e.g. data/revisitop1m: the registry dataset named by the folder
        folder = Path(cfg["distractors"])
        if folder.name not in sources.DATASETS:
            raise InstanceSearchError(f"params.yaml: key datasets.{dataset}.distractors: {folder} is not a folder "
                                      f"named after a downloadable dataset ({', '.join(sorted(sources.DATASETS))})")
        sources.fetch_dataset(folder.name, folder.parent, lock_path, frozen=frozen)
    if source == "download":
        return sources.fetch_dataset(dataset, data_dir, lock_path, frozen=frozen)
    if source == "generate":
        counts = synthetic.generate(out, seed=params["seed"], **cfg["generator"])
        digest, n, _ = tree_digest(out / "jpg", out / "gt")
        manifest = {"dataset": dataset, "source": source, "files": n, "sha256": digest, "counts": counts}
    elif source == "local" and cfg["format"] == "folder":
        # your own photos: no published copy to check against a lock; the digest re-runs what follows
        # whenever a photo (or the query file) changes
        digest, n, _ = tree_digest(*(p for p in (cfg["images"], cfg.get("queries")) if p))
        manifest = {"dataset": dataset, "source": source, "images": cfg["images"], "files": n, "sha256": digest}
    elif source == "local":
        digest, n, size = tree_digest(cfg["images"], cfg["groundtruth"])
        key = f"{dataset}/local"
        expected = dl.read_lock(lock_path).get(key, {}).get("sha256")
        if expected is None:
            if frozen:
                raise dl.frozen_error(cfg["images"], key, lock_path)
            dl.record_lock(lock_path, key, digest, size)
            dl.log_lock_changed(lock_path, f"{key} ({n} local files)", digest)
        elif expected != digest:
            raise InstanceSearchError(
                f"{cfg['images']}: the local files of {dataset} differ from the copy recorded in {lock_path} "
                f"(sha256 {digest[:12]}... vs {expected[:12]}...); restore the original files, or delete the "
                f"entry {key} there to accept these")
        manifest = {"dataset": dataset, "source": source, "images": cfg["images"],
                    "groundtruth": cfg["groundtruth"], "files": n, "sha256": digest}
    else:
        raise InstanceSearchError(f"params.yaml: key datasets.{dataset}.source: {source!r}; expected one of {', '.join(SOURCES)}")
    _write_manifest(out / "manifest.json", manifest)
    log.info("%s: %d files present and checked (%s)", dataset, manifest["files"], source)
    return manifest
