"""blcf's local features: the cells of a CNN's feature map (a pretrained torchvision backbone)."""

from __future__ import annotations

import os

import numpy as np

from ..features.store import build_store
from ..groundtruth import GroundTruth
from .local_features import LocalFeatures, RawExtract, ShardReader, share_cores


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
            share_cores()

        def extract(path: str, width: int, height: int):
            return cnn.extract_images(extractor, [path], [(width, height)], max_side=config["max_side"],
                                      batch_size=1, workers=0)[0]
        return extract
