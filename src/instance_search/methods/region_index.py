"""The region family's index: an optional PCA-whitening of the image-wise vectors (learn), and the
prepared vectors, every image's proposals (unit region vectors, float16) and the benchmark queries'
vectors (encode).

The codebook and encode steps import this module, not the search code (:mod:`.regions`).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import InstanceSearchError
from ..features.store import FeatureStore
from ..groundtruth import GroundTruth
from ..retrieval import linalg
from .region_features import RegionExtraction

log = logging.getLogger(__name__)


def prepare(x: np.ndarray, model: dict[str, np.ndarray] | None = None) -> np.ndarray:
    """L2 (-> whiten -> L2 when a whitening model is given), float64; L2 first so that sum- and
    max-pooled vectors of any image size share one scale before the mean is subtracted."""
    x = linalg.l2(x)
    return x if model is None else linalg.whiten(x.astype(np.float32), model).astype(np.float64)


def _store(features_dir, gnd: GroundTruth) -> FeatureStore:
    d = Path(features_dir)
    if (d / "regions.npz").is_file():
        raise InstanceSearchError(f"{d}: frcnn features in the format of an earlier version (one regions.npz, not "
                                  "shards); re-run the extract step")
    store = FeatureStore(d)
    if store.n_images != len(gnd.images):
        raise InstanceSearchError(f"{d}: {store.n_images} images but the ground truth lists {len(gnd.images)}; "
                                  "re-run extract")
    return store


def _unit_half(regions: np.ndarray, out: np.ndarray, block: int = 16384) -> None:
    """``out`` = the rows L2-normalised (in float64, as :func:`linalg.l2`), in float16; a block of rows
    at a time, so the float64 temporaries stay ~0.5 GB whatever the database (row-wise: same values)."""
    for lo in range(0, len(regions), block):
        out[lo:lo + block] = linalg.l2(regions[lo:lo + block].astype(np.float32)).astype(np.float16)


class RegionIndexing:
    def __init__(self, extraction: RegionExtraction):
        self.name = extraction.name

    def learn(self, p: dict, seed: int, gnd: GroundTruth, features) -> dict[str, np.ndarray]:
        """The PCA-whitening of the L2-normalised database image-wise vectors (or none: pca_dim 0)."""
        store = _store(features, gnd)
        if not p["pca_dim"]:
            return {"none": np.zeros(0, np.float32)}
        vectors = np.concatenate([sh["vectors"] for _, sh in store.shards(gnd.n_database)])[:gnd.n_database]
        return linalg.whitening_arrays(linalg.fit_whitening(linalg.l2(vectors).astype(np.float32), p["pca_dim"],
                                                            key="frcnn.codebook.pca_dim"))

    def encode(self, p: dict, gnd: GroundTruth, features, model: dict) -> dict[str, dict]:
        store = _store(features, gnd)
        white = linalg.whitening_from(model)
        kept = ("vectors", "boxes", "fallback", "queries", "ls", "gs")
        got: dict[str, list] = {k: [] for k in ("counts", *kept)}
        regions, at = np.empty((store.n_features, store.dim), np.float16), 0
        for _, sh in store.shards():  # a shard at a time, into the one output array
            _unit_half(sh["regions"], regions[at:at + len(sh["regions"])])
            at += len(sh["regions"])
            got["counts"].append(np.diff(sh["offsets"]))
            for k in kept:
                got[k].append(sh[k])
        vectors, asked = np.concatenate(got["vectors"]), np.concatenate(got["queries"])
        order = np.argsort(asked, kind="stable")
        if not np.array_equal(asked[order], np.arange(len(gnd.queries))):
            raise InstanceSearchError(f"{features}: the shards hold the vectors of {len(asked)} queries, not of the "
                                      f"ground truth's {len(gnd.queries)}; re-run extract")
        ls, gs = (np.concatenate(got[k]).reshape(-1, vectors.shape[1])[order] for k in ("ls", "gs"))
        log.info("%s: %d images, %d proposals, %d fell back to the whole image (%s source)", features, len(vectors),
                 store.n_features, int(np.concatenate(got["fallback"]).sum()), store.config["proposal_source"])
        return {
            "vectors": {"vectors": prepare(vectors[:gnd.n_database], white).astype(np.float32)},
            "proposals": {"boxes": np.concatenate(got["boxes"]),
                          "offsets": np.concatenate([[0], np.cumsum(np.concatenate(got["counts"]))]).astype(np.int64),
                          "regions": regions},
            "queries": {"ls": prepare(ls, white).astype(np.float32), "gs": prepare(gs, white).astype(np.float32),
                        "ls_region": linalg.l2(ls).astype(np.float32)},
        }

    def join(self, parts: list[dict[str, dict]], n_database: int, p: dict) -> dict[str, dict]:
        counts = np.concatenate([np.diff(f["proposals"]["offsets"]) for f in parts])
        dim = parts[0]["vectors"]["vectors"].shape[1]
        return {
            "vectors": {"vectors": np.concatenate([f["vectors"]["vectors"] for f in parts])},
            "proposals": {"boxes": np.concatenate([f["proposals"]["boxes"] for f in parts]),
                          "offsets": np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                          "regions": np.concatenate([f["proposals"]["regions"] for f in parts])},
            "queries": {k: np.zeros((0, dim), np.float32) for k in ("ls", "gs", "ls_region")},
        }
