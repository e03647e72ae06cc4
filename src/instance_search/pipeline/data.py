"""A dataset's raw files (fetch) and its normalised ground truth (prepare)."""

from __future__ import annotations

from pathlib import Path

from ..datasets.fetch import fetch as fetch_dataset
from ..datasets.prepare import prepare as prepare_dataset
from ..download import lock_frozen
from ..errors import InstanceSearchError
from .declare import PathLike, step

# the checked-in sha256 lock file (relative to the repository root, where every step runs)
DATASETS_LOCK = "workflow/datasets.lock.json"


@step(inputs={}, outputs={"manifest": "data/<dataset>/manifest.json, rewritten only when the files on disk changed"},
      wildcards=("dataset",), params=("seed", "datasets.{dataset}"))
def fetch(params: dict, dataset: str, manifest: PathLike) -> None:
    """Make one dataset's raw files present under data/<dataset>/: generated, downloaded or local, checked.

    Frozen lock (fetch.frozen in params.yaml, or INSTANCE_SEARCH_FROZEN_LOCK=1 as in CI): anything
    the lock file has no sha256 for is refused instead of recorded."""
    if dataset not in params["datasets"]:
        raise InstanceSearchError(f"key datasets.{dataset} is not in the params file; define it there")
    data = Path(manifest).parent.parent  # data/<dataset>/manifest.json: the folder of every dataset
    fetch_dataset(params, dataset, data, DATASETS_LOCK, frozen=lock_frozen(params))


@step(inputs={}, outputs={"gnd": "the gnd.json to write"}, wildcards=("dataset",), params=("datasets.{dataset}",))
def prepare(params: dict, dataset: str, gnd: PathLike) -> None:
    """Write a dataset's normalised ground truth (gnd.json) with the adapter of its format."""
    prepare_dataset(params, dataset, gnd)
