"""The local features of the bag-of-words family: how each kind is extracted into a feature store,
read back as the vectors the vocabulary sees, and extracted from one query image.

The extract step imports this module alone (not :mod:`.bow`), so a change to the search code
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


class CnnFeatures(LocalFeatures):
    name = "blcf"
    uses_gpu = True
    box_fallback = "nearest"  # a CNN map covers the whole image: a box between cell centres takes its nearest cell

    def build(self, p: dict, gnd: GroundTruth, out_dir, desc: str, part: tuple[int, int] | None = None) -> None:
        from ..features import cnn

        extractor = cnn.Extractor(p["backbone"], p["layer"] or None, p["device"], p["half"])
        # What determines the stored values (not device, batch size or workers: they do not change them).
        config = {"method": "blcf", "backbone": p["backbone"], "layer": extractor.layer, "max_side": p["max_side"],
                  "upsample": p["upsample"], "half": extractor.half, "stride": extractor.stride,
                  "images": [im.path for im in gnd.images], "root": gnd.root}
        paths = [str(gnd.image_path(i)) for i in range(len(gnd.images))]
        dims = [(im.width, im.height) for im in gnd.images]

        def shard(images: range):
            return cnn.extract_images(extractor, paths[images.start:images.stop], dims[images.start:images.stop],
                                      max_side=p["max_side"], batch_size=p["batch_size"], workers=p["workers"])

        build_store(out_dir, len(gnd.images), shard, shard_size=p["shard_size"], config=config,
                    desc=f"{desc} {p['backbone']} ({extractor.device})", batched=True, part=part)

    def reader(self, config: dict) -> ShardReader:
        from ..features import cnn

        factor = config["upsample"]

        def read(sh):
            off = sh["offsets"]
            xys, xs, counts = [], [], []
            for j in range(len(off) - 1):
                xy, x = cnn.local_features(sh["xy"][off[j]:off[j + 1]], sh["desc"][off[j]:off[j + 1]], factor)
                xys.append(xy)
                xs.append(x)
                counts.append(len(xy))
            return (np.concatenate(xys).reshape(-1, 2), np.concatenate(xs),
                    np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))

        return read

    def one_image(self, config: dict) -> RawExtract:
        from ..features import cnn

        extractor = cnn.Extractor(config["backbone"], config["layer"], "auto", config["half"])  # loaded once
        if extractor.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            _share_cores()

        def extract(path: str, width: int, height: int):
            return cnn.extract_images(extractor, [path], [(width, height)], max_side=config["max_side"],
                                      batch_size=1, workers=0)[0]
        return extract


class XfeatFeatures(LocalFeatures):
    """XFeat's learned keypoints and 64-d descriptors (features/xfeat.py), in place of SIFT's."""

    name = "xfeat"
    uses_gpu = True  # a CNN: extract.device auto runs it on CUDA where there is one
    box_fallback = "image"  # sparse keypoints, as SIFT's: an empty box uses the whole image

    def build(self, p: dict, gnd: GroundTruth, out_dir, desc: str, part: tuple[int, int] | None = None) -> None:
        from ..features import xfeat

        extractor = xfeat.Extractor(p["device"])  # loaded once
        # What determines the stored values (not the device: it does not change the settings).
        config = {"method": "xfeat", **{k: v for k, v in p.items() if k != "device"},
                  "images": [im.path for im in gnd.images], "root": gnd.root}
        build_store(out_dir, len(gnd.images),
                    # one image at a time in this thread: torch's own pool holds compute.threads
                    lambda i: extractor.extract(str(gnd.image_path(i)), p["max_side"], p["max_features"],
                                                p["detection_threshold"]),
                    shard_size=p["shard_size"], config=config, desc=f"{desc} ({extractor.device})", part=part)

    def reader(self, config: dict) -> ShardReader:
        from ..features import xfeat

        return lambda sh: (sh["xy"], xfeat.descriptors(sh["desc"]), sh["offsets"])

    def one_image(self, config: dict) -> RawExtract:
        from ..features import xfeat

        extractor = xfeat.Extractor("auto")  # loaded once
        if extractor.device == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            _share_cores()
        max_side, max_features, threshold = config["max_side"], config["max_features"], config["detection_threshold"]
        return lambda path, width, height: extractor.extract(path, max_side, max_features, threshold)


def _share_cores() -> None:
    """One query's CNN uses half the cores (2 cores: one thread), unless OMP_NUM_THREADS says otherwise.

    torch's default, a spinning OpenMP thread per core, collapses when anything else runs: on this
    project's busy 2-core machine, one thread ran mobilenet_v2 on a 340-px image 5x faster than two
    (benchmarks/query_latency.py); the web server's requests run in parallel threads anyway.
    """
    import torch

    torch.set_num_threads(max(1, min(torch.get_num_threads(), (os.cpu_count() or 2) // 2)))
