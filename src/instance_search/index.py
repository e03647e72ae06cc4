"""An index: one method's artifacts for one image collection, loaded once, then only read.

On disk an index is a method folder (``results/<dataset>/<method>/`` of a pipeline run, or the
folder ``instance-search index --out`` writes)::

    features/            the extraction (its manifest holds the settings a query image is extracted with)
    model.npz            what the method learned on the database (vocabulary, whitening)
    index/manifest.json  method, image counts, fingerprints of the model and of every index file
    index/*.npz          what the method's search and re-ranking read, each named for what it holds
    gnd.json             the image list (here, or ../gnd.json beside a pipeline's method folders)

The manifest's fingerprints are checked when an index is loaded for queries: a model or index file
swapped or edited afterwards, or an extraction re-run with other settings, is an error, never
silently wrong scores.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from . import groundtruth, methods, versions
from .hashing import sha256_file as sha256
from .errors import InstanceSearchError
from .io import load_npz, read_json, replace_dir, save_npz, write_json
from .methods.base import Database, Method, Queries

INDEX_DIR = "index"
MODEL_FILE = "model.npz"
FEATURES_DIR = "features"
GND_FILE = "gnd.json"
# what the extraction config holds besides the settings: not part of how a query image is extracted
_NOT_SETTINGS = ("images", "root")


def extraction_settings(features: str | os.PathLike) -> dict:
    """The extraction's settings from its manifest (images and root left out)."""
    manifest = Path(features) / "manifest.json"
    if not manifest.is_file():
        raise InstanceSearchError(f"{Path(features)}: not a finished feature folder (no manifest.json); "
                                  "re-run the extract step")
    config = read_json(manifest)["config"]
    return {k: v for k, v in config.items() if k not in _NOT_SETTINGS}


def write(out_dir: str | os.PathLike, method: str, files: dict[str, dict], *, n_images: int, n_database: int,
          model: str | os.PathLike, extraction: dict, encoding: dict) -> None:
    """Write an index folder atomically: ``<name>.npz`` per file, then the manifest, then rename."""
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    for name, arrays in files.items():
        save_npz(tmp / f"{name}.npz", **arrays)
    write_json(tmp / "manifest.json", {
        "method": method, "n_images": n_images, "n_database": n_database, "extraction": extraction,
        "encode": encoding,
        "model": {"file": os.path.relpath(Path(model).resolve(), out_dir.resolve()), "sha256": sha256(model)},
        "files": {f"{name}.npz": sha256(tmp / f"{name}.npz") for name in sorted(files)},
        "versions": versions.installed(),  # the libraries that decided these bytes (load_index compares)
    })
    replace_dir(tmp, out_dir)


def _manifest(index_dir: Path) -> dict:
    path = index_dir / "manifest.json"
    if not path.is_file():
        raise InstanceSearchError(f"{index_dir}: not a finished index (no manifest.json); run the encode step "
                                  "(make demo / snakemake) or instance-search index")
    return read_json(path)


def read_files(index_dir: str | os.PathLike, check: bool = False) -> tuple[dict, dict[str, dict]]:
    """(manifest, {name: arrays}) of an index folder; ``check``: every file's fingerprint too."""
    index_dir = Path(index_dir)
    manifest = _manifest(index_dir)
    files = {}
    for name, digest in manifest["files"].items():
        path = index_dir / name
        if not path.is_file():
            raise InstanceSearchError(f"{path}: missing; the index is incomplete, re-run encode")
        if check and sha256(path) != digest:
            raise InstanceSearchError(f"{path}: changed since the index was written (fingerprint differs); "
                                      "re-run encode")
        files[Path(name).stem] = load_npz(path)
    return manifest, files


@dataclass(eq=False)  # compared by identity: it holds arrays
class Index:
    """A method's database for one collection, with its ground truth (the image list, any queries)."""

    path: Path                  # the method folder
    method: Method
    gnd: groundtruth.GroundTruth
    db: Database
    manifest: dict
    image_root: Path
    stamp: int = 0              # the manifest's modification time when loaded (see changed())
    _encoder: object = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def dataset(self) -> str:
        return self.gnd.dataset

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.method.name}"

    @property
    def n_database(self) -> int:
        return self.gnd.n_database

    def image_path(self, i: int) -> Path:
        return self.image_root / self.gnd.images[i].path

    def changed(self) -> bool:
        """Whether the index on disk was written again since it was loaded (images added)."""
        try:
            return (self.path / INDEX_DIR / "manifest.json").stat().st_mtime_ns != self.stamp
        except FileNotFoundError:
            return False

    def benchmark_queries(self) -> Queries:
        return self.method.benchmark_queries(self.db, self.gnd)

    def image_query(self, path: str, width: int, height: int, box, searched: str | None = None) -> Queries:
        """The method's query for one image (and box, None: the whole image), extracted and encoded as
        the database was (the model and the extraction are loaded on first use, then kept).

        searched: "ls" (the box) or "gs" (the whole image) when the search reads only that one (a method
        may then skip computing the other); None: both."""
        with self._lock:
            if self._encoder is None:
                self._encoder = self.method.image_encoder(self.manifest["extraction"], self._model(), self.db)
        return self._encoder(path, width, height, box, searched)

    def _model(self) -> dict:
        model = (self.path / INDEX_DIR / self.manifest["model"]["file"]).resolve()
        if not model.is_file():
            raise InstanceSearchError(f"{model}: missing; the index is incomplete, re-run the codebook step")
        if sha256(model) != self.manifest["model"]["sha256"]:
            raise InstanceSearchError(f"{model}: not the model this index was encoded with (fingerprint differs); "
                                      "re-run encode")
        return load_npz(model)


def _gnd_file(path: Path) -> Path:
    for candidate in (path / GND_FILE, path.parent / GND_FILE):
        if candidate.is_file():
            return candidate
    raise InstanceSearchError(f"{path / GND_FILE}: missing (nor in {path.parent}); the index is incomplete")


def image_root(root: str, index_dir: Path) -> Path:
    """gnd.json's image folder; a relative one is relative to the checkout that ran the pipeline: the
    working directory when the command runs there, otherwise the folder above ``results/``."""
    p = Path(root)
    if p.is_absolute() or p.is_dir():
        return p
    checkout = index_dir.resolve().parent.parent.parent
    return checkout / p if (checkout / p).is_dir() else p


def open_index(index_dir: str | os.PathLike, gnd_path: str | os.PathLike, check: bool = False) -> Index:
    """The index in ``index_dir`` (an encode step's output) over the images of ``gnd_path``."""
    index_dir = Path(index_dir)
    manifest, files = read_files(index_dir, check)
    method = methods.get(manifest["method"])
    gnd = groundtruth.load(gnd_path)
    if manifest["n_images"] != len(gnd.images) or manifest["n_database"] != gnd.n_database:
        raise InstanceSearchError(f"{index_dir}: built for {manifest['n_images']} images ({manifest['n_database']} "
                                  f"in the database) but {gnd_path} lists {len(gnd.images)} ({gnd.n_database}); "
                                  "re-run encode")
    db = method.load(files, gnd.n_database)
    return Index(index_dir.parent, method, gnd, db, manifest, image_root(gnd.root, index_dir.parent),
                 stamp=(index_dir / "manifest.json").stat().st_mtime_ns)


def load_index(path: str | os.PathLike) -> Index:
    """Load a method folder for queries: every file checked against the manifest's fingerprints, and
    the extraction's settings against those the index was encoded with."""
    path = Path(path)
    if not path.is_dir():
        raise InstanceSearchError(f"{path}: index folder not found; pass results/<dataset>/<method> of a finished "
                                  "run, or a folder made by instance-search index")
    if not (path / INDEX_DIR / "manifest.json").is_file():
        raise InstanceSearchError(f"{path / INDEX_DIR / 'manifest.json'}: missing; the index is incomplete, run the "
                                  "pipeline (make demo / snakemake) or instance-search index first")
    index = open_index(path / INDEX_DIR, _gnd_file(path), check=True)
    if (path / FEATURES_DIR / "manifest.json").is_file() and \
            extraction_settings(path / FEATURES_DIR) != index.manifest["extraction"]:
        raise InstanceSearchError(f"{path / FEATURES_DIR}: extracted with other settings than the index was encoded "
                                  "with; re-run encode (snakemake / dvc repro)")
    # an index of before versions were recorded has none: nothing to compare
    versions.warn_if_built_elsewhere(str(path), tuple(sorted(index.manifest.get("versions", {}).items())))
    return index
