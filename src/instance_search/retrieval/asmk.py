"""ASMK*: the aggregated selective match kernel over binarised residuals (Tolias, Avrithis and Jegou,
ICCV 2013 and IJCV 2016), with an inverted file, beside the tf-idf bag of words.

An image X is its local features x, each assigned to a visual word c with centroid mu_c. Per word it
keeps one vector: the sum of its features' residuals r(x) = x - mu_c, binarised dimension by dimension
(``bits``: sign > 0, packed 8 to a byte):

    b_c(X) = sign( sum_{x in X_c} (x - mu_c) )                                      (ASMK*)

Two images compare only on the words they share, by the normalised Hamming similarity of those bits,
u = 1 - 2 h / B over B bits, through the selective function sigma(u) = u^alpha where u > tau, else 0
(alpha 3 and tau 0 as the references), each word weighted by w_c = idf_c^2 (the idf of both sides, as
the tf-idf cosine weighs a shared word):

    S(Q, X) = sum_{c in Q and X} w_c sigma(u(b_c(Q), b_c(X))) / sqrt(N(Q) N(X)),   N(X) = sum_{c in X} w_c

N is the self-similarity (a word matches its own bits with u = 1), so S(X, X) = 1: the kernel is a
cosine. The weighted cosine's ``weight_absent`` a counts the database words absent from the query
with weight a in N(X), as it does for the bags (:mod:`.similarity`).

Query features take their ``multiple`` nearest words (multiple assignment, 5 in the references);
database features one. A box query aggregates the features inside its box.

The same per-feature bits (a word's residual of one feature) let spatial verification keep only the
tentative matches whose descriptors agree (:mod:`.verification`), as Hamming embedding does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InstanceSearchError

KERNEL_KEYS = ("alpha", "threshold")


def check_kernel(p: dict, key: str) -> None:
    alpha, tau = p.get("alpha"), p.get("threshold")
    if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha <= 0:
        raise InstanceSearchError(f"{key}.alpha={alpha!r}: must be a number > 0 (the references: 3)")
    if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not -1 <= tau < 1:
        raise InstanceSearchError(f"{key}.threshold={tau!r}: must be a number in [-1, 1) (the references: 0)")


def pack(positive: np.ndarray) -> np.ndarray:
    """(n, D) bool -> (n, ceil(D / 8)) uint8, the first dimension in the highest bit."""
    return np.packbits(np.asarray(positive, bool), axis=1)


def residual_bits(x: np.ndarray, words: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Each feature's binarised residual to its word: (n, ceil(D / 8)) uint8."""
    return pack(np.asarray(x, np.float32) > centroids[np.asarray(words, np.int64)])


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances of packed bit rows, broadcast row against row."""
    return np.bitwise_count(np.bitwise_xor(a, b)).sum(axis=-1, dtype=np.int64)


@dataclass
class Aggregated:
    """Aggregated, binarised residuals of a list of images: image i owns rows offsets[i]:offsets[i+1],
    one row a word it holds (ascending)."""

    words: np.ndarray     # int32 (E,)
    bits: np.ndarray      # uint8 (E, B / 8)
    offsets: np.ndarray   # int64 (n_images + 1,)
    dims: int             # B: the residuals' dimensions (bits per row)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def image(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        a, b = self.offsets[i], self.offsets[i + 1]
        return self.words[a:b], self.bits[a:b]

    def to_arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {f"{prefix}words": self.words, f"{prefix}bits": self.bits, f"{prefix}offsets": self.offsets,
                f"{prefix}dims": np.array(self.dims, np.int64)}

    @classmethod
    def from_arrays(cls, a: dict, prefix: str = "") -> "Aggregated":
        return cls(np.asarray(a[f"{prefix}words"], np.int32), np.asarray(a[f"{prefix}bits"], np.uint8),
                   np.asarray(a[f"{prefix}offsets"], np.int64), int(a[f"{prefix}dims"]))

    @classmethod
    def concatenate(cls, parts: list["Aggregated"]) -> "Aggregated":
        counts = np.concatenate([np.diff(p.offsets) for p in parts])
        return cls(np.concatenate([p.words for p in parts]), np.concatenate([p.bits for p in parts]),
                   np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), parts[0].dims)

    def take(self, images: np.ndarray) -> "Aggregated":
        """The images ``images``, in that order."""
        rows = [np.arange(self.offsets[i], self.offsets[i + 1]) for i in images]
        rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        counts = np.diff(self.offsets)[np.asarray(images, np.int64)]
        return Aggregated(self.words[rows], self.bits[rows],
                          np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), self.dims)

    @classmethod
    def empty(cls, dims: int) -> "Aggregated":
        return cls(np.zeros(0, np.int32), np.zeros((0, (dims + 7) // 8), np.uint8), np.zeros(1, np.int64), dims)


def aggregate(x: np.ndarray, words: np.ndarray, offsets: np.ndarray, centroids: np.ndarray) -> Aggregated:
    """ASMK* of each image (rows offsets[i]:offsets[i+1] of ``x``): per word it holds, the sign of the
    sum of its features' residuals. ``words`` (n,) one word a feature, or (n, m) m words a feature
    (multiple assignment: the feature's residual to each of them counts)."""
    x = np.asarray(x, np.float32)
    words = np.asarray(words, np.int64)
    if words.ndim == 1:
        words = words[:, None]
    n, m = words.shape
    dims = centroids.shape[1]
    if n != len(x) or offsets[-1] != n:
        raise InstanceSearchError(f"{n} word lists for {len(x)} features over {offsets[-1]} image rows")
    if n == 0:
        return Aggregated(np.zeros(0, np.int32), np.zeros((0, (dims + 7) // 8), np.uint8),
                          np.zeros(len(offsets), np.int64), dims)
    image = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
    key = (np.repeat(image, m) * len(centroids) + words.ravel())  # image-major, then word
    order = np.argsort(key, kind="stable")
    key = key[order]
    feature = order // m
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    sums = np.add.reduceat(x[feature] - centroids[words.ravel()[order]], starts, axis=0)
    first = key[starts]
    counts = np.bincount(first // len(centroids), minlength=len(offsets) - 1)
    return Aggregated((first % len(centroids)).astype(np.int32), pack(sums > 0),
                      np.concatenate([[0], np.cumsum(counts)]).astype(np.int64), dims)


def selective(u: np.ndarray, alpha: float, threshold: float) -> np.ndarray:
    """sigma(u) = sign(u) |u|^alpha where u > threshold, else 0."""
    u = np.asarray(u, np.float64)
    return np.where(u > threshold, np.sign(u) * np.abs(u) ** alpha, 0.0)


class InvertedFile:
    """The database's aggregated words by word: a query touches only the images sharing its words."""

    def __init__(self, db: Aggregated, idf: np.ndarray, n_database: int):
        k = len(idf)
        self.n_database, self.dims = n_database, db.dims
        self.weights = np.asarray(idf, np.float64) ** 2
        rows = int(db.offsets[n_database])
        image = np.repeat(np.arange(n_database), np.diff(db.offsets[:n_database + 1]))
        words = db.words[:rows].astype(np.int64)
        order = np.argsort(words, kind="stable")  # by word, images ascending within
        self.images = image[order]
        self.bits = db.bits[:rows][order]
        self.starts = np.searchsorted(words[order], np.arange(k + 1))
        # N(X): every database image's self-similarity
        self.norms = np.bincount(image, weights=self.weights[words], minlength=n_database)

    def scores(self, q_words: np.ndarray, q_bits: np.ndarray, alpha: float, threshold: float,
               weight_absent: float = 1.0) -> np.ndarray:
        """S(Q, X) of one query (its aggregated words and bits) against every database image: (n_database,)."""
        q_words = np.asarray(q_words, np.int64)
        lo, hi = self.starts[q_words], self.starts[q_words + 1]
        n = hi - lo
        out = np.zeros(self.n_database)
        if n.sum() == 0:
            return out
        row = np.repeat(np.arange(len(q_words)), n)
        at = np.repeat(lo, n) + (np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n))
        images = self.images[at]
        u = 1.0 - 2.0 * hamming(self.bits[at], q_bits[row]) / self.dims
        w = self.weights[q_words[row]]
        dots = np.bincount(images, weights=w * selective(u, alpha, threshold), minlength=self.n_database)
        norms = self.norms
        if weight_absent != 1.0:  # shared words count fully in N(X), the others with weight_absent
            shared = np.bincount(images, weights=w, minlength=self.n_database)
            norms = weight_absent * norms + (1 - weight_absent) * shared
        den = np.sqrt(self.weights[q_words].sum() * norms)
        return np.divide(dots, den, out=np.zeros_like(dots), where=den > 0)

