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

Protocols. A dataset evaluated under several protocols (ROxford5k / RParis6k: Easy, Medium, Hard)
gives every query, besides its own lists, one label set per protocol, in the same order for all
queries (a list, as the JSON is written with sorted keys and the order is the protocols' order)::

      "protocols": [{"name": "easy", "good": [...], "ok": [], "junk": [...]}, {"name": "medium", ...}, ...]

The key is written only when a query has protocols, so the files of every other dataset are exactly
as before. The query's own ``good``/``ok``/``junk`` stay the labels of its default evaluation.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

from .errors import InstanceSearchError
from .io import read_json, write_json

# Relevance grades for NDCG (the seed graded good=3, ok=2, junk=1; the standard NDCG removes junk).
GRADES = {"good": 3, "ok": 2}
LABEL_KINDS = ("good", "ok", "junk")
# Counts an adapter can be asked to check (params: datasets.<name>.expect): every image read,
# the database images (images[:n_database]), the queries.
COUNT_KEYS = ("images", "database", "queries")


@dataclass(frozen=True)
class Image:
    name: str
    path: str
    width: int
    height: int


@dataclass(frozen=True)
class Labels:
    """One protocol's view of a query: positives are good + ok, junk is ignored by the metrics."""
    good: tuple[int, ...]
    ok: tuple[int, ...] = ()
    junk: tuple[int, ...] = ()


@dataclass(frozen=True)
class Query:
    name: str
    image: int
    box: tuple[float, float, float, float]
    good: tuple[int, ...]
    ok: tuple[int, ...] = ()
    junk: tuple[int, ...] = ()
    # (protocol name, labels) pairs; a tuple rather than a dict so the query stays hashable.
    protocols: tuple[tuple[str, Labels], ...] = field(default=())

    @property
    def positives(self) -> tuple[int, ...]:
        return tuple(sorted(self.good + self.ok))

    @property
    def protocol_names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.protocols)

    def under(self, protocol: str) -> "Query":
        """This query with the labels of ``protocol`` as its own (and no protocols left)."""
        for name, labels in self.protocols:
            if name == protocol:
                return replace(self, good=labels.good, ok=labels.ok, junk=labels.junk, protocols=())
        raise InstanceSearchError(f"query {self.name}: no protocol {protocol!r}; it has {list(self.protocol_names)}")


@dataclass
class GroundTruth:
    dataset: str
    root: str
    images: list[Image]
    n_database: int
    queries: list[Query] = field(default_factory=list)
    # False for a photo folder (format: folder): no positives, so nothing to evaluate; queries optional
    labelled: bool = True

    @property
    def protocols(self) -> tuple[str, ...]:
        """The protocol names shared by all queries; () for a dataset with a single protocol."""
        return self.queries[0].protocol_names if self.queries else ()

    def image_path(self, index: int) -> Path:
        return Path(self.root) / self.images[index].path

    def counts(self) -> dict[str, int]:
        return {"images": len(self.images), "database": self.n_database, "queries": len(self.queries)}

    def validate(self, source: str = "ground truth") -> None:
        """Check the invariants later steps rely on; raise naming the query at fault."""
        if not 0 < self.n_database <= len(self.images):
            raise InstanceSearchError(f"{source}: n_database={self.n_database} but {len(self.images)} images")
        if not self.queries and self.labelled:
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
            if not q.positives and self.labelled:
                raise InstanceSearchError(f"{source}: query {q.name}: no positive images; fix its good/ok lists")
            if q.protocol_names != self.protocols:
                raise InstanceSearchError(
                    f"{source}: query {q.name}: protocols {list(q.protocol_names)} differ from the first query's "
                    f"{list(self.protocols)}; every query needs the same protocols")
            for where, labels in ((None, q), *q.protocols):
                for kind in LABEL_KINDS:
                    for i in getattr(labels, kind):
                        if not 0 <= i < self.n_database:
                            at = f"{kind}" if where is None else f"protocol {where}: {kind}"
                            raise InstanceSearchError(
                                f"{source}: query {q.name}: {at} index {i} is not a database image")

    def to_dict(self) -> dict:
        def query(q: Query) -> dict:
            d = {"name": q.name, "image": q.image, "box": list(q.box),
                 "good": list(q.good), "ok": list(q.ok), "junk": list(q.junk)}
            if q.protocols:  # only revisited-style datasets carry the key: other files stay as they were
                d["protocols"] = [{"name": name, **{k: list(getattr(labels, k)) for k in LABEL_KINDS}}
                                  for name, labels in q.protocols]
            return d

        out = {
            "dataset": self.dataset,
            "root": self.root,
            "n_database": self.n_database,
            "images": [vars(im) for im in self.images],
            "queries": [query(q) for q in self.queries],
        }
        if not self.labelled:  # only photo folders carry the key: benchmark files stay as they were
            out["labelled"] = False
        return out

    @classmethod
    def from_dict(cls, d: dict) -> "GroundTruth":
        def labels(p: dict) -> Labels:
            return Labels(**{k: tuple(p[k]) for k in LABEL_KINDS})

        return cls(
            dataset=d["dataset"],
            root=d["root"],
            n_database=int(d["n_database"]),
            images=[Image(**im) for im in d["images"]],
            queries=[
                Query(name=q["name"], image=int(q["image"]), box=tuple(float(v) for v in q["box"]),
                      good=tuple(q["good"]), ok=tuple(q["ok"]), junk=tuple(q["junk"]),
                      protocols=tuple((p["name"], labels(p)) for p in q.get("protocols", ())))
                for q in d["queries"]
            ],
            labelled=bool(d.get("labelled", True)),
        )


def check_counts(gnd: GroundTruth, expect: Mapping[str, int] | None, source: str) -> None:
    """Compare the published counts ``expect`` (keys of :data:`COUNT_KEYS`; None: no check) with ``gnd``.

    A mismatch means an incomplete download or a different release of the dataset: say which.
    """
    check_expected(gnd.counts(), expect, source, gnd.dataset)


def check_expected(found: Mapping[str, int], expect: Mapping[str, int] | None, source: str, dataset: str) -> None:
    """As :func:`check_counts` for counts an adapter knows before reading any image."""
    if not expect:
        return
    if not isinstance(expect, Mapping):
        raise InstanceSearchError(f"params.yaml: key datasets.{dataset}.expect: expected a mapping of {list(COUNT_KEYS)}")
    for key, value in expect.items():
        if key not in COUNT_KEYS:
            raise InstanceSearchError(
                f"params.yaml: key datasets.{dataset}.expect.{key}: unknown count; use {list(COUNT_KEYS)}")
        if value is None or key not in found:
            continue
        if found[key] != int(value):
            raise InstanceSearchError(
                f"{source}: found {found[key]} {key}, expected {int(value)} (datasets.{dataset}.expect.{key}); "
                "check that the download is complete and is the official release")


def save(gnd: GroundTruth, path: str | os.PathLike) -> None:
    gnd.validate(str(path))
    write_json(path, gnd.to_dict())


def load(path: str | os.PathLike) -> GroundTruth:
    try:
        gnd = GroundTruth.from_dict(read_json(path))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise InstanceSearchError(f"{path}: malformed ground-truth file ({exc}); re-run the prepare step") from None
    gnd.validate(str(path))
    return gnd
