"""The retrieval methods and their registry: the one place that knows method names.

Pipeline steps, the index, the command line and the web page ask :func:`get` for a method and then
use only the :class:`~instance_search.methods.base.Method` interface. A method's modules are
imported on first use, each part alone: the extract step imports only its extraction's module
(:func:`extraction`), the codebook and encode steps only its indexing's (:func:`indexing`), so the
code a stage depends on (dvc.yaml's deps) is the code it runs.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import cache

from ..errors import InstanceSearchError
from .base import Extraction, Indexing, Method, Queries


@dataclass(frozen=True)
class Entry:
    family: str       # "module:Class" under methods/: the method (queries, search, re-ranking)
    indexing: str     # "module:Class" under methods/: its model and encoding (codebook, encode)
    extraction: str   # "module:Class" under methods/: its extraction
    # the seed's own "mAP" (its definition, our seed_map) per dataset, shown beside ours in the tables:
    # the student project "Instance Based Image Retrieval using Deep Learning" (reference.md, section 1).
    # It reported the same number under both similarities as far as we know.
    published: dict[str, float] = field(default_factory=dict)


METHODS: dict[str, Entry] = {
    "sift": Entry("bow:BagOfWords", "bow_index:BowIndexing", "local_features:SiftFeatures",
                  {"oxford5k": 0.056, "paris6k": 0.506}),
    "blcf": Entry("bow:BagOfWords", "bow_index:BowIndexing", "cnn_features:CnnFeatures",
                  {"oxford5k": 0.696, "paris6k": 0.630, "instre": 0.186, "sculptures6k": 0.065}),
    "frcnn": Entry("regions:RegionMethod", "region_index:RegionIndexing", "region_features:RegionExtraction",
                   {"oxford5k": 0.652, "paris6k": 0.561, "instre": 0.091, "sculptures6k": 0.132}),
    # not in the seed: the modern baseline, and learned local features in sift's place
    "gem": Entry("descriptors:GlobalMethod", "global_index:GlobalIndexing", "global_features:GemExtraction"),
    "xfeat": Entry("bow:BagOfWords", "bow_index:BowIndexing", "xfeat_features:XfeatFeatures"),
}


def _entry(name: str) -> Entry:
    if name not in METHODS:
        raise InstanceSearchError(f"method {name!r} is not implemented; run.methods accepts {', '.join(METHODS)}")
    return METHODS[name]


def _load(ref: str):
    module, attr = ref.split(":")
    return getattr(importlib.import_module(f"{__name__}.{module}"), attr)


def module(name: str, part: str) -> str:
    """The dotted module of a method's ``part``: ``family``, ``indexing`` or ``extraction``."""
    return f"{__name__}.{getattr(_entry(name), part).split(':')[0]}"


@cache
def extraction(name: str) -> Extraction:
    """The method's extraction alone (its family's module is not imported)."""
    return _load(_entry(name).extraction)()


@cache
def indexing(name: str) -> Indexing:
    """The method's model and encoding alone (its search code is not imported)."""
    return _load(_entry(name).indexing)(extraction(name))


@cache
def get(name: str) -> Method:
    return _load(_entry(name).family)(extraction(name), indexing(name))


def published(name: str) -> dict[str, float]:
    """The reproduced system's published numbers for the method (its module is not imported)."""
    return _entry(name).published


def names() -> list[str]:
    return list(METHODS)


__all__ = ["METHODS", "Extraction", "Indexing", "Method", "Queries", "extraction", "get", "indexing", "module", "names",
           "published"]
