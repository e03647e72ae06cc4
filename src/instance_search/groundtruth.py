"""The normalised ground truth that every dataset adapter writes and every later step reads.

One JSON file per dataset (``results/<dataset>/gnd.json``)::

    {
      "dataset": "synthetic",
      "root": "data/synthetic/jpg",          # image paths are relative to this folder
      "images": [{"name": "all_souls_000001", "path": "all_souls_000001.jpg",
                  "width": 1024, "height": 768}, ...],
      "n_database": 5063,                    # images[:n_database] form the database; any images
                                             # after them are query-only images (revisited datasets)
      "queries": [{"name": "all_souls_1", "image": 12, "box": [x1, y1, x2, y2],
                   "good": [...], "ok": [...], "junk": [...]}, ...]
    }

``image`` indexes ``images``; ``good``/``ok``/``junk`` index the database and are sorted. Boxes are in
pixels of the original image, x2/y2 exclusive-free floats as the dataset gives them. Everything
downstream is dataset-agnostic: it reads only this file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .errors import InstanceSearchError
from .io import read_json, write_json

# Relevance grades for NDCG (the seed graded good=3, ok=2, junk=1; the standard NDCG removes junk).
GRADES = {"good": 3, "ok": 2}


@dataclass(frozen=True)
class Image:
    name: str
    path: str
    width: int
    height: int


@dataclass(frozen=True)
class Query:
    name: str
    image: int
    box: tuple[float, float, float, float]
    good: tuple[int, ...]
    ok: tuple[int, ...] = ()
    junk: tuple[int, ...] = ()

    @property
    def positives(self) -> tuple[int, ...]:
        return tuple(sorted(self.good + self.ok))


@dataclass
class GroundTruth:
    dataset: str
    root: str
    images: list[Image]
    n_database: int
    queries: list[Query] = field(default_factory=list)

    def image_path(self, index: int) -> Path:
        return Path(self.root) / self.images[index].path

    def validate(self, source: str = "ground truth") -> None:
        """Check the invariants later steps rely on; raise naming the query at fault."""
        if not 0 < self.n_database <= len(self.images):
            raise InstanceSearchError(f"{source}: n_database={self.n_database} but {len(self.images)} images")
        if not self.queries:
            raise InstanceSearchError(f"{source}: no queries; the ground-truth folder gives none")
        for q in self.queries:
            if not 0 <= q.image < len(self.images):
                raise InstanceSearchError(f"{source}: query {q.name}: image index {q.image} out of range")
            im = self.images[q.image]
            x1, y1, x2, y2 = q.box
            if not (0 <= x1 < x2 <= im.width and 0 <= y1 < y2 <= im.height):
                raise InstanceSearchError(
                    f"{source}: query {q.name}: box {list(q.box)} is not inside its image {im.name} "
                    f"({im.width}x{im.height}); fix the box")
            if not q.positives:
                raise InstanceSearchError(f"{source}: query {q.name}: no positive images; fix its good/ok lists")
            for kind in ("good", "ok", "junk"):
                for i in getattr(q, kind):
                    if not 0 <= i < self.n_database:
                        raise InstanceSearchError(f"{source}: query {q.name}: {kind} index {i} is not a database image")

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset,
            "root": self.root,
            "n_database": self.n_database,
            "images": [vars(im) for im in self.images],
            "queries": [
                {"name": q.name, "image": q.image, "box": list(q.box),
                 "good": list(q.good), "ok": list(q.ok), "junk": list(q.junk)}
                for q in self.queries
            ],
        }

    @classmethod
    def from_dict(cls, d: dict) -> "GroundTruth":
        return cls(
            dataset=d["dataset"],
            root=d["root"],
            n_database=int(d["n_database"]),
            images=[Image(**im) for im in d["images"]],
            queries=[
                Query(name=q["name"], image=int(q["image"]), box=tuple(float(v) for v in q["box"]),
                      good=tuple(q["good"]), ok=tuple(q["ok"]), junk=tuple(q["junk"]))
                for q in d["queries"]
            ],
        )


def save(gnd: GroundTruth, path: str | os.PathLike) -> None:
    gnd.validate(str(path))
    write_json(path, gnd.to_dict())


def load(path: str | os.PathLike) -> GroundTruth:
    try:
        gnd = GroundTruth.from_dict(read_json(path))
    except (KeyError, TypeError, ValueError) as exc:
        raise InstanceSearchError(f"{path}: malformed ground-truth file ({exc}); re-run the prepare step") from None
    gnd.validate(str(path))
    return gnd
