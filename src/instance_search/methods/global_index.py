"""The global-descriptor family's index: an optional PCA-whitening (learn) and the prepared database
and benchmark-query vectors (encode: L2 -> whiten -> L2).

The codebook and encode steps import this module, not the search code (:mod:`.descriptors`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth
from ..io import load_npz, read_json
from ..retrieval import linalg
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
        return {"vectors": {"vectors": prepare(f["vectors"][:gnd.n_database], white)},
                "queries": {"ls": prepare(f["ls"], white), "gs": prepare(f["gs"], white)}}

    def join(self, parts: list[dict[str, dict]], n_database: int, p: dict) -> dict[str, dict]:
        dim = parts[0]["vectors"]["vectors"].shape[1]
        return {"vectors": {"vectors": np.concatenate([f["vectors"]["vectors"] for f in parts])},
                "queries": {k: np.zeros((0, dim), np.float32) for k in ("ls", "gs")}}
