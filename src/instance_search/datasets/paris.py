"""Adapter for Paris6k (Philbin et al. 2008): the Oxford ground-truth format, images per landmark.

On disk, as the official archives unpack: ``paris/<landmark>/paris_<landmark>_NNNNNN.jpg`` (any depth
below the images folder works) and the ground-truth folder of ``paris_120310.tgz`` with
``<landmark>_<k>_query.txt`` (``<image> x1 y1 x2 y2``, no ``oxc1_`` prefix) and the good/ok/junk lists.

Of the 6,412 images, 20 are not JPEGs (an HTML page was saved in their place); the dataset page lists
them in ``corrupt.txt``. They are left out on purpose, of the database and of every list, and the
count is logged: 6,392 usable images and 55 queries remain.
"""

from __future__ import annotations

import os
from typing import Iterable, Mapping

from ..groundtruth import GroundTruth
from .oxford import load_oxford

# https://www.robots.ox.ac.uk/~vgg/data/parisbuildings/corrupt.txt (reference.md, section 4).
CORRUPT = tuple(f"paris_{name}" for name in (
    "louvre_000136", "louvre_000146", "moulinrouge_000422", "museedorsay_001059", "notredame_000188",
    "pantheon_000284", "pantheon_000960", "pantheon_000974", "pompidou_000195", "pompidou_000196",
    "pompidou_000201", "pompidou_000467", "pompidou_000640", "sacrecoeur_000299", "sacrecoeur_000330",
    "sacrecoeur_000353", "triomphe_000662", "triomphe_000833", "triomphe_000863", "triomphe_000867",
))


def load_paris(name: str, images_dir: str | os.PathLike, gt_dir: str | os.PathLike, *,
               skip: Iterable[str] = (), expect: Mapping[str, int] | None = None,
               skip_unreadable: bool = False) -> GroundTruth:
    """Paris6k into the normalised ground truth; ``skip`` adds names to the 20 known-corrupt ones."""
    return load_oxford(name, images_dir, gt_dir, skip=(*CORRUPT, *skip), expect=expect,
                       skip_unreadable=skip_unreadable)
