"""The extraction of the global-descriptor family: multi-scale GeM vectors of every image, and of each
benchmark query's box (LS) and whole image (GS), into the feature folder.

The extract step imports this module alone (not :mod:`.descriptors`), so a change to the search code
re-runs no extraction.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..features import gem, parts
from ..features.cnn import Extractor
from ..groundtruth import GroundTruth
from ..io import load_npz, make_temp_dir, replace_dir, save_npz, write_json
from ..retrieval.geometry import Box

log = logging.getLogger(__name__)


def covers_image(box: Box | None, width: int, height: int) -> bool:
    return box is None or (box[0] <= 0 and box[1] <= 0 and box[2] >= width and box[3] >= height)


def extractor(p: dict, device: str | None = None) -> Extractor:
    return Extractor(p["backbone"], p["layer"] or None, device or p["device"], p["half"])


def describe(ex: Extractor, p: dict, paths, boxes) -> np.ndarray:
    return gem.describe(ex, paths, boxes, scales=p["scales"], p=p["p"], max_side=p["max_side"],
                        workers=p["workers"])


class GemExtraction:
    name = "gem"
    uses_gpu = True

    def extract(self, p: dict, gnd: GroundTruth, out_dir, progress_desc: str = "",
                part: tuple[int, int] | None = None) -> None:
        ex = extractor(p)
        images = parts.image_range(len(gnd.images), 1, part)  # each image alone: any split gives its bytes
        paths = [str(gnd.image_path(i)) for i in images]
        log.info("%s: GeM (p=%g) of %s %s at scales %s, max side %d (%s), %d images", progress_desc or gnd.dataset,
                 p["p"], p["backbone"], ex.layer, p["scales"], p["max_side"], ex.device, len(paths))
        vectors = describe(ex, p, paths, [None] * len(paths)) if paths else np.zeros((0, ex.dim), np.float32)
        # the query boxes that crop their image (LS) are described again, cropped
        cropped = [k for k, q in enumerate(gnd.queries) if q.image in images
                   and not covers_image(q.box, gnd.images[q.image].width, gnd.images[q.image].height)]
        ls = (describe(ex, p, [str(gnd.image_path(gnd.queries[k].image)) for k in cropped],
                       [gnd.queries[k].box for k in cropped]) if cropped else np.zeros((0, ex.dim), np.float32))
        config = {"method": "gem", **p, "layer": ex.layer, "images": [im.path for im in gnd.images],
                  "root": gnd.root}
        if part is None:
            self._write(out_dir, gnd, vectors, np.array(cropped, np.int64), ls, config)
            return
        tmp = make_temp_dir(out_dir)
        save_npz(tmp / "vectors.npz", vectors=vectors, cropped=np.array(cropped, np.int64), ls=ls)
        parts.write_manifest(tmp, part, images, config)
        replace_dir(tmp, out_dir)

    def gather(self, p: dict, gnd: GroundTruth, folders: list[Path], out_dir) -> None:
        found = parts.read_manifests(folders, len(gnd.images))
        got = [load_npz(m["folder"] / "vectors.npz") for m in found]
        self._write(out_dir, gnd, np.concatenate([a["vectors"] for a in got]),
                    np.concatenate([a["cropped"] for a in got]), np.concatenate([a["ls"] for a in got]),
                    found[0]["config"])

    @staticmethod
    def _write(out_dir, gnd: GroundTruth, vectors: np.ndarray, cropped: np.ndarray, ls_cropped: np.ndarray,
               config: dict) -> None:
        """The feature folder: every image's vector, and each query's whole image (GS) and box (LS)."""
        gs = vectors[[q.image for q in gnd.queries]]  # the whole query images (fancy indexing: a copy)
        ls = gs.copy()
        if len(cropped):
            ls[cropped] = ls_cropped
        out_dir = Path(out_dir)
        tmp = out_dir.with_name(out_dir.name + ".partial")
        tmp.mkdir(parents=True, exist_ok=True)
        save_npz(tmp / "vectors.npz", vectors=vectors, ls=ls, gs=gs)
        write_json(tmp / "manifest.json", {"n_images": len(vectors), "dim": vectors.shape[1],
                                           "cropped_queries": len(cropped), "config": config})
        replace_dir(tmp, out_dir)
        log.info("%s: %d images, %d-d; %d query boxes cropped", out_dir, len(vectors), vectors.shape[1], len(cropped))
