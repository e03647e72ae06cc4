"""The retrieval methods and their registry: the one place that knows method names.

Pipeline steps, the index, the command line and the web page ask :func:`get` for a method and then
use only the :class:`~instance_search.methods.base.Method` interface.
"""

from __future__ import annotations

from ..errors import InstanceSearchError
from .base import Method, Queries
from .bow import BagOfWords, CnnFeatures, SiftFeatures, XfeatFeatures
from .descriptors import GlobalMethod
from .regions import RegionMethod

# published: the seed's own "mAP" (its definition, our seed_map) per dataset, shown beside ours in the
# tables: the student project "Instance Based Image Retrieval using Deep Learning" (reference.md,
# section 1). It reported the same number under both similarities as far as we know.
METHODS: dict[str, Method] = {
    "sift": BagOfWords(SiftFeatures(), published={"oxford5k": 0.056, "paris6k": 0.506}),
    "blcf": BagOfWords(CnnFeatures(), published={"oxford5k": 0.696, "paris6k": 0.630, "instre": 0.186,
                                                 "sculptures6k": 0.065}),
    "frcnn": RegionMethod(published={"oxford5k": 0.652, "paris6k": 0.561, "instre": 0.091, "sculptures6k": 0.132}),
    "gem": GlobalMethod(),  # not in the seed: the modern baseline the tables compare against
    "xfeat": BagOfWords(XfeatFeatures()),  # not in the seed: learned local features (CVPR 2024) in sift's place
}


def get(name: str) -> Method:
    if name not in METHODS:
        raise InstanceSearchError(f"method {name!r} is not implemented; run.methods accepts {', '.join(METHODS)}")
    return METHODS[name]


def names() -> list[str]:
    return list(METHODS)


__all__ = ["METHODS", "Method", "Queries", "get", "names"]
