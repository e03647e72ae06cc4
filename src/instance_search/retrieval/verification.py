"""Spatial verification (Philbin et al., CVPR 2007): re-score a candidate image by how many of its
visual-word matches with the query agree with one 2-D transform.

Each image is its local features: positions ``xy`` (n, 2) pixels (x, y) and visual ``words`` (n,).

1. Tentative matches: every pair (i, j) with w_q(i) = w_c(j). A word contributes at most ``cap``
   features from each side (the first ``cap`` in feature order), hence at most cap^2 pairs: a bursty
   word (sky, facade, foliage) would otherwise flood the sample with pairs that are mostly wrong.
   With the features' binarised residuals (:mod:`.asmk`, Hamming embedding) a pair must also agree
   in its descriptors: Hamming distance <= ``hamming`` x the bits; then each query feature keeps its
   nearest such candidate feature and each candidate feature its nearest query feature (one to
   one). ``hamming: 1`` turns the check off (every shared-word pair, as above).
2. A robust fit of T mapping query points to candidate points, over the tentative pairs:
   ``affine``      c = A q + t   (6 degrees of freedom, 3 pairs a sample)
   ``homography``  c ~ H q       (8 degrees of freedom, 4 pairs a sample)
   by OpenCV's USAC with the settings of its USAC_ACCURATE preset (MSAC score, graph-cut local
   optimisation, least-squares polish on the inliers) and a fixed random state, so that a run is
   repeatable; plain RANSAC (deterministic in OpenCV) where the installed OpenCV has no USAC.
   Philbin et al. hypothesise from one match of affine-covariant regions; here only positions are
   known, so a hypothesis takes a minimal sample of pairs.
3. The score: the inlier count under the plain per-pair definition, for the fitted 3 x 3 matrix T,

       e_ij = | pi(T [q_i, 1]^T) - c_j |,   pi(x, y, w) = (x / w, y / w),   inliers = #{(i, j): e_ij < tau}

   counted here, not taken from OpenCV's mask, so the number does not depend on how OpenCV refines
   the model or which internal error it thresholds (a pair with w = 0 is no inlier).
4. Whether the inliers exceed chance (the a-contrario test of Moisan and Stival, ORSA): of n
   tentative matches, how likely k inliers are when the matches are random. A random candidate point
   lands within tau of the model's prediction with probability p = pi tau^2 / A, A the area of the
   candidate's matched points' bounding box (clustered matches are easier to fit by chance); the
   number of false alarms NFA = C(n, s) P[Binomial(n - s, p) >= k - s] over the C(n, s) minimal
   samples of s pairs, and ``significance`` = max(0, -log10 NFA): 0 when k is what chance gives, and
   growing with each inlier beyond it, whatever n.
5. The located object: the axis-aligned bounding box (x1, y1, x2, y2) of the query box's four corners
   mapped by T; none when the candidate has fewer than ``min_inliers`` inliers, or when a corner maps
   to w <= 0 (the box crosses the homography's horizon: its image is unbounded).

The parameters live under ``<method>.rerank.sv`` (``check`` validates them): model, threshold (tau,
pixels), cap, max_iters, confidence, min_inliers and hamming.
"""

from __future__ import annotations

import numbers
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InstanceSearchError
from .asmk import hamming as hamming_distances

# Pairs in a minimal sample of each model; fewer tentative pairs than this cannot be fitted.
MODELS = {"affine": 3, "homography": 4}
KEYS = ("model", "threshold", "cap", "max_iters", "confidence", "min_inliers", "hamming")
# The prefix named by errors raised outside ``check``, where the caller's method is unknown.
_KEY = "rerank.sv"
# UsacParams (with a settable random state) arrived in OpenCV 4.5.1; older builds get plain RANSAC.
_HAS_USAC = hasattr(cv2, "UsacParams") and hasattr(cv2, "USAC_ACCURATE") and hasattr(cv2, "LOCAL_OPTIM_GC")


# ------------------------------------------------------------------------------------------------
# Parameters


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool) and np.isfinite(v)


def _check_values(key: str, model, threshold, cap, max_iters, confidence, min_inliers, hamming) -> None:
    if not isinstance(model, str) or model not in MODELS:
        raise InstanceSearchError(f"{key}.model={model!r}: must be one of {', '.join(MODELS)}")
    if not _is_real(threshold) or threshold <= 0:
        raise InstanceSearchError(f"{key}.threshold={threshold!r}: must be a number of pixels > 0")
    if not _is_int(cap) or cap < 1:
        raise InstanceSearchError(f"{key}.cap={cap!r}: must be an integer >= 1")
    if not _is_int(max_iters) or max_iters < 1:
        raise InstanceSearchError(f"{key}.max_iters={max_iters!r}: must be an integer >= 1")
    if not _is_real(confidence) or not 0 < confidence < 1:
        raise InstanceSearchError(f"{key}.confidence={confidence!r}: must be a number in (0, 1)")
    if not _is_int(min_inliers) or min_inliers < 0:
        raise InstanceSearchError(f"{key}.min_inliers={min_inliers!r}: must be an integer >= 0")
    if not _is_real(hamming) or not 0 <= hamming <= 1:
        raise InstanceSearchError(f"{key}.hamming={hamming!r}: must be a fraction of the bits in [0, 1] (1: no check)")


def _check_seed(seed) -> None:
    # OpenCV keeps the random state in a C int.
    if not _is_int(seed) or not 0 <= seed < 2**31:
        raise InstanceSearchError(f"seed={seed!r}: spatial verification needs an integer in [0, 2**31)")


def check(params_section: dict, key: str) -> None:
    """Validate a ``<method>.rerank.sv`` section; ``key`` is that prefix, named by the errors.

    ``weight`` (how the caller combines the inlier count with its first-stage score) is checked here
    too; other keys are left to the caller (the section may carry its own switches).
    """
    if not isinstance(params_section, dict):
        raise InstanceSearchError(f"{key}: must be a mapping with keys {', '.join(KEYS)}")
    for name in KEYS:
        if name not in params_section:
            raise InstanceSearchError(f"{key}.{name}: missing (the section needs {', '.join(KEYS)})")
    _check_values(key, *(params_section[name] for name in KEYS))
    weight = params_section.get("weight", 1)
    if not _is_real(weight) or weight < 0:
        raise InstanceSearchError(f"{key}.weight={weight!r}: must be a number >= 0")


# ------------------------------------------------------------------------------------------------
# Tentative matches


def _words(words) -> np.ndarray:
    words = np.asarray(words)
    if words.ndim != 1 or (words.size and not np.issubdtype(words.dtype, np.integer)):
        raise InstanceSearchError(f"visual words must be a 1-D integer array, got {words.dtype} {words.shape}")
    return words.astype(np.int64, copy=False)


def _first_per_word(words: np.ndarray, cap: int) -> np.ndarray:
    """Feature indices (ascending) of the first ``cap`` features of each word, in feature order."""
    order = np.argsort(words, kind="stable")  # stable: within a word, feature order
    sw = words[order]
    pos = np.arange(len(sw))
    starts = np.r_[True, sw[1:] != sw[:-1]] if len(sw) else np.zeros(0, bool)
    rank = pos - np.maximum.accumulate(np.where(starts, pos, 0))  # position within its word's run
    return np.sort(order[rank < cap])


def tentative_matches(q_words, c_words, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """(query indices, candidate indices) int64 of every pair sharing a word, at most ``cap``
    features of a word from each side; sorted by query index, then candidate index."""
    if not _is_int(cap) or cap < 1:
        raise InstanceSearchError(f"{_KEY}.cap={cap!r}: must be an integer >= 1")
    qw, cw = _words(q_words), _words(c_words)
    qi = _first_per_word(qw, cap)
    ci = _first_per_word(cw, cap)
    c_order = ci[np.argsort(cw[ci], kind="stable")]  # kept candidates by word, ascending index within
    c_sorted = cw[c_order]
    lo = np.searchsorted(c_sorted, qw[qi], side="left")
    n = np.searchsorted(c_sorted, qw[qi], side="right") - lo
    # Pair k of query feature i is candidate c_order[lo_i + k]: one flat index array, no loop.
    offset = np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)
    return np.repeat(qi, n), c_order[np.repeat(lo, n) + offset]


def _bits(bits, n: int, what: str) -> np.ndarray:
    bits = np.asarray(bits)
    if bits.dtype != np.uint8 or bits.ndim != 2 or len(bits) != n:
        raise InstanceSearchError(f"{what} bits must be a uint8 (n, bytes) array of its {n} features, got "
                                  f"{bits.dtype} {bits.shape}")
    return bits


def agreeing_matches(qi, ci, q_bits, c_bits, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Of the tentative pairs (qi, ci), those whose binarised residuals lie within ``max_distance``
    bits, one to one: each query feature keeps its nearest candidate feature, then each candidate
    feature its nearest query feature (ties: the lower index). Sorted by query index."""
    h = hamming_distances(q_bits[qi], c_bits[ci])
    keep = h <= max_distance
    qi, ci, h = qi[keep], ci[keep], h[keep]
    for mine, other in ((0, 1), (1, 0)):  # the nearest per query feature, then per candidate feature
        pairs = (qi, ci)
        order = np.lexsort((pairs[other], h, pairs[mine]))
        first = np.r_[True, pairs[mine][order][1:] != pairs[mine][order][:-1]] if len(order) else order.astype(bool)
        chosen = np.sort(order[first])
        qi, ci, h = qi[chosen], ci[chosen], h[chosen]
    order = np.lexsort((ci, qi))
    return qi[order], ci[order]


def significance(tentative: int, inliers: int, sample: int, p: float) -> float:
    """max(0, -log10 NFA): how far ``inliers`` of ``tentative`` random matches exceed chance, for a
    model fitted from ``sample`` pairs and a random match's inlier probability ``p`` (module doc)."""
    from scipy.special import gammaln

    n, k, s = int(tentative), int(inliers), int(sample)
    if k <= s or n <= s or not 0 < p < 1:
        return 0.0
    log_tests = gammaln(n + 1) - gammaln(s + 1) - gammaln(n - s + 1)
    binom_logsf, binom_logpmf = _binomial()
    log_tail = binom_logsf(k - s - 1, n - s, p)  # P[X >= k - s]
    if not np.isfinite(log_tail):  # below float range: its first term, P[X = k - s], bounds it from below
        log_tail = binom_logpmf(k - s, n - s, p)
    return float(max(0.0, -(log_tests + log_tail) / np.log(10)))


def _binomial():
    """(logsf, logpmf) of the binomial law, as scipy.stats.binom computes them, without importing
    scipy.stats (seconds on a cold start: a query's first re-ranking paid for it). The same ufuncs in
    the same order as scipy's rv_discrete does (log of the sf; combinations by gammaln, xlogy, xlog1py),
    so the scores keep every bit; a scipy without them falls back to scipy.stats itself."""
    try:
        import scipy.special._ufuncs as scu
        from scipy.special import gammaln, xlog1py, xlogy
        binom_sf = scu._binom_sf
    except (ImportError, AttributeError):  # another scipy layout: the public (slower to import) path
        from scipy.stats import binom
        return binom.logsf, binom.logpmf

    def logsf(x, n, p):
        with np.errstate(divide="ignore"):
            return np.log(binom_sf(np.floor(np.asarray([x])), np.asarray([n]), np.asarray([p])))[0]

    def logpmf(x, n, p):
        k, n = np.floor(np.asarray([x])), np.asarray([n])
        return (gammaln(n + 1) - (gammaln(k + 1) + gammaln(n - k + 1)) + xlogy(k, p) + xlog1py(n - k, -p))[0]
    return logsf, logpmf


def chance(c_xy: np.ndarray, threshold: float) -> float:
    """p: the probability that a random point of the matched candidate points' bounding box lies
    within ``threshold`` of a predicted position (the circle's area over the box's, at most 1)."""
    if len(c_xy) == 0:
        return 1.0
    span = np.maximum(c_xy.max(axis=0) - c_xy.min(axis=0), 2 * threshold)
    return float(min(1.0, np.pi * threshold**2 / (span[0] * span[1])))


# ------------------------------------------------------------------------------------------------
# Fit and inliers


def _points(xy, what: str) -> np.ndarray:
    xy = np.asarray(xy, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise InstanceSearchError(f"{what} positions must be an (n, 2) array, got shape {xy.shape}")
    if not np.isfinite(xy).all():
        raise InstanceSearchError(f"{what} positions contain NaN or infinity")
    return xy


def _usac_params(threshold: float, seed: int, max_iters: int, confidence: float):
    """USAC_ACCURATE's settings (OpenCV's usac setParameters) with our own random state: the preset
    flag alone cannot take a seed. MAGSAC was not chosen: its threshold is a noise bound rather than
    the inlier threshold counted here, and on 10%-inlier homographies it failed for some seeds."""
    p = cv2.UsacParams()
    p.threshold = float(threshold)
    p.confidence = float(confidence)
    p.maxIterations = int(max_iters)
    p.randomGeneratorState = int(seed)
    p.isParallel = False  # parallel USAC is not repeatable
    p.sampler = cv2.SAMPLING_UNIFORM
    p.score = cv2.SCORE_METHOD_MSAC
    p.loMethod = cv2.LOCAL_OPTIM_GC
    p.loSampleSize = 20
    p.loIterations = 25
    p.neighborsSearch = cv2.NEIGH_GRID
    p.final_polisher = cv2.LSQ_POLISHER
    return p


def fit(q_xy, c_xy, model: str, threshold: float, seed: int, max_iters: int,
        confidence: float) -> tuple[np.ndarray | None, np.ndarray]:
    """Robust fit of the transform mapping q_xy[k] to c_xy[k]: (3 x 3 float64 matrix or None, inlier
    mask bool (n,) as OpenCV reports it). Too few pairs for the model, or no model found: (None, all
    False). Deterministic: the same inputs give the same output."""
    _check_values(_KEY, model, threshold, 1, max_iters, confidence, 0, 1.0)
    _check_seed(seed)
    q, c = _points(q_xy, "query"), _points(c_xy, "candidate")
    if len(q) != len(c):
        raise InstanceSearchError(f"{len(q)} query points but {len(c)} candidate points")
    none = (None, np.zeros(len(q), bool))
    if len(q) < MODELS[model]:
        return none  # OpenCV would assert: a sample cannot be drawn
    estimate = cv2.estimateAffine2D if model == "affine" else cv2.findHomography
    if _HAS_USAC:
        matrix, mask = estimate(q, c, _usac_params(threshold, seed, max_iters, confidence))
    elif model == "affine":
        matrix, mask = cv2.estimateAffine2D(q, c, method=cv2.RANSAC, ransacReprojThreshold=float(threshold),
                                            maxIters=int(max_iters), confidence=float(confidence))
    else:
        matrix, mask = cv2.findHomography(q, c, cv2.RANSAC, float(threshold), maxIters=int(max_iters),
                                          confidence=float(confidence))
    if matrix is None or matrix.size == 0 or not np.isfinite(matrix).all():
        return none
    matrix = np.asarray(matrix, dtype=np.float64)
    if matrix.shape == (2, 3):
        matrix = np.vstack([matrix, [0.0, 0.0, 1.0]])
    inlier = np.zeros(len(q), bool) if mask is None else np.asarray(mask).ravel().astype(bool)
    return matrix, inlier


def _project(matrix: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(pi(T [x, 1]^T) (n, 2), w (n,)); a w = 0 point maps to inf / NaN."""
    h = xy @ matrix[:, :2].T + matrix[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return h[:, :2] / h[:, 2:], h[:, 2]


def count_inliers(matrix: np.ndarray | None, q_xy, c_xy, threshold: float) -> int:
    """#{k: |pi(T [q_k, 1]^T) - c_k| < threshold}; 0 without a matrix."""
    if matrix is None:
        return 0
    q, c = _points(q_xy, "query"), _points(c_xy, "candidate")
    if len(q) != len(c):
        raise InstanceSearchError(f"{len(q)} query points but {len(c)} candidate points")
    mapped, _ = _project(np.asarray(matrix, dtype=np.float64), q)
    with np.errstate(invalid="ignore"):
        err = np.hypot(*(mapped - c).T)
    return int(np.count_nonzero(err < threshold))  # NaN (w = 0) compares False


# ------------------------------------------------------------------------------------------------
# Verification


@dataclass(frozen=True, eq=False)
class Verified:
    """A candidate's verification: the inlier count, the fitted query -> candidate matrix (3 x 3,
    read-only; None: no model), the query box mapped into the candidate (None: too few inliers or
    unbounded), the tentative matches fitted and how far the inliers exceed chance (module doc)."""

    inliers: int
    matrix: np.ndarray | None
    box: tuple[float, float, float, float] | None
    tentative: int = 0
    significance: float = 0.0

    def __eq__(self, other):  # the generated one would compare arrays ambiguously
        if not isinstance(other, Verified):
            return NotImplemented
        if (self.matrix is None) != (other.matrix is None):
            return False
        same = self.matrix is None or np.array_equal(self.matrix, other.matrix)
        return (same and self.inliers == other.inliers and self.box == other.box
                and self.tentative == other.tentative and self.significance == other.significance)


def map_box(matrix: np.ndarray, box) -> tuple[float, float, float, float] | None:
    """Bounding box (x1, y1, x2, y2) of the box's four corners mapped by the matrix; None when a
    corner maps to w <= 0 (the image of the box is unbounded)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    mapped, w = _project(np.asarray(matrix, dtype=np.float64), np.array([[x1, y1], [x2, y1], [x2, y2], [x1, y2]]))
    if not (w > 0).all() or not np.isfinite(mapped).all():
        return None
    (lx, ly), (hx, hy) = mapped.min(axis=0), mapped.max(axis=0)
    return float(lx), float(ly), float(hx), float(hy)


def verify(q_xy, q_words, c_xy, c_words, query_box, *, cap: int, model: str, threshold: float, seed: int,
           max_iters: int, confidence: float, min_inliers: int, hamming: float = 1.0, q_bits=None,
           c_bits=None) -> Verified:
    """Verify one candidate against the query: tentative matches, fit, inliers, mapped query box
    (``query_box`` x1, y1, x2, y2 pixels in the query; None: no box wanted). ``q_bits``, ``c_bits``:
    each feature's binarised residual (uint8 rows), needed when ``hamming`` < 1."""
    _check_values(_KEY, model, threshold, cap, max_iters, confidence, min_inliers, hamming)
    q, qw = _points(q_xy, "query"), _words(q_words)
    return _verify(q, qw, _query_bits(q_bits, len(q), hamming), c_xy, c_words, c_bits, query_box, cap, model,
                   threshold, seed, max_iters, confidence, min_inliers, hamming)


def _query_bits(q_bits, n: int, hamming: float):
    if hamming >= 1:
        return None
    if q_bits is None:
        raise InstanceSearchError(f"{_KEY}.hamming={hamming} checks descriptors, but the features have no "
                                  "binarised residuals; re-run encode, or set hamming: 1")
    return _bits(q_bits, n, "query")


def _verify(q, qw, qb, c_xy, c_words, c_bits, query_box, cap, model, threshold, seed, max_iters, confidence,
            min_inliers, hamming) -> Verified:
    """``verify`` with settings already checked and the query's points, words and bits already read."""
    c, cw = _points(c_xy, "candidate"), _words(c_words)
    if len(q) != len(qw) or len(c) != len(cw):
        raise InstanceSearchError(f"features and words differ in number (query {len(q)} vs {len(qw)}, "
                                  f"candidate {len(c)} vs {len(cw)})")
    qi, ci = tentative_matches(qw, cw, cap)
    if qb is not None:
        cb = _bits(c_bits, len(c), "candidate")
        if cb.shape[1] != qb.shape[1]:
            raise InstanceSearchError(f"query features have {qb.shape[1]} bytes of bits but the candidate's "
                                      f"{cb.shape[1]}; encode both with the same model")
        qi, ci = agreeing_matches(qi, ci, qb, cb, int(np.floor(hamming * 8 * qb.shape[1])))
    matrix, _ = fit(q[qi], c[ci], model, threshold, seed, max_iters, confidence)
    if matrix is None:
        return Verified(0, None, None, len(qi), 0.0)
    inliers = count_inliers(matrix, q[qi], c[ci], threshold)
    box = map_box(matrix, query_box) if query_box is not None and inliers >= min_inliers else None
    matrix.setflags(write=False)
    return Verified(inliers, matrix, box, len(qi),
                    significance(len(qi), inliers, MODELS[model], chance(c[ci], threshold)))


def verify_many(q_xy, q_words, query_box, candidates, *, workers: int, cap: int, model: str,
                threshold: float, seed: int, max_iters: int, confidence: float,
                min_inliers: int, hamming: float = 1.0, q_bits=None) -> list[Verified]:
    """``verify`` for each (c_xy, c_words) or (c_xy, c_words, c_bits) of ``candidates``, in their order.
    ``workers`` threads (OpenCV releases the GIL while fitting); every candidate gets the same seed, so
    the results do not depend on ``workers``."""
    if not _is_int(workers) or workers < 1:
        raise InstanceSearchError(f"workers={workers!r}: must be an integer >= 1")
    _check_values(_KEY, model, threshold, cap, max_iters, confidence, min_inliers, hamming)
    _check_seed(seed)
    q, qw = _points(q_xy, "query"), _words(q_words)
    qb = _query_bits(q_bits, len(q), hamming)

    def one(candidate) -> Verified:
        c_xy, c_words, *rest = candidate
        return _verify(q, qw, qb, c_xy, c_words, rest[0] if rest else None, query_box, cap, model, threshold,
                       seed, max_iters, confidence, min_inliers, hamming)

    candidates = list(candidates)
    if workers == 1 or len(candidates) < 2:
        return [one(cand) for cand in candidates]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(one, candidates))
