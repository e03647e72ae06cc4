"""Adapter for Sculptures6k (Arandjelovic & Zisserman, "Smooth object retrieval using a bag of
boundaries", ICCV 2011): 6,340 Flickr photographs of Henry Moore and Auguste Rodin sculptures.

The dataset comes in two disjoint halves of 3,170 images, ``train`` and ``test``, each with its own
70 queries (10 sculptures x 7) and Oxford-style good/ok/junk lists. The train half is for learning
(vocabularies, parameters); retrieval results are reported on the TEST half, which is what this
adapter evaluates by default (``half: test``): its database is the test images only, its queries
the test queries.

Expected layout (one sub-folder per half under each of the two folders given in the params)::

    <images>/test/*.jpg            <groundtruth>/test/<q>_query.txt, <q>_good.txt, <q>_ok.txt, <q>_junk.txt
    <images>/train/*.jpg           <groundtruth>/train/...
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth
from .oxford import load_oxford

HALVES = ("test", "train")
EVALUATED_HALF = "test"


def load_sculptures(name: str, images_dir: str | os.PathLike, gt_dir: str | os.PathLike, *,
                    half: str = EVALUATED_HALF, expect: Mapping[str, int] | None = None,
                    skip_unreadable: bool = False) -> GroundTruth:
    """One half of Sculptures6k (default: the test half the literature reports) as its own dataset."""
    if half not in HALVES:
        raise InstanceSearchError(f"params.yaml: key datasets.{name}.half: {half!r} is not one of {list(HALVES)}")
    images, gt = Path(images_dir) / half, Path(gt_dir) / half
    for folder, what in ((images, "images"), (gt, "ground-truth files")):
        if not folder.is_dir():
            raise InstanceSearchError(
                f"{folder}: folder of the {half} half not found; unpack Sculptures6k so that the {what} of "
                f"each half lie in {Path(folder).parent}/<train|test>/")
    return load_oxford(name, images, gt, expect=expect, skip_unreadable=skip_unreadable)
