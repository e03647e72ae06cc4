"""XFeat's learned keypoints and 64-d descriptors (features/xfeat.py), in place of SIFT's."""

from __future__ import annotations

import os

from ..features.store import build_store
from ..groundtruth import GroundTruth
from .local_features import LocalFeatures, RawExtract, ShardReader, share_cores


class XfeatFeatures(LocalFeatures):
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
            share_cores()
        max_side, max_features, threshold = config["max_side"], config["max_features"], config["detection_threshold"]
        return lambda path, width, height: extractor.extract(path, max_side, max_features, threshold)
