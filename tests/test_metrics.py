"""Metrics against values computed by hand (arithmetic in the comments) and an independent AP loop."""

import math

import numpy as np
import pytest

from instance_search import metrics


def loop_ap(ranks, positives, junk):
    """The official compute_ap written as a plain loop: trapezoid rule over the junk-free ranking."""
    positives, junk = set(positives), set(junk)
    recall_before, precision_before, ap, found, position = 0.0, 1.0, 0.0, 0, 0
    for index in ranks:
        if index in junk:
            continue
        found += index in positives
        recall, precision = found / len(positives), found / (position + 1)
        ap += (recall - recall_before) * (precision_before + precision) / 2
        recall_before, precision_before, position = recall, precision, position + 1
    return ap


# ------------------------------------------------------------------------------------ average precision

def test_ap_junk_is_removed_from_the_ranking():
    # ranks 5 9 2 7 3 1, positives {5,2,3}, junk {9} -> junk-free 5 2 7 3 1; positives at r = 0, 1, 3
    # k=1 r=0: (1 + 1/1)/2 = 1;  k=2 r=1: (1/1 + 2/2)/2 = 1;  k=3 r=3: (2/3 + 3/4)/2 = 17/24
    # AP = (1 + 1 + 17/24) / 3 = 65/72
    assert metrics.average_precision([5, 9, 2, 7, 3, 1], [5, 2, 3], [9]) == pytest.approx(65 / 72)
    # were junk a negative, positives would sit at r = 0, 2, 4 and AP would be lower
    assert metrics.average_precision([5, 9, 2, 7, 3, 1], [5, 2, 3], []) < 65 / 72


def test_ap_first_positive_at_rank_zero():
    # ranks 4 0 1 2 3, positives {4, 2}: k=1 r=0: (1 + 1)/2 = 1; k=2 r=3: (1/3 + 2/4)/2 = 5/12
    # AP = (1 + 5/12) / 2 = 17/24
    assert metrics.average_precision([4, 0, 1, 2, 3], [4, 2]) == pytest.approx(17 / 24)


def test_ap_single_positive_at_rank_one():
    # ranks 0 1 2, positives {1}: k=1 r=1: (0/1 + 1/2)/2 = 1/4 (precision before it is 0, not 1)
    assert metrics.average_precision([0, 1, 2], [1]) == pytest.approx(0.25)


def test_ap_no_positive_retrieved_is_zero():
    assert metrics.average_precision([0, 1, 2], [7]) == 0.0


def test_ap_positives_absent_from_the_ranking_still_count():
    # ranks 3 0 1 (a prefix), positives {3, 8}: k=1 r=0 adds 1; npos = 2 -> AP = 1/2
    assert metrics.average_precision([3, 0, 1], [3, 8]) == pytest.approx(0.5)


def test_ap_ties_follow_the_given_order():
    # scores 0.9 0.5 0.5 0.1 for images 0..3: the ranking given (stable sort on index) puts 1 before 2.
    # The metrics never reorder: positive {2} at r=2 -> (0/2 + 1/3)/2 = 1/6; at r=1 it would be 1/4.
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    ranks = np.argsort(-scores, kind="stable")
    assert list(ranks) == [0, 1, 2, 3]
    assert metrics.average_precision(ranks, [2]) == pytest.approx(1 / 6)
    assert metrics.average_precision([0, 2, 1, 3], [2]) == pytest.approx(1 / 4)


def test_perfect_ranking():
    assert metrics.average_precision([2, 0, 1, 3], [0, 2]) == pytest.approx(1.0)
    # higher grade first; a NaN or any value but 1 fails (the comparison is in the assert, not a comment)
    assert metrics.ndcg([2, 0, 1, 3], {2: 3, 0: 2}) == pytest.approx(1.0)
    # the two graded images swapped: gains 2^2 - 1 = 3 then 2^3 - 1 = 7, over the ideal 7 then 3
    assert metrics.ndcg([0, 2, 1, 3], {2: 3, 0: 2}) == pytest.approx((3 + 7 / math.log2(3)) / (7 + 3 / math.log2(3)))


def test_ap_without_positives_is_nan():
    assert math.isnan(metrics.average_precision([0, 1], []))


def test_ap_matches_a_plain_loop_on_random_rankings():
    rng = np.random.default_rng(0)
    for _ in range(100):
        n = int(rng.integers(1, 60))
        labels = rng.choice(3, size=n, p=[0.6, 0.25, 0.15])  # 0 negative, 1 positive, 2 junk
        labels[rng.integers(n)] = 1  # at least one positive
        positives, junk = np.flatnonzero(labels == 1), np.flatnonzero(labels == 2)
        ranks = rng.permutation(n)[: int(rng.integers(1, n + 1))]  # a prefix: some positives missing
        expected = loop_ap(ranks, positives, junk)
        assert metrics.average_precision(ranks, positives, junk) == pytest.approx(expected, abs=1e-12)


def revisitop_precision(ranks, positives, junk, kappas):
    """revisitop's compute_map, precision part, as that code does it: positives' positions in the whole
    ranking, each shifted down by the junk ranked before it, then P@k with k cut to the last positive."""
    ranks = list(ranks)
    pos = [i for i, x in enumerate(ranks) if x in set(positives)]
    jpos = [i for i, x in enumerate(ranks) if x in set(junk)]
    shifted, passed, j = [], 0, 0
    for p in pos:
        while j < len(jpos) and p > jpos[j]:
            passed, j = passed + 1, j + 1
        shifted.append(p - passed + 1)
    return [sum(p <= min(max(shifted), k) for p in shifted) / min(max(shifted), k) for k in kappas]


def test_precision_at_k_by_hand():
    # ranks 5 9 2 7 3 1, positives {5,2,3}, junk {9} -> junk-free 5 2 7 3 1; positives at 1, 2, 4 (1-based)
    ranks, positives, junk = [5, 9, 2, 7, 3, 1], [5, 2, 3], [9]
    assert metrics.precision_at(ranks, positives, 1, junk) == 1.0          # 1 of the top 1
    assert metrics.precision_at(ranks, positives, 2, junk) == 1.0          # 5 2
    assert metrics.precision_at(ranks, positives, 3, junk) == pytest.approx(2 / 3)  # 5 2 7
    # k = 5 is cut to the last positive's position 4: 3 of 4, not 3 of 5 (revisitop's rule)
    assert metrics.precision_at(ranks, positives, 5, junk) == 0.75
    assert metrics.precision_at(ranks, positives, 10, junk) == 0.75
    # with the junk counted as a negative: positives at 1, 3, 5 -> P@5 = 3/5
    assert metrics.precision_at(ranks, positives, 5) == 0.6


def test_precision_at_k_one_positive_at_rank_one_is_one_at_every_k():
    assert [metrics.precision_at([7, 1, 2, 3], [7], k) for k in (1, 5, 10)] == [1.0, 1.0, 1.0]
    # ... and one at rank 3 gives 0 at k = 1, 1/3 at k >= 3
    assert [metrics.precision_at([1, 2, 7, 3], [7], k) for k in (1, 5, 10)] == [0.0, pytest.approx(1 / 3),
                                                                                  pytest.approx(1 / 3)]


def test_precision_at_k_undefined_without_positives_and_needs_k():
    assert math.isnan(metrics.precision_at([0, 1, 2], [], 5))
    with pytest.raises(ValueError):
        metrics.precision_at([0, 1, 2], [1], 0)


def test_precision_at_k_matches_revisitops_loop_on_random_rankings():
    rng = np.random.default_rng(3)
    for _ in range(300):
        n = int(rng.integers(3, 40))
        ranks = rng.permutation(n)
        labels = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])        # 0 negative, 1 positive, 2 junk
        positives, junk = np.flatnonzero(labels == 1), np.flatnonzero(labels == 2)
        if positives.size == 0:
            continue
        got = [metrics.precision_at(ranks, positives, k, junk) for k in (1, 5, 10)]
        assert got == pytest.approx(revisitop_precision(ranks, positives, junk, (1, 5, 10)), abs=1e-12)


def test_precision_recall_along_junk_free_ranking():
    # ranks 5 9 2 7, positives {5,2,3}, junk {9} -> 5 2 7: hits 1 2 2
    precision, recall = metrics.precision_recall([5, 9, 2, 7], [5, 2, 3], [9])
    np.testing.assert_allclose(precision, [1, 1, 2 / 3])
    np.testing.assert_allclose(recall, [1 / 3, 2 / 3, 2 / 3])


# ----------------------------------------------------------------------------------------------- NDCG

def test_ndcg_good_ok_and_a_relevant_image_never_retrieved():
    # ranks 4 1 0 2, junk {1}, grades: 4 good (3), 2 ok (2), 7 good (3) but never retrieved
    # junk-free 4 0 2 -> rel 3 0 2: DCG = 7/log2(2) + 0 + 3/log2(4) = 7 + 1.5 = 8.5
    # ideal from all relevant, 3 3 2: IDCG = 7/1 + 7/log2(3) + 3/log2(4) = 8.5 + 7/log2(3)
    expected = 8.5 / (8.5 + 7 / math.log2(3))  # = 0.65807...
    assert metrics.ndcg([4, 1, 0, 2], {4: 3, 2: 2, 7: 3}, junk=[1]) == pytest.approx(expected)
    # the (indices, grades) form gives the same
    assert metrics.ndcg([4, 1, 0, 2], ([7, 4, 2], [3, 3, 2]), junk=[1]) == pytest.approx(expected)


# ------------------------------------------------------------------------------------ seed definitions

def test_seed_map_divides_by_hits_found_not_by_positives():
    # ranks 0..5, positives {1, 3, 10, 11}: hits at r=1 (1/2) and r=3 (2/4) -> (1/2 + 1/2) / 2 = 1/2
    # the standard AP divides by npos = 4: ((0 + 1/2)/2 + (1/3 + 2/4)/2) / 4 = (1/4 + 5/12) / 4 = 1/6
    ranks, positives = list(range(6)), [1, 3, 10, 11]
    assert metrics.seed_map(ranks, positives) == pytest.approx(0.5)
    assert metrics.average_precision(ranks, positives) == pytest.approx(1 / 6)


def test_seed_map_counts_junk_as_negative():
    # ranks 0 1 2, positives {0, 2}, junk {1}: hits at r=0 (1/1), r=2 (2/3) -> (1 + 2/3)/2 = 5/6
    assert metrics.seed_map([0, 1, 2], [0, 2]) == pytest.approx(5 / 6)
    assert metrics.average_precision([0, 1, 2], [0, 2], [1]) == pytest.approx(1.0)


def test_seed_map_max_hits_cap_and_top_cut():
    # ranks 0..9, positives {0,2,4,6}: precisions at hits 1/1, 2/3, 3/5, 4/7
    ranks, positives = list(range(10)), [0, 2, 4, 6]
    assert metrics.seed_map(ranks, positives, max_hits=2) == pytest.approx((1 + 2 / 3) / 2)  # 5/6
    assert metrics.seed_map(ranks, positives, max_hits=20) == pytest.approx((1 + 2 / 3 + 3 / 5 + 4 / 7) / 4)  # 149/210
    assert metrics.seed_map([0, 1, 2, 3], [3], top=3) == 0.0  # no hit in the top 3 -> 0


def test_seed_ndcg_normalised_within_the_top_list():
    # top 4 of ranks 5 1 2 0 9; good {2, 7}, ok {0}, junk {5} -> rel 1 0 3 2 (7 never retrieved: ignored)
    # DCG  = 1/log2(2) + 0 + 7/log2(4) + 3/log2(5) = 1 + 3.5 + 3/log2(5) = 5.79203...
    # IDCG of the same list sorted 3 2 1 0 = 7/1 + 3/log2(3) + 1/log2(4) = 7.5 + 3/log2(3) = 9.39279...
    expected = (4.5 + 3 / math.log2(5)) / (7.5 + 3 / math.log2(3))  # = 0.61665...
    assert metrics.seed_ndcg([5, 1, 2, 0, 9], good=[2, 7], ok=[0], junk=[5], top=4) == pytest.approx(expected)


def test_seed_ndcg_without_graded_image_is_zero():
    assert metrics.seed_ndcg([0, 1, 2], good=[5], ok=[], junk=[], top=3) == 0.0


def test_ns_score():
    # top 4 of 3 0 7 1 2 hold positives 3, 0, 1 -> 3
    assert metrics.ns_score([3, 0, 7, 1, 2], [0, 1, 2, 3]) == 3
    assert metrics.ns_score([0, 1, 2, 3], [0, 1, 2, 3]) == 4


def test_interpolated_precision_recall_by_hand():
    from instance_search.evaluate import interpolated_pr
    from instance_search.groundtruth import GroundTruth, Image, Query

    images = [Image(f"i{k}", f"i{k}.jpg", 10, 10) for k in range(5)]
    gnd = GroundTruth("t", ".", images, 5, [Query("q", 0, (0, 0, 5, 5), good=(1, 3))])
    # ranking 0 1 2 3 4: hits at positions 2 and 4 -> (recall, precision) (0.5, 1/2), (1, 1/2)
    # junk-free (0 is not junk here): precision 0, 1/2, 1/3, 1/2, 2/5; recall 0, .5, .5, 1, 1
    curve = interpolated_pr(gnd, np.array([[0, 1, 2, 3, 4]]))
    np.testing.assert_allclose(curve, [0.5] * 11)
    curve = interpolated_pr(gnd, np.array([[1, 3, 0, 2, 4]]))  # both first: precision 1 everywhere
    np.testing.assert_allclose(curve, [1.0] * 11)
    curve = interpolated_pr(gnd, np.array([[1, 0, 2, 4, 3]]))  # 1 at top (P 1, R .5), 3 last (P 2/5, R 1)
    np.testing.assert_allclose(curve, [1.0] * 6 + [0.4] * 5)
