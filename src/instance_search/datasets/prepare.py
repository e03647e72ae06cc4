"""The prepare step: turn a dataset named in params.yaml into the normalised ground-truth JSON."""

from __future__ import annotations

import os
from typing import Callable

from .. import groundtruth
from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth
from .oxford import load_oxford
from .ukbench import load_ukbench


def _oxford(name: str, cfg: dict) -> GroundTruth:
    return load_oxford(name, cfg["images"], cfg["groundtruth"], skip=cfg.get("skip", ()))


def _ukbench(name: str, cfg: dict) -> GroundTruth:
    return load_ukbench(name, cfg["images"], cfg["groundtruth"])


# One loader per on-disk format (params.yaml: datasets.<name>.format).
LOADERS: dict[str, Callable[[str, dict], GroundTruth]] = {"oxford": _oxford, "ukbench": _ukbench}


def prepare(params: dict, dataset: str, out_path: str | os.PathLike) -> GroundTruth:
    """Load ``dataset`` with the adapter of its format and write its gnd JSON atomically."""
    cfg = params.get("datasets", {}).get(dataset)
    if cfg is None:
        raise InstanceSearchError(f"params.yaml: key datasets.{dataset} not found; add the dataset or fix its name")
    loader = LOADERS.get(cfg.get("format"))
    if loader is None:
        raise InstanceSearchError(
            f"params.yaml: key datasets.{dataset}.format: unknown format {cfg.get('format')!r}; use one of {sorted(LOADERS)}")
    gnd = loader(dataset, cfg)
    groundtruth.save(gnd, out_path)
    return gnd
