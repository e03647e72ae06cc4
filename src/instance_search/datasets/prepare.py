"""The prepare step: turn a dataset named in params.yaml into the normalised ground-truth JSON.

Every format reads ``images`` (the image folder) and ``groundtruth`` (a folder or file) from
``datasets.<name>``, and optionally ``expect`` (published counts to check: images, database,
queries; absent = not checked, so small fixtures and subsets work). Format-specific keys:
``skip`` (oxford, paris), ``half`` (sculptures), ``box_format`` (instre: ``xyxy``, as the published
``gnd_instre.mat`` holds its boxes, or ``xywh``).

Every image the ground truth uses is decoded once, and every unreadable one is gathered: they are
reported together in one line (count and names). ``skip_unreadable: true`` (any format) leaves out
the unreadable *database* images instead, with their count in the log; an unreadable query image or
positive stays an error, so that benchmark counts stay honest. Image files are ``.jpg``, ``.jpeg``
and ``.png`` in any case.
"""

from __future__ import annotations

import os
from typing import Callable

from .. import groundtruth
from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth
from .distractors import add_distractors
from .folder import load_folder
from .instre import DEFAULT_BOX_FORMAT, load_instre
from .oxford import load_oxford
from .paris import load_paris
from .revisited import load_revisited
from .sculptures import EVALUATED_HALF, load_sculptures
from .ukbench import load_ukbench


def _oxford(name: str, cfg: dict) -> GroundTruth:
    return load_oxford(name, cfg["images"], cfg["groundtruth"], skip=cfg.get("skip", ()), expect=cfg.get("expect"),
                       skip_unreadable=_skip_unreadable(cfg))


def _skip_unreadable(cfg: dict) -> bool:
    return bool(cfg.get("skip_unreadable", False))


def _paris(name: str, cfg: dict) -> GroundTruth:
    return load_paris(name, cfg["images"], cfg["groundtruth"], skip=cfg.get("skip", ()), expect=cfg.get("expect"),
                      skip_unreadable=_skip_unreadable(cfg))


def _sculptures(name: str, cfg: dict) -> GroundTruth:
    return load_sculptures(name, cfg["images"], cfg["groundtruth"], half=cfg.get("half", EVALUATED_HALF),
                           expect=cfg.get("expect"), skip_unreadable=_skip_unreadable(cfg))


def _instre(name: str, cfg: dict) -> GroundTruth:
    return load_instre(name, cfg["images"], cfg["groundtruth"], box_format=cfg.get("box_format", DEFAULT_BOX_FORMAT),
                       expect=cfg.get("expect"), skip_unreadable=_skip_unreadable(cfg))


def _revisited(name: str, cfg: dict) -> GroundTruth:
    return load_revisited(name, cfg["images"], cfg["groundtruth"], expect=cfg.get("expect"),
                          skip_unreadable=_skip_unreadable(cfg))


def _ukbench(name: str, cfg: dict) -> GroundTruth:
    gnd = load_ukbench(name, cfg["images"], cfg["groundtruth"], skip_unreadable=_skip_unreadable(cfg))
    groundtruth.check_counts(gnd, cfg.get("expect"), str(cfg["groundtruth"]))
    return gnd


def _folder(name: str, cfg: dict) -> GroundTruth:
    return load_folder(name, cfg["images"], cfg.get("queries"))


# One loader per on-disk format (params.yaml: datasets.<name>.format).
LOADERS: dict[str, Callable[[str, dict], GroundTruth]] = {
    "oxford": _oxford, "paris": _paris, "sculptures": _sculptures, "instre": _instre,
    "revisited": _revisited, "ukbench": _ukbench, "folder": _folder,
}
# What a format needs besides its images: a photo folder has no ground truth.
NEEDS_GROUNDTRUTH = set(LOADERS) - {"folder"}


def prepare(params: dict, dataset: str, out_path: str | os.PathLike) -> GroundTruth:
    """Load ``dataset`` with the adapter of its format and write its gnd JSON atomically."""
    cfg = params.get("datasets", {}).get(dataset)
    if cfg is None:
        raise InstanceSearchError(f"params.yaml: key datasets.{dataset} not found; add the dataset or fix its name")
    loader = LOADERS.get(cfg.get("format"))
    if loader is None:
        raise InstanceSearchError(
            f"params.yaml: key datasets.{dataset}.format: unknown format {cfg.get('format')!r}; use one of {sorted(LOADERS)}")
    for key in ("images", "groundtruth") if cfg["format"] in NEEDS_GROUNDTRUTH else ("images",):
        if key not in cfg:
            raise InstanceSearchError(f"params.yaml: key datasets.{dataset}.{key} missing; give the dataset's {key} path")
    gnd = loader(dataset, cfg)
    if cfg.get("distractors"):
        gnd = add_distractors(gnd, cfg["distractors"], skip_unreadable=_skip_unreadable(cfg))
    groundtruth.save(gnd, out_path)
    return gnd
