"""Bags of visual words: the sparse BoW matrix, word weights, and per-image assignment maps.

An image's *assignment map* is its features' positions with their words; re-ranking and box queries
need it. The BoW matrix holds raw counts (tf); the word weights (idf, or ones for tf) are stored
beside it and applied at search time, so one encode serves both weightings' experiments.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .errors import InstanceSearchError


@dataclass
class AssignmentMaps:
    """Concatenated per-image maps: image i owns rows offsets[i]:offsets[i+1]."""

    xy: np.ndarray        # float32 (n, 2) pixel positions
    words: np.ndarray     # int32 (n,)
    offsets: np.ndarray   # int64 (n_images + 1,)
    width: np.ndarray     # int32 (n_images,)
    height: np.ndarray    # int32 (n_images,)

    def image(self, i: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.xy[a:b], self.words[a:b], int(self.width[i]), int(self.height[i])

    def to_arrays(self) -> dict[str, np.ndarray]:
        return dict(xy=self.xy, words=self.words, offsets=self.offsets, width=self.width, height=self.height)

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "AssignmentMaps":
        return cls(a["xy"], a["words"], a["offsets"], a["width"], a["height"])


def counts_matrix(words: np.ndarray, offsets: np.ndarray, vocabulary: int) -> sp.csr_matrix:
    """Sparse (n_images, vocabulary) word counts from concatenated word lists."""
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    m = sp.csr_matrix((np.ones(len(words), np.float32), (rows, words)),
                      shape=(len(offsets) - 1, vocabulary), dtype=np.float32)
    m.sum_duplicates()
    m.sort_indices()
    return m


def word_weights(counts: sp.csr_matrix, n_database: int, weighting: str) -> np.ndarray:
    """Per-word weights: ones for tf; idf = log(N / df) over the database for tfidf.

    A word that no database image holds gets the idf of df = 1 (it cannot match, but it still
    counts in the query's norm like any rare word).
    """
    vocabulary = counts.shape[1]
    if weighting == "tf":
        return np.ones(vocabulary, np.float32)
    if weighting != "tfidf":
        raise InstanceSearchError(f"encode.weighting={weighting!r}: expected tf or tfidf")
    df = np.bincount(counts[:n_database].indices, minlength=vocabulary)
    return np.log(n_database / np.maximum(df, 1)).astype(np.float32)


def save_bow(counts: sp.csr_matrix, idf: np.ndarray, n_database: int) -> dict[str, np.ndarray]:
    return dict(data=counts.data, indices=counts.indices.astype(np.int32), indptr=counts.indptr.astype(np.int64),
                shape=np.array(counts.shape, np.int64), idf=idf, n_database=np.array(n_database, np.int64))


def load_bow(a: dict[str, np.ndarray]) -> tuple[sp.csr_matrix, np.ndarray, int]:
    counts = sp.csr_matrix((a["data"], a["indices"], a["indptr"]), shape=tuple(a["shape"]))
    return counts, a["idf"], int(a["n_database"])
