"""PCA-whitening of local features, learned on a sample of database features.

x -> (x - mean) P^T with P = the top ``dim`` principal directions scaled by 1/sqrt(variance), then
L2-normalised again (BLCF: L2 -> PCA-whitening -> L2). scikit-learn's PCA finds the directions
(full SVD: deterministic); applying it is one matrix product, stored as (mean, projection).
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA

from .errors import InstanceSearchError
from .features.cnn import l2_normalise

# Relative floor on the variances: a direction with (numerically) no variance would otherwise be
# scaled by ~1/0 and swamp the others with noise.
_EPS = 1e-6


def fit(x: np.ndarray, dim: int, key: str = "codebook.pca_dim") -> dict[str, np.ndarray]:
    """Whitening model {mean (D,), projection (dim, D)} of the rows of x."""
    n, d = x.shape
    if not 0 < dim <= min(n, d):
        raise InstanceSearchError(f"{key}={dim}: must be between 1 and min(samples, feature dimension) = {min(n, d)}")
    pca = PCA(n_components=dim, svd_solver="full").fit(x.astype(np.float64))
    var = np.maximum(pca.explained_variance_, _EPS * pca.explained_variance_[0])
    return {"mean": pca.mean_.astype(np.float32),
            "projection": (pca.components_ / np.sqrt(var)[:, None]).astype(np.float32)}


def apply(x: np.ndarray, model: dict[str, np.ndarray]) -> np.ndarray:
    """Whitened, L2-normalised rows."""
    if x.shape[1] != model["mean"].shape[0]:
        raise InstanceSearchError(f"features have {x.shape[1]} dimensions but the whitening expects "
                                  f"{model['mean'].shape[0]}; re-run the codebook step")
    return l2_normalise((x - model["mean"]) @ model["projection"].T)
