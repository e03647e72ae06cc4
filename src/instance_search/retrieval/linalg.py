"""Linear algebra of descriptors: L2 normalisation and PCA-whitening.

PCA-whitening: x -> (x - mean) P^T with P the top ``dim`` principal directions scaled by
1/sqrt(variance), then L2-normalised again (L2 -> whiten -> L2, as BLCF and the region method use
it). scikit-learn's PCA finds the directions (full SVD: deterministic); applying it is one matrix
product, stored as (mean, projection).
"""

from __future__ import annotations

import numpy as np

from ..errors import InstanceSearchError

# Relative floor on the variances: a direction with (numerically) no variance would otherwise be
# scaled by ~1/0 and swamp the others with noise.
_EPS = 1e-6


def l2(x: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Rows (last axis) scaled to unit length, computed in ``dtype``; all-zero rows stay zero (a dead
    cell is not a direction)."""
    x = np.asarray(x, dtype=dtype)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.divide(x, n, out=np.zeros_like(x), where=n > 0)


def fit_whitening(x: np.ndarray, dim: int, key: str = "codebook.pca_dim") -> dict[str, np.ndarray]:
    """Whitening model {mean (D,), projection (dim, D)} float32 of the rows of x."""
    n, d = x.shape
    if not 0 < dim <= min(n, d):
        raise InstanceSearchError(f"{key}={dim}: must be between 1 and min(samples, feature dimension) = {min(n, d)}")
    from sklearn.decomposition import PCA  # here: importing scikit-learn costs every step process ~2 s

    pca = PCA(n_components=dim, svd_solver="full").fit(x.astype(np.float64))
    var = np.maximum(pca.explained_variance_, _EPS * pca.explained_variance_[0])
    return {"mean": pca.mean_.astype(np.float32),
            "projection": (pca.components_ / np.sqrt(var)[:, None]).astype(np.float32)}


def whiten(x: np.ndarray, model: dict[str, np.ndarray]) -> np.ndarray:
    """Whitened, L2-normalised rows (float32)."""
    if x.shape[1] != model["mean"].shape[0]:
        raise InstanceSearchError(f"features have {x.shape[1]} dimensions but the whitening expects "
                                  f"{model['mean'].shape[0]}; re-run the codebook step")
    return l2((x - model["mean"]) @ model["projection"].T, np.float32)


def whitening_arrays(model: dict[str, np.ndarray] | None) -> dict[str, np.ndarray]:
    """How a whitening model is stored beside other arrays (nothing when there is none)."""
    return {} if model is None else {"pca_mean": model["mean"], "pca_projection": model["projection"]}


def whitening_from(arrays: dict[str, np.ndarray]) -> dict[str, np.ndarray] | None:
    return {"mean": arrays["pca_mean"], "projection": arrays["pca_projection"]} if "pca_mean" in arrays else None
