"""Spatial verification: tentative matches on hand-made words, known transforms recovered through
outliers, inlier counts against a plain per-pair loop, mapped boxes, determinism, degenerate input
and the parameter check."""

from __future__ import annotations

import numpy as np
import pytest

from instance_search.errors import InstanceSearchError
from instance_search.retrieval import verification as sv

AFFINE = np.array([[0.8, -0.3, 40.0], [0.25, 0.9, -20.0], [0.0, 0.0, 1.0]])
HOMOGRAPHY = np.array([[0.9, -0.1, 30.0], [0.15, 1.05, -10.0], [2e-4, -1e-4, 1.0]])
BOX = (100.0, 150.0, 400.0, 380.0)
PARAMS = {"cap": 10, "model": "affine", "threshold": 8.0, "seed": 0, "max_iters": 2000, "confidence": 0.999,
          "min_inliers": 4, "hamming": 1.0}


def apply(m, x, y):
    """The transform of one point, written out."""
    w = m[2][0] * x + m[2][1] * y + m[2][2]
    return (m[0][0] * x + m[0][1] * y + m[0][2]) / w, (m[1][0] * x + m[1][1] * y + m[1][2]) / w


def reference_inliers(m, q_xy, c_xy, threshold):
    """The plain definition: loop over pairs, count reprojection error < threshold."""
    count = 0
    for (qx, qy), (cx, cy) in zip(q_xy, c_xy):
        x, y = apply(m, qx, qy)
        if ((x - cx) ** 2 + (y - cy) ** 2) ** 0.5 < threshold:
            count += 1
    return count


def planted(m, n_in=60, n_out=140, noise=0.5, seed=1):
    """Query / candidate features where feature k of each has word k (so the tentative matches are
    the pairs (k, k)); the first n_in candidates are the query's points under m plus noise, the rest
    random. Returns q_xy, q_words, c_xy, c_words."""
    rng = np.random.default_rng(seed)
    n = n_in + n_out
    q = rng.uniform(0, 640, (n, 2))
    c = rng.uniform(0, 640, (n, 2))
    c[:n_in] = [apply(m, x, y) for x, y in q[:n_in]]
    c[:n_in] += rng.normal(0, noise, (n_in, 2))
    words = np.arange(n)
    return q, words, c, words.copy()


# ------------------------------------------------------------------------------------------------
# Tentative matches


def test_tentative_matches_hand_made():
    q = [3, 1, 3, 7, 1]
    c = [1, 3, 3, 5, 1, 3]
    qi, ci = sv.tentative_matches(q, c, cap=10)
    assert qi.tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 4, 4]
    assert ci.tolist() == [1, 2, 5, 0, 4, 1, 2, 5, 0, 4]
    # cap 1: only the first feature of each word on each side (word 3: q0 and c1; word 1: q1 and c0)
    qi, ci = sv.tentative_matches(q, c, cap=1)
    assert list(zip(qi.tolist(), ci.tolist())) == [(0, 1), (1, 0)]
    # cap 2: word 3 keeps q0, q2 and c1, c2 (not c5); word 1 keeps q1, q4 and c0, c4
    qi, ci = sv.tentative_matches(q, c, cap=2)
    assert list(zip(qi.tolist(), ci.tolist())) == [(0, 1), (0, 2), (1, 0), (1, 4), (2, 1), (2, 2), (4, 0), (4, 4)]


def test_tentative_matches_cap_is_per_side():
    # one query feature of word 5 against five candidate features of it: the cap trims only the candidates
    qi, ci = sv.tentative_matches([5], [5, 5, 2, 5, 5, 5], cap=2)
    assert list(zip(qi.tolist(), ci.tolist())) == [(0, 0), (0, 1)]
    qi, ci = sv.tentative_matches([5, 5, 2, 5, 5, 5], [5], cap=3)
    assert list(zip(qi.tolist(), ci.tolist())) == [(0, 0), (1, 0), (3, 0)]


def test_tentative_matches_agree_with_a_loop():
    rng = np.random.default_rng(7)
    q, c = rng.integers(0, 12, 80), rng.integers(0, 12, 70)
    for cap in (1, 2, 3, 100):
        keep_q = [i for i in range(len(q)) if list(q[:i]).count(q[i]) < cap]
        keep_c = [j for j in range(len(c)) if list(c[:j]).count(c[j]) < cap]
        expected = [(i, j) for i in keep_q for j in keep_c if q[i] == c[j]]
        qi, ci = sv.tentative_matches(q, c, cap)
        assert list(zip(qi.tolist(), ci.tolist())) == expected


def test_tentative_matches_empty_and_bad_cap():
    for q, c in (([], [1, 2]), ([1, 2], []), ([], []), ([1, 2], [3, 4])):
        qi, ci = sv.tentative_matches(np.array(q, dtype=np.int64), np.array(c, dtype=np.int64), 3)
        assert qi.shape == ci.shape == (0,) and qi.dtype.kind == ci.dtype.kind == "i"
    with pytest.raises(InstanceSearchError, match="cap"):
        sv.tentative_matches([1], [1], 0)


# ------------------------------------------------------------------------------------------------
# Fit, inliers, boxes


def test_count_inliers_hand_made():
    shift = np.array([[1.0, 0, 10], [0, 1, 0], [0, 0, 1]])
    q = np.zeros((4, 2))
    c = np.array([[10 + 7.9, 0], [10 + 8.0, 0], [10, 8.1], [10, 0]])
    assert sv.count_inliers(shift, q, c, 8.0) == 2  # strictly less than the threshold
    halve = np.array([[1.0, 0, 0], [0, 1, 0], [0, 0, 2]])  # the projective division: (4, 6) -> (2, 3)
    assert sv.count_inliers(halve, [[4, 6]], [[2, 3]], 0.01) == 1
    assert sv.count_inliers(halve, [[4, 6]], [[4, 6]], 0.01) == 0
    at_infinity = np.array([[1.0, 0, 0], [0, 1, 0], [1, 0, 0]])  # w = 0 at x = 0: no inlier, no warning
    assert sv.count_inliers(at_infinity, [[0, 5]], [[0, 5]], 8.0) == 0
    assert sv.count_inliers(None, [[0, 0]], [[0, 0]], 8.0) == 0


@pytest.mark.parametrize("model, truth", [("affine", AFFINE), ("homography", HOMOGRAPHY)])
def test_known_transform_recovered_through_outliers(model, truth):
    q, qw, c, cw = planted(truth)
    params = {**PARAMS, "model": model}
    matrix, mask = sv.fit(q, c, model, 8.0, 0, 2000, 0.999)
    assert matrix.shape == (3, 3) and matrix.dtype == np.float64 and mask.dtype == bool
    if model == "affine":
        assert matrix[2].tolist() == [0.0, 0.0, 1.0]
    # The fitted and the known transform agree to a pixel over the image.
    for x, y in [(0, 0), (640, 0), (0, 640), (640, 640), (320, 320)]:
        assert np.hypot(*np.subtract(apply(matrix, x, y), apply(truth, x, y))) < 1.0

    result = sv.verify(q, qw, c, cw, BOX, **params)
    assert result.inliers == reference_inliers(result.matrix, q, c, 8.0)
    # Every true inlier is counted; only the few outliers that happen to land near the model add to it.
    assert reference_inliers(result.matrix, q[:60], c[:60], 8.0) == 60
    lucky = reference_inliers(truth, q[60:], c[60:], 8.0)
    assert 60 <= result.inliers <= 60 + lucky + 2

    corners = [apply(truth, x, y) for x in (BOX[0], BOX[2]) for y in (BOX[1], BOX[3])]
    xs, ys = zip(*corners)
    assert np.allclose(result.box, (min(xs), min(ys), max(xs), max(ys)), atol=1.0)


def test_verify_with_shared_words_and_a_bursty_word():
    q, qw, c, cw = planted(AFFINE)
    # a burst: 30 more features of word 0 on each side, at random places; the cap keeps 10 of each
    rng = np.random.default_rng(3)
    q = np.vstack([q, rng.uniform(0, 640, (30, 2))])
    c = np.vstack([c, rng.uniform(0, 640, (30, 2))])
    qw, cw = np.r_[qw, np.zeros(30, int)], np.r_[cw, np.zeros(30, int)]
    qi, ci = sv.tentative_matches(qw, cw, 10)
    assert len(qi) == 199 + 10 * 10
    result = sv.verify(q, qw, c, cw, BOX, **PARAMS)
    assert result.inliers == reference_inliers(result.matrix, q[qi], c[ci], 8.0)
    assert result.inliers >= 60


def test_min_inliers_hides_the_box_but_not_the_count():
    q, qw, c, cw = planted(AFFINE)
    shown = sv.verify(q, qw, c, cw, BOX, **PARAMS)
    hidden = sv.verify(q, qw, c, cw, BOX, **{**PARAMS, "min_inliers": shown.inliers + 1})
    assert shown.box is not None and hidden.box is None
    assert sv.verify(q, qw, c, cw, BOX, **{**PARAMS, "min_inliers": shown.inliers}).box == shown.box
    assert hidden.inliers == shown.inliers and np.array_equal(hidden.matrix, shown.matrix)
    assert sv.verify(q, qw, c, cw, None, **PARAMS).box is None


def test_map_box_crossing_the_horizon_is_none():
    # w = 1 - x / 200 is <= 0 for the box's right corners
    m = np.array([[1.0, 0, 0], [0, 1, 0], [-1 / 200, 0, 1]])
    assert sv.map_box(m, (0, 0, 300, 100)) is None
    assert sv.map_box(np.eye(3), (1, 2, 3, 4)) == (1.0, 2.0, 3.0, 4.0)


def test_plain_ransac_fallback_recovers_the_transform(monkeypatch):
    monkeypatch.setattr(sv, "_HAS_USAC", False)
    q, qw, c, cw = planted(AFFINE)
    result = sv.verify(q, qw, c, cw, BOX, **PARAMS)
    assert 60 <= result.inliers == reference_inliers(result.matrix, q, c, 8.0)
    assert np.hypot(*np.subtract(apply(result.matrix, 320, 320), apply(AFFINE, 320, 320))) < 1.0


# ------------------------------------------------------------------------------------------------
# Determinism


@pytest.mark.parametrize("model", ["affine", "homography"])
def test_same_input_same_output(model):
    q, qw, c, cw = planted(HOMOGRAPHY, n_in=30, n_out=270)  # 10% inliers: many samples drawn
    m1, mask1 = sv.fit(q, c, model, 8.0, 5, 2000, 0.999)
    m2, mask2 = sv.fit(q, c, model, 8.0, 5, 2000, 0.999)
    assert np.array_equal(m1, m2) and np.array_equal(mask1, mask2)
    params = {**PARAMS, "model": model, "seed": 5}
    assert sv.verify(q, qw, c, cw, BOX, **params) == sv.verify(q, qw, c, cw, BOX, **params)


def test_verify_many_does_not_depend_on_workers():
    rng = np.random.default_rng(11)
    q, qw, _, _ = planted(AFFINE)
    candidates = []
    for k in range(8):
        _, _, c, cw = planted(AFFINE if k % 2 else HOMOGRAPHY, n_in=20 + 5 * k, seed=20 + k)
        candidates.append((c, cw))
    candidates.append((rng.uniform(0, 640, (200, 2)), rng.integers(0, 200, 200)))  # random
    candidates.append((np.zeros((2, 2)), np.array([0, 1])))  # too few matches
    candidates.append((np.zeros((0, 2)), np.zeros(0, int)))  # no features
    serial = sv.verify_many(q, qw, BOX, candidates, workers=1, **PARAMS)
    threaded = sv.verify_many(q, qw, BOX, candidates, workers=4, **PARAMS)
    assert len(serial) == len(candidates) and serial == threaded
    assert serial == [sv.verify(q, qw, c, cw, BOX, **PARAMS) for c, cw in candidates]
    assert serial[-1] == sv.Verified(0, None, None) and serial[-2] == sv.Verified(0, None, None, tentative=2)
    assert serial != threaded[::-1]  # the comparison can fail
    with pytest.raises(InstanceSearchError, match="workers"):
        sv.verify_many(q, qw, BOX, candidates, workers=0, **PARAMS)


# ------------------------------------------------------------------------------------------------
# Degenerate input


@pytest.mark.parametrize("model, n", [("affine", 2), ("homography", 3)])
def test_fewer_matches_than_the_model_needs(model, n):
    q, qw, c, cw = planted(AFFINE, n_in=n, n_out=0)
    result = sv.verify(q, qw, c, cw, BOX, **{**PARAMS, "model": model})
    assert result == sv.Verified(0, None, None, tentative=n)
    matrix, mask = sv.fit(q, c, model, 8.0, 0, 2000, 0.999)
    assert matrix is None and mask.tolist() == [False] * n


@pytest.mark.parametrize("model", ["affine", "homography"])
def test_collinear_and_coincident_points_do_not_crash(model):
    x = np.linspace(0, 300, 25)
    line_q, line_c = np.c_[x, 2 * x + 1], np.c_[x + 5, 2 * x + 3]
    same = np.full((25, 2), 7.0)
    words = np.arange(25)
    for q, c in ((line_q, line_c), (same, same)):
        result = sv.verify(q, words, c, words, BOX, **{**PARAMS, "model": model})
        assert result.inliers >= 0
        if result.matrix is None:
            assert result.inliers == 0 and result.box is None
        else:
            assert result.inliers == reference_inliers(result.matrix, q, c, 8.0)


def test_bad_inputs_name_the_problem():
    with pytest.raises(InstanceSearchError, match="differ in number"):
        sv.verify(np.zeros((3, 2)), [1, 2], np.zeros((2, 2)), [1, 2], BOX, **PARAMS)
    with pytest.raises(InstanceSearchError, match="NaN"):
        sv.fit([[0, np.nan]] * 4, [[0, 0]] * 4, "affine", 8.0, 0, 100, 0.99)
    with pytest.raises(InstanceSearchError, match="seed"):
        sv.fit(np.zeros((4, 2)), np.zeros((4, 2)), "affine", 8.0, -1, 100, 0.99)
    with pytest.raises(InstanceSearchError, match="integer array"):
        sv.tentative_matches([0.5], [1], 2)


# ------------------------------------------------------------------------------------------------
# Parameters


GOOD = {"model": "affine", "threshold": 8.0, "cap": 10, "max_iters": 2000, "confidence": 0.999, "min_inliers": 4,
        "hamming": 0.25}


def test_check_accepts_a_good_section():
    sv.check(GOOD, "sift.rerank.sv")
    sv.check({**GOOD, "model": "homography", "threshold": 3, "min_inliers": 0, "extra": True}, "sift.rerank.sv")


@pytest.mark.parametrize("name, value", [
    ("model", "similarity"), ("model", None), ("threshold", -1.0), ("threshold", 0), ("threshold", float("nan")),
    ("threshold", "8"), ("cap", 0), ("cap", 2.5), ("cap", True), ("max_iters", 0), ("confidence", 1.0),
    ("confidence", 0), ("min_inliers", -1), ("hamming", -0.1), ("hamming", 1.5),
])
def test_check_names_the_bad_key(name, value):
    with pytest.raises(InstanceSearchError) as err:
        sv.check({**GOOD, name: value}, "sift.rerank.sv")
    message = str(err.value)
    assert message.startswith(f"sift.rerank.sv.{name}=") and "\n" not in message


def test_check_missing_key_and_not_a_mapping():
    section = dict(GOOD)
    del section["cap"]
    with pytest.raises(InstanceSearchError, match=r"^blcf\.rerank\.sv\.cap: missing"):
        sv.check(section, "blcf.rerank.sv")
    with pytest.raises(InstanceSearchError, match=r"^blcf\.rerank\.sv: must be a mapping"):
        sv.check([1, 2], "blcf.rerank.sv")


# ------------------------------------------------------------------ Hamming-checked matches, chance


def test_agreeing_matches_by_hand():
    # one byte of bits a feature; pairs sharing word 1: (0,0) h=1, (0,1) h=7, (1,0) h=7, (1,1) h=1; word 2: h=8
    qb = np.array([[0x00], [0xFF], [0x0F]], np.uint8)
    cb = np.array([[0x01], [0xFE], [0xF0]], np.uint8)
    qi, ci = sv.tentative_matches([1, 1, 2], [1, 1, 2], cap=10)
    got = sv.agreeing_matches(qi, ci, qb, cb, max_distance=2)
    assert [p.tolist() for p in got] == [[0, 1], [0, 1]]
    got = sv.agreeing_matches(qi, ci, qb, cb, max_distance=8)  # word 2 kept; word 1 one to one
    assert [p.tolist() for p in got] == [[0, 1, 2], [0, 1, 2]]


def test_agreeing_matches_are_one_to_one():
    # q0 and q1 both nearest c0 (distances 0 and 1; q1's tie with c1 goes to the lower index): c0 keeps q0
    qb = np.array([[0x00], [0x01]], np.uint8)
    cb = np.array([[0x00], [0x03]], np.uint8)
    qi, ci = sv.tentative_matches([1, 1], [1, 1], cap=10)
    assert [p.tolist() for p in sv.agreeing_matches(qi, ci, qb, cb, 8)] == [[0], [0]]


def test_significance_by_hand_and_by_sum():
    # n = 10 tentative, k = 8 inliers, affine (s = 3), p = 0.1:
    # NFA = C(10, 3) P[Bin(7, 0.1) >= 5] = 120 (21e-5 0.81 + 7e-6 0.9 + 1e-7) = 0.021180
    assert sv.significance(10, 8, 3, 0.1) == pytest.approx(-np.log10(0.021180), abs=1e-4)
    from math import comb

    for n, k, p in [(40, 12, 0.02), (200, 30, 0.01), (15, 6, 0.3)]:
        tail = sum(comb(n - 3, i) * p**i * (1 - p) ** (n - 3 - i) for i in range(k - 3, n - 3 + 1))
        assert sv.significance(n, k, 3, p) == pytest.approx(max(0.0, -np.log10(comb(n, 3) * tail)), abs=1e-9)
    assert sv.significance(10, 5, 3, 0.1) == 0.0  # NFA 18: what chance gives
    assert sv.significance(10, 3, 3, 0.1) == 0.0 and sv.significance(10, 8, 3, 1.0) == 0.0
    assert np.isfinite(sv.significance(2000, 1500, 3, 0.001))  # beyond float range: bounded, not inf


def test_chance_is_the_circle_over_the_matched_points_box():
    xy = np.array([[0.0, 0.0], [100.0, 50.0], [30.0, 20.0]])
    assert sv.chance(xy, 5.0) == pytest.approx(np.pi * 25 / 5000)
    assert sv.chance(xy[:1], 5.0) == pytest.approx(np.pi / 4)  # one point: a 2 tau square
    assert sv.chance(np.zeros((0, 2)), 5.0) == 1.0


def test_hamming_check_drops_wrong_matches_and_needs_bits():
    rng = np.random.default_rng(5)
    q, qw, c, cw = planted(AFFINE, n_in=40, n_out=60)
    # true pairs get equal bits, the outliers random ones
    n = len(q)
    qb = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
    cb = rng.integers(0, 256, size=(len(c), 16), dtype=np.uint8)
    cb[:40] = qb[:40]  # feature k of each side has word k: the planted pairs are (k, k), k < 40
    loose = sv.verify(q, qw, c, cw, BOX, **PARAMS)
    strict = sv.verify(q, qw, c, cw, BOX, **{**PARAMS, "hamming": 0.25}, q_bits=qb, c_bits=cb)
    assert strict.tentative < loose.tentative and strict.inliers >= 35
    assert strict.significance > 0
    with pytest.raises(InstanceSearchError, match="hamming=0.25 checks descriptors"):
        sv.verify(q, qw, c, cw, BOX, **{**PARAMS, "hamming": 0.25})
