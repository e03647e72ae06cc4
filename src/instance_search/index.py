"""A built index, loaded once for interactive queries (``instance-search query`` / ``serve``).

An index is the folder a pipeline run leaves for one dataset and method, ``results/<dataset>/<method>``::

    features/manifest.json   the extraction config (read, never re-typed: the query is extracted the same way)
    codebook.npz             the vocabulary: centroids (and the PCA-whitening, when the method has one)
    bow.npz                  database word counts and word weights (idf)
    assign.npz               each image's assignment map (positions and words) for window re-ranking
    ../gnd.json              the dataset's image list (names, paths, sizes)

Search and re-ranking parameters are not part of the built artifacts: they come from a params file
(``params.yaml`` by default) and the index records which one.

A query image goes through the pipeline's own code: the method's extractor gives its raw features
as the store would hold them (:data:`IMAGE_EXTRACTORS`, the only per-method part here), then the
method's shard reader (``methods.Method.shard_features``: RootSIFT, CNN map upsampling ...) and the
vocabulary (whitening, nearest word) turn them into words exactly as the encode step did.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import scipy.sparse as sp

from . import bow, groundtruth, methods, search
from .codebook import Vocabulary
from .config import load_params
from .errors import InstanceSearchError
from .features import sift
from .features.store import FeatureStore
from .io import load_npy, load_npz

# extract(image path, width, height) -> raw (xy, desc) of one image, as the feature store holds them
RawExtractFn = Callable[[str, int, int], tuple[np.ndarray, np.ndarray]]

IMAGE_EXTRACTORS: dict[str, Callable[[dict], RawExtractFn]] = {}


def image_extractor(name: str):
    """Register the one-image extractor of a method: store config -> :data:`RawExtractFn`."""
    def add(make: Callable[[dict], RawExtractFn]) -> Callable[[dict], RawExtractFn]:
        IMAGE_EXTRACTORS[name] = make
        return make
    return add


def _config_values(config: dict, keys: tuple[str, ...]) -> list:
    missing = [k for k in keys if k not in config]
    if missing:
        raise KeyError(missing[0])
    return [config[k] for k in keys]


@image_extractor("sift")
def _sift_image(config: dict) -> RawExtractFn:
    max_features, contrast, max_side = _config_values(config, ("max_features", "contrast_threshold", "max_side"))
    # a detector per call, as in the extract step: OpenCV objects are not promised to be thread-safe
    return lambda path, width, height: sift.extract(path, sift.make_detector(max_features, contrast), max_side)


@image_extractor("blcf")
def _blcf_image(config: dict) -> RawExtractFn:
    from .features import cnn

    backbone, layer, max_side, half = _config_values(config, ("backbone", "layer", "max_side", "half"))
    extractor = cnn.Extractor(backbone, layer, "auto", half)  # the network is loaded once, with the index
    if extractor.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        _share_cores()

    def extract(path: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        return cnn.extract_images(extractor, [path], [(width, height)], max_side=max_side, batch_size=1,
                                  workers=0)[0]
    return extract


def _share_cores() -> None:
    """One query's CNN uses half the cores (2 cores: one thread), unless OMP_NUM_THREADS says otherwise.

    torch's default, a spinning OpenMP thread per core, collapses when anything else runs: on this
    project's busy 2-core machine, one thread ran mobilenet_v2 on a 340-px image 5x faster than two
    (benchmarks/query_latency.py); the web server's requests run in parallel threads anyway.
    """
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) // 2)))


def _schema_for(params_path: Path) -> Path | None:
    schema = params_path.resolve().parent / "workflow" / "schemas" / "params.schema.json"
    return schema if schema.is_file() else None


def read_query_params(params_path: str | os.PathLike, method: str) -> dict:
    """The ``search`` and ``rerank`` sections of ``method`` in a params file (validated when its schema is found)."""
    params_path = Path(params_path)
    schema = _schema_for(params_path)
    if schema is not None:
        params = load_params(params_path, schema)
    else:  # a params file outside a checkout: read it as it is, check only what is used
        import yaml

        if not params_path.is_file():
            raise InstanceSearchError(f"{params_path}: parameter file not found; pass --params")
        try:
            params = yaml.safe_load(params_path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError:
            raise InstanceSearchError(f"{params_path}: not valid YAML; fix the syntax") from None
    section = params.get(method) if isinstance(params, dict) else None
    needed = {"search": ("query", "weight_absent"), "rerank": ("top", "cell", "scales", "aspect_ratios", "stride")}
    for part, keys in needed.items():
        for key in keys:
            if not isinstance(section, dict) or not isinstance(section.get(part), dict) or key not in section[part]:
                raise InstanceSearchError(f"{params_path}: key {method}.{part}.{key} not found; "
                                          "pass the params file the index was built with (--params)")
    return {part: {k: section[part][k] for k in keys} for part, keys in needed.items()}


def _image_root(root: str, index_dir: Path) -> Path:
    """gnd.json's image folder; a relative one is relative to the checkout that ran the pipeline.

    That is the working directory when the command runs there; otherwise the folder above
    ``results/`` (index = <checkout>/results/<dataset>/<method>).
    """
    p = Path(root)
    if p.is_absolute() or p.is_dir():
        return p
    checkout = index_dir.resolve().parent.parent.parent
    return checkout / p if (checkout / p).is_dir() else p


@dataclass(eq=False)  # compared by identity: its fields are arrays
class Index:
    """Everything a query needs, in memory: built once, then read by any number of queries (thread-safe)."""

    path: Path
    dataset: str
    method: str
    gnd: groundtruth.GroundTruth
    image_root: Path
    extraction: dict           # the feature store's config (minus its image list)
    box_fallback: str          # what a box without features uses (search.box_words), as in the pipeline
    vocabulary_model: Vocabulary
    extract_raw: RawExtractFn  # one image -> raw features as stored
    read_features: methods.ShardFeatures  # stored arrays -> the vectors the vocabulary sees
    idf: np.ndarray            # float64 (K,)
    database: sp.csr_matrix    # weighted BoW rows of the database images (n_database, K)
    maps: bow.AssignmentMaps
    params: dict               # {"search": {...}, "rerank": {...}}
    params_source: str

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.method}"

    @property
    def vocabulary(self) -> int:
        return len(self.idf)

    @property
    def n_database(self) -> int:
        return self.gnd.n_database

    def image_path(self, i: int) -> Path:
        return self.image_root / self.gnd.images[i].path

    def features(self, path: str, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
        """(positions, words) of an image's local features, computed as the extract and encode steps do."""
        xy, desc = self.extract_raw(path, width, height)
        shard = {"xy": np.asarray(xy, np.float32).reshape(-1, 2), "desc": desc,
                 "offsets": np.array([0, len(xy)], np.int64)}
        xy, x, _ = self.read_features(shard)
        return xy, self.vocabulary_model.words(x)


def _load_vocabulary(path: Path) -> Vocabulary:
    with open(path, "rb") as f:
        archive = f.read(4) == b"PK\x03\x04"
    if archive:
        return Vocabulary.from_arrays(load_npz(path))
    return Vocabulary(load_npy(path))  # an index built before the vocabulary file: the centroids alone


def _codebook_file(path: Path) -> Path:
    """codebook.npz; codebook.npy in indexes built before the vocabulary file had whitening."""
    legacy = path / "codebook.npy"
    return legacy if legacy.is_file() and not (path / "codebook.npz").is_file() else path / "codebook.npz"


def load_index(path: str | os.PathLike, params: str | os.PathLike = "params.yaml") -> Index:
    """Load ``results/<dataset>/<method>`` (and ``../gnd.json``); every missing file is a one-line error."""
    path = Path(path)
    if not path.is_dir():
        raise InstanceSearchError(f"{path}: index folder not found; pass results/<dataset>/<method> of a finished run")
    gnd_path = path.parent / "gnd.json"
    codebook_file = _codebook_file(path)
    for f in (gnd_path, codebook_file, path / "bow.npz", path / "assign.npz"):
        if not f.is_file():
            raise InstanceSearchError(f"{f}: missing; the index is incomplete, run the pipeline (make demo / snakemake) first")
    store = FeatureStore(path / "features")  # only its manifest is read
    config = store.config
    method = config.get("method", path.name)
    if method not in IMAGE_EXTRACTORS or method not in methods.METHODS:
        raise InstanceSearchError(f"{path}: method {method!r} has no query support; known: {', '.join(sorted(IMAGE_EXTRACTORS))}")
    query_params = read_query_params(params, method)  # a wrong file fails before the heavy loading
    gnd = groundtruth.load(gnd_path)
    counts, idf, n_db = bow.load_bow(load_npz(path / "bow.npz"))
    maps = bow.AssignmentMaps.from_arrays(load_npz(path / "assign.npz"))
    vocab = _load_vocabulary(codebook_file)
    if counts.shape[0] != len(gnd.images) or n_db != gnd.n_database or len(maps.offsets) != len(gnd.images) + 1:
        raise InstanceSearchError(f"{path}: built for another image list than {gnd_path}; re-run encode")
    if len(vocab) != counts.shape[1]:
        raise InstanceSearchError(f"{codebook_file}: {len(vocab)} words but bow.npz has {counts.shape[1]}; re-run encode")
    try:
        extract_raw = IMAGE_EXTRACTORS[method](config)
        read_features = methods.get(method).shard_features(config)
    except KeyError as exc:
        raise InstanceSearchError(f"{path / 'features'}: the extraction config lacks {exc.args[0]}; re-run the extract step") from None
    idf = np.asarray(idf, np.float64)
    return Index(
        path=path, dataset=gnd.dataset, method=method, gnd=gnd, image_root=_image_root(gnd.root, path),
        extraction={k: v for k, v in config.items() if k not in ("images", "root")},
        box_fallback=methods.get(method).box_fallback, vocabulary_model=vocab, extract_raw=extract_raw,
        read_features=read_features, idf=idf, database=search.weighted(counts[:n_db], idf), maps=maps,
        params=query_params, params_source=str(params))
