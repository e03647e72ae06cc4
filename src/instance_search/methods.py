"""The local-feature methods that share the BoW machinery (codebook, encode, search, re-ranking).

A method says how to extract an image's local features into the store, how to read them back as
the float vectors the codebook sees (:attr:`Method.shard_features`: positions may change, e.g. an
upsampled CNN map), and what a query box that holds no feature falls back to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable

import numpy as np

from .errors import InstanceSearchError
from .features import cnn, sift
from .features.store import build_store
from .groundtruth import GroundTruth

# shard arrays (xy, desc, offsets as stored) -> (xy, x float32, offsets) as the codebook sees them
ShardFeatures = Callable[[dict], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class Method:
    name: str
    extract: Callable[[dict, GroundTruth, str], None]          # (extract params, gnd, out dir)
    shard_features: Callable[[dict], ShardFeatures]            # store config -> reader
    box_fallback: str                                          # "image" | "nearest": see search.query_counts


def _sift_extract(p: dict, gnd: GroundTruth, out_dir: str) -> None:
    config = {"method": "sift", **p, "images": [im.path for im in gnd.images], "root": gnd.root}
    build_store(out_dir, len(gnd.images),
                # one detector per image: cheap, and OpenCV objects are not promised to be thread-safe
                lambda i: sift.extract(str(gnd.image_path(i)),
                                       sift.make_detector(p["max_features"], p["contrast_threshold"]),
                                       p["max_side"]),
                shard_size=p["shard_size"], config=config, desc=f"{gnd.dataset} sift",
                workers=os.cpu_count() or 1)


def _sift_features(config: dict) -> ShardFeatures:
    return lambda sh: (sh["xy"], sift.descriptors(sh["desc"], config["rootsift"]), sh["offsets"])


def _blcf_extract(p: dict, gnd: GroundTruth, out_dir: str) -> None:
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
                desc=f"{gnd.dataset} blcf {p['backbone']} ({extractor.device})", batched=True)


def _blcf_features(config: dict) -> ShardFeatures:
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


METHODS = {
    "sift": Method("sift", _sift_extract, _sift_features, box_fallback="image"),
    # a CNN map covers the whole image: a box between cell centres takes its nearest cell
    "blcf": Method("blcf", _blcf_extract, _blcf_features, box_fallback="nearest"),
}


def get(name: str) -> Method:
    if name not in METHODS:
        raise InstanceSearchError(f"method {name!r} is not implemented; run.methods accepts {', '.join(METHODS)}")
    return METHODS[name]
