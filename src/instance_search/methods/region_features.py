"""The extraction of the region family: per image, the image-wise pooled vector and its proposals
(boxes with region-pooled vectors), and each benchmark query's box and whole image, in a sharded store.

The extract step imports this module alone (not :mod:`.regions`), so a change to the search code
re-runs no extraction.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..features import frcnn
from ..features.store import build_shards, gather_store
from ..groundtruth import GroundTruth


def extractor(p: dict, model=None) -> frcnn.RegionExtractor:
    return frcnn.RegionExtractor(
        p["source"], detector=p["detector"], level=p["level"] or None, backbone=p["backbone"],
        layer=p["layer"] or None, proposals=p["proposals"], scales=p["scales"], aspect_ratios=p["aspect_ratios"],
        stride=p["stride"], pooling=p["pooling"], roi=p["roi"], roi_size=p["roi_size"], device=p["device"],
        half=p["half"], model=model)


class RegionExtraction:
    name = "frcnn"
    uses_gpu = True

    def extract(self, p: dict, gnd: GroundTruth, out_dir, progress_desc: str = "",
                part: tuple[int, int] | None = None) -> None:
        """A sharded store (:func:`..features.store.build_shards`) whose shards hold their images' vectors,
        proposals (``regions`` float16, ``boxes``, ``offsets``) and ``fallback`` flags, and the vectors of
        the queries whose image they hold (``queries``: their indices; ``ls``: the box's, ``gs``: the
        whole image's): a shard's proposals are written before the next shard runs, so memory stays flat."""
        ex = extractor(p)
        paths = [str(gnd.image_path(i)) for i in range(len(gnd.images))]
        dims = [(im.width, im.height) for im in gnd.images]
        # each query image also pools its query boxes: [box, whole image] per query (LS and GS)
        boxes: dict[int, list] = {}
        slot = []  # query k's pair among its image's extra vectors
        for q in gnd.queries:
            im = gnd.images[q.image]
            slot.append(len(boxes.setdefault(q.image, [])) // 2)
            boxes[q.image].extend([q.box, (0.0, 0.0, float(im.width), float(im.height))])

        def shard(images: range) -> dict[str, np.ndarray]:
            lo, hi = images.start, images.stop
            extra = [np.array(boxes[i], np.float32) if i in boxes else None for i in images]
            got, _ = frcnn.extract_images(ex, paths[lo:hi], dims[lo:hi], max_side=p["max_side"],
                                          batch_size=p["batch_size"], workers=p["workers"], extra=extra)
            f = frcnn.RegionFeatures.from_images(got)
            asked = [k for k, q in enumerate(gnd.queries) if lo <= q.image < hi]
            pooled = [got[gnd.queries[k].image - lo].extra[2 * slot[k]:2 * slot[k] + 2] for k in asked]
            pairs = np.array(pooled, np.float32).reshape(-1, 2, ex.dim)
            return {"vectors": f.vectors, "regions": f.regions, "boxes": f.boxes, "offsets": f.offsets,
                    "fallback": np.array([r.fallback for r in got], bool), "queries": np.array(asked, np.int64),
                    "ls": pairs[:, 0], "gs": pairs[:, 1]}

        config = {"method": "frcnn", **p, "proposal_source": ex.source_name, "images": [im.path for im in gnd.images],
                  "root": gnd.root}
        desc = progress_desc or f"{gnd.dataset} frcnn"
        build_shards(out_dir, len(gnd.images), shard, shard_size=p["shard_size"], config=config,
                     desc=f"{desc} {ex.source_name} ({ex.device})", part=part, key="regions")

    def gather(self, p: dict, gnd: GroundTruth, folders: list[Path], out_dir) -> None:
        gather_store(folders, len(gnd.images), out_dir)
