"""The global-descriptor family's index: an optional PCA-whitening (learn) and the prepared database
and benchmark-query vectors (encode: L2 -> whiten -> L2), with an approximate-nearest-neighbour index of
the database vectors where ``encode.ann`` asks for one at this database size (:mod:`..retrieval.ann`).

The codebook and encode steps import this module, not the search code (:mod:`.descriptors`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth
from ..io import load_npz, read_json
from ..retrieval import ann, linalg
from .global_features import GemExtraction


def prepare(x: np.ndarray, model: dict[str, np.ndarray] | None) -> np.ndarray:
    """L2 (-> whiten -> L2 with a whitening model), float32."""
    x = linalg.l2(x, np.float32)
    return x if model is None else linalg.whiten(x, model)


class GlobalIndexing:
    def __init__(self, extraction: GemExtraction):
        self.name = extraction.name

    @staticmethod
    def _features(features) -> tuple[dict, dict]:
        d = Path(features)
        if not (d / "manifest.json").is_file():
            raise InstanceSearchError(f"{d}: not a finished gem feature folder (no manifest.json); re-run extract")
        return read_json(d / "manifest.json"), load_npz(d / "vectors.npz")

    def learn(self, p: dict, seed: int, gnd: GroundTruth, features) -> dict[str, np.ndarray]:
        _, f = self._features(features)
        if not p["pca_dim"]:
            return {"none": np.zeros(0, np.float32)}
        return linalg.whitening_arrays(linalg.fit_whitening(linalg.l2(f["vectors"][:gnd.n_database], np.float32),
                                                            p["pca_dim"], key="gem.codebook.pca_dim"))

    def encode(self, p: dict, gnd: GroundTruth, features, model: dict) -> dict[str, dict]:
        manifest, f = self._features(features)
        if manifest["n_images"] != len(gnd.images):
            raise InstanceSearchError(f"{features}: {manifest['n_images']} images but the ground truth lists "
                                      f"{len(gnd.images)}; re-run extract")
        white = linalg.whitening_from(model)
        vectors = prepare(f["vectors"][:gnd.n_database], white)
        return {"vectors": {"vectors": vectors},
                "queries": {"ls": prepare(f["ls"], white), "gs": prepare(f["gs"], white)}, **_ann(vectors, p)}

    def join(self, parts: list[dict[str, dict]], n_database: int, p: dict) -> dict[str, dict]:
        dim = parts[0]["vectors"]["vectors"].shape[1]
        vectors = np.concatenate([f["vectors"]["vectors"] for f in parts])
        return {"vectors": {"vectors": vectors},
                "queries": {k: np.zeros((0, dim), np.float32) for k in ("ls", "gs")}, **_ann(vectors, p)}


def _ann(vectors: np.ndarray, p: dict) -> dict[str, dict]:
    """``ann.npz`` (the serialised faiss index) where encode.ann asks for one at this size; nothing
    otherwise, so an index below the threshold holds the same files, byte for byte, as without it."""
    s = p.get("ann")  # an index encoded before the setting existed has none
    if s is None or not ann.wanted(s, len(vectors)):
        return {}
    return {"ann": {"index": ann.build(vectors, s)}}
