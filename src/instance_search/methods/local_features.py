"""The local features of the bag-of-words family: how each kind is extracted into a feature store,
read back as the vectors the vocabulary sees, and extracted from one query image. SIFT here; the
CNN's cells in :mod:`.cnn_features`, XFeat's in :mod:`.xfeat_features`.

The extract step imports its kind's module alone (not :mod:`.bow`), so a change to the search code
re-runs no extraction.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

import numpy as np

from ..features import sift
from ..features.store import build_store, gather_store
from ..groundtruth import GroundTruth

# stored shard arrays (xy, desc, offsets) -> (xy, x float32, offsets) as the vocabulary sees them
ShardReader = Callable[[dict], tuple[np.ndarray, np.ndarray, np.ndarray]]
# (image path, width, height) -> raw (xy, desc) of one image, as the store holds them
RawExtract = Callable[[str, int, int], tuple[np.ndarray, np.ndarray]]


# ------------------------------------------------------------------------------------ local features

class LocalFeatures:
    """What the three kinds share: the part folders gather into one store."""

    name: str
    uses_gpu: bool
    box_fallback: str

    def extract(self, p: dict, gnd: GroundTruth, out_dir, progress_desc: str = "",
                part: tuple[int, int] | None = None) -> None:
        self.build(p, gnd, out_dir, progress_desc or f"{gnd.dataset} {self.name}", part)

    def gather(self, p: dict, gnd: GroundTruth, folders: list[Path], out_dir) -> None:
        gather_store(folders, len(gnd.images), out_dir)

    def build(self, p: dict, gnd: GroundTruth, out_dir, desc: str, part: tuple[int, int] | None = None) -> None:
        raise NotImplementedError


class SiftFeatures(LocalFeatures):
    name = "sift"
    uses_gpu = False
    box_fallback = "image"  # sparse keypoints: an empty box uses the whole image

    def build(self, p: dict, gnd: GroundTruth, out_dir, desc: str, part: tuple[int, int] | None = None) -> None:
        config = {"method": "sift", **p, "images": [im.path for im in gnd.images], "root": gnd.root}
        build_store(out_dir, len(gnd.images),
                    # one detector per image: cheap, and OpenCV objects are not promised to be thread-safe
                    lambda i: sift.extract(str(gnd.image_path(i)),
                                           sift.make_detector(p["max_features"], p["contrast_threshold"]),
                                           p["max_side"]),
                    shard_size=p["shard_size"], config=config, desc=desc, workers=os.cpu_count() or 1, part=part)

    def reader(self, config: dict) -> ShardReader:
        return lambda sh: (sh["xy"], sift.descriptors(sh["desc"], config["rootsift"]), sh["offsets"])

    def one_image(self, config: dict) -> RawExtract:
        max_features, contrast, max_side = config["max_features"], config["contrast_threshold"], config["max_side"]
        return lambda path, width, height: sift.extract(path, sift.make_detector(max_features, contrast), max_side)


def share_cores() -> None:
    """One query's CNN uses half the cores (2 cores: one thread), unless OMP_NUM_THREADS says otherwise.

    torch's default, a spinning OpenMP thread per core, collapses when anything else runs
    (docs/settings.md); the web server's requests run in parallel threads anyway.
    """
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) // 2)))
