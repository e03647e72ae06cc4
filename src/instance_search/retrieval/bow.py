"""Bags of visual words: assignment maps, the sparse count matrix, word weights (tf / tf-idf).

An image's *assignment map* is its local features' positions with their words (SIFT keypoints or the
cells of a CNN map alike); box queries and window re-ranking need it. The count matrix holds raw
counts (tf); the word weights (idf, or ones for tf) are stored beside it and applied at search time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ..errors import InstanceSearchError
from .geometry import Box, box_mask, in_box


@dataclass
class AssignmentMaps:
    """Concatenated per-image maps: image i owns rows offsets[i]:offsets[i+1]."""

    xy: np.ndarray        # float32 (n, 2) pixel positions
    words: np.ndarray     # int32 (n,)
    offsets: np.ndarray   # int64 (n_images + 1,)
    width: np.ndarray     # int32 (n_images,)
    height: np.ndarray    # int32 (n_images,)
    bits: np.ndarray | None = None  # uint8 (n, bytes): each feature's binarised residual (retrieval.asmk)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def image(self, i: int) -> tuple[np.ndarray, np.ndarray, int, int]:
        """(xy, words, width, height) of image i."""
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.xy[a:b], self.words[a:b], int(self.width[i]), int(self.height[i])

    def features(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(xy, words, bits) of image i: what spatial verification matches."""
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.xy[a:b], self.words[a:b], None if self.bits is None else self.bits[a:b]

    def to_arrays(self) -> dict[str, np.ndarray]:
        bits = {} if self.bits is None else {"bits": self.bits}
        return dict(xy=self.xy, words=self.words, offsets=self.offsets, width=self.width, height=self.height, **bits)

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> "AssignmentMaps":
        if "bits" not in a:
            raise InstanceSearchError("assignments.npz has no binarised residuals (an index of an older release); "
                                      "re-run encode")
        return cls(a["xy"], a["words"], a["offsets"], a["width"], a["height"], a["bits"])

    @classmethod
    def concatenate(cls, parts: list["AssignmentMaps"]) -> "AssignmentMaps":
        counts = np.concatenate([np.diff(p.offsets) for p in parts])
        return cls(np.concatenate([p.xy for p in parts]), np.concatenate([p.words for p in parts]),
                   np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
                   np.concatenate([p.width for p in parts]), np.concatenate([p.height for p in parts]),
                   None if any(p.bits is None for p in parts) else np.concatenate([p.bits for p in parts]))


def counts_matrix(words: np.ndarray, offsets: np.ndarray, vocabulary: int) -> sp.csr_matrix:
    """Sparse (n_images, vocabulary) word counts from concatenated word lists."""
    rows = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    m = sp.csr_matrix((np.ones(len(words), np.float32), (rows, words)),
                      shape=(len(offsets) - 1, vocabulary), dtype=np.float32)
    m.sum_duplicates()
    m.sort_indices()
    return m


def word_weights(counts: sp.csr_matrix, n_database: int, weighting: str) -> np.ndarray:
    """Per-word weights: ones for tf; idf = log(N / df) over the N database rows for tfidf (rows after
    them, query-only images, never count).

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


def weighted(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """Count rows times the word weights (float64)."""
    return sp.csr_matrix(counts.multiply(idf[None, :].astype(np.float64)))


def bag(words_per_row: list[np.ndarray], vocabulary: int) -> sp.csr_matrix:
    """Sparse (len(words_per_row), vocabulary) float32 word counts, one row per word list."""
    rows = np.concatenate([np.full(len(w), j) for j, w in enumerate(words_per_row)]) if words_per_row else []
    cols = np.concatenate(words_per_row) if words_per_row else []
    m = sp.csr_matrix((np.ones(len(cols), np.float32), (rows, cols)), shape=(len(words_per_row), vocabulary))
    m.sum_duplicates()
    return m


def box_words(xy: np.ndarray, words: np.ndarray, box: Box, fallback: str = "image") -> tuple[np.ndarray, bool]:
    """(words of the features inside ``box``, whether it fell back: geometry.in_box)."""
    keep, fell_back = in_box(xy, box, fallback)
    return words[keep], fell_back


def window_vectors(maps: AssignmentMaps, images: np.ndarray, boxes: np.ndarray, idf: np.ndarray) -> sp.csr_matrix:
    """Weighted BoW (n, K) of the features of ``images[j]`` inside ``boxes[j]`` (NaN box: none)."""
    rows, cols = [], []
    for j, (i, box) in enumerate(zip(images, boxes)):
        xy, words, _, _ = maps.image(int(i))
        if not np.isnan(box).any():
            w = words[box_mask(xy, box)]
            rows.append(np.full(len(w), j))
            cols.append(w)
    rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    cols = np.concatenate(cols) if cols else np.zeros(0, np.int64)
    m = sp.csr_matrix((np.ones(len(cols)), (rows, cols)), shape=(len(images), len(idf)))
    m.sum_duplicates()
    return sp.csr_matrix(m.multiply(idf[None, :].astype(np.float64)))
