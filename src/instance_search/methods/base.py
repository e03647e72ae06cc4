"""The interface every retrieval method implements, and the shapes it exchanges.

A method turns images into features (extract), learns its model on the database's features (learn:
a visual vocabulary, a whitening), encodes the database with that model into an index (encode), and
then answers queries: it makes queries from a benchmark's ground truth or from an image and a box,
ranks the database (search), re-scores the top locally (rerank) and expands the queries (expand).

Files a method writes (all under one dataset's method folder, ``results/<dataset>/<method>/``):
``features/`` (extract), ``model.npz`` (learn), ``index/`` (encode: ``manifest.json`` plus what the
method's :class:`Database` holds, each file named for what it holds).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

from ..groundtruth import GroundTruth
from ..retrieval.geometry import Box
from ..retrieval.ranking import Ranking

Progress = Callable[[int, int], None]


@dataclass
class Queries:
    """A method's queries: ``box`` (the region the user asked for: LS), ``image`` (the whole query
    image: GS), and what the method needs besides; ``info`` describes each query for the user
    (features found, how many in the box, whether an empty box fell back)."""

    names: list[str]
    box: Any
    image: Any
    extra: dict[str, Any] = field(default_factory=dict)
    info: list[dict] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    def searched(self, mode: str):
        """What the first stage compares (search.query): the box (``ls``) or the whole image (``gs``)."""
        return self.box if mode == "ls" else self.image


class Database(Protocol):
    """A method's encoded collection, loaded once and only read afterwards (thread-safe)."""

    n_images: int
    n_database: int


class Extraction(Protocol):
    """A method's extraction: every image's features into a folder (the extract step imports only this)."""

    name: str
    uses_gpu: bool  # it runs a CNN: the workflow gives it resources gpu=1

    # part (i, n): only part i of n of the images, into a part folder that gather joins with the others
    def extract(self, p: dict, gnd: GroundTruth, out_dir: Path, progress_desc: str = "",
                part: tuple[int, int] | None = None) -> None: ...
    def gather(self, p: dict, gnd: GroundTruth, folders: list[Path], out_dir: Path) -> None: ...


class Indexing(Protocol):
    """A method's model and encoding (the codebook and encode steps import only this)."""

    name: str

    def learn(self, p: dict, seed: int, gnd: GroundTruth, features: Path) -> dict: ...
    # {file: arrays}; a method whose codebook has a device (bags of words) takes device= too
    def encode(self, p: dict, gnd: GroundTruth, features: Path, model: dict) -> dict: ...
    def join(self, parts: list[dict], n_database: int, p: dict) -> dict: ...  # encoded parts -> one index


class Method(Protocol):
    """What every method does: its extraction, its indexing, and answering queries."""

    name: str
    extraction: Extraction
    indexing: Indexing

    # shown beside its numbers for one dataset (frcnn: proposals; where its model was learned: learned_on)
    def labels(self, p: dict, dataset: str) -> dict[str, str]: ...
    # Its second-stage options, compared side by side (the options step): name -> the overrides of its
    # params section that select it (each with expansion off, but an expansion option)
    def options(self, p: dict) -> dict[str, dict]: ...
    # What its re-ranking and expansion do under these params, in a few words for the user (the page)
    def second_stage(self, p: dict) -> str: ...

    # answering queries
    def load(self, files: dict, n_database: int) -> Database: ...
    # one image (and box) -> Queries: encode(path, width, height, box, searched=None); searched "ls" or "gs"
    # names the only one of box and image that search, rerank and expand will read (the other may be None,
    # not computed); None: both
    def image_encoder(self, extraction: dict, model: dict, db: Database) -> Callable[..., Queries]: ...
    def benchmark_queries(self, db: Database, gnd: GroundTruth) -> Queries: ...
    def search(self, db: Database, queries: Queries, p: dict, similarity: str, alpha: float) -> Ranking: ...
    def rerank(self, db: Database, queries: Queries, first: Ranking, p: dict, similarity: str, alpha: float,
               progress: Progress | None = None) -> Ranking: ...
    def expand(self, db: Database, queries: Queries, ranking: Ranking, p: dict, similarity: str,
               alpha: float) -> Ranking: ...


SAME_DATASET = "same dataset"


def learned_on(p: dict, dataset: str) -> str:
    """Where the method's model (codebook step) for ``dataset`` was learned: the dataset its params section's
    codebook.learn_on names, else "same dataset" (its own database)."""
    return p["codebook"].get("learn_on", {}).get(dataset, SAME_DATASET)


@runtime_checkable
class EncodesInParts(Protocol):
    """A capability of an Indexing: the encoding splits into part jobs (compute.parts; bags of words, whose nearest
    words are the costly part), each writing part i of n into a folder, gathered into the index's files."""

    def encode_part(self, p: dict, gnd: GroundTruth, features: Path, model: dict, part: tuple[int, int],
                    out_dir: Path, config: dict, device: str = "cpu") -> None: ...
    def gather_encoded(self, p: dict, gnd: GroundTruth, folders: list[Path]) -> dict: ...
