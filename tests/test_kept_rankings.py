"""Rankings kept to their top K (rankings.keep) with the labelled images located: every metric equals
the one computed from the whole ranking, a re-ranking inside the top carries the positions on, and the
files refuse what they cannot evaluate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from instance_search import evaluate
from instance_search.errors import InstanceSearchError
from instance_search.groundtruth import GroundTruth, Image, Labels, Query
from instance_search.ranking_files import labelled_images, load_ranking, read_ranking, save_ranking
from instance_search.retrieval.ranking import Ranking, rank, reorder

N, NQ = 300, 6
SETTINGS = {"seed_top": 100, "seed_max_hits": 20}


def ground_truth(rng, protocols: bool = False) -> GroundTruth:
    """Queries with good, ok and junk images spread over the database (some ranked far down)."""
    queries = []
    for j in range(NQ):
        pick = rng.choice(N, size=25, replace=False)
        good, ok, junk = (tuple(sorted(int(i) for i in part)) for part in (pick[:8], pick[8:12], pick[12:18]))
        extra = ()
        if protocols:  # the revisited protocols name images the query's own labels do not
            easy = Labels(good=good[:4], junk=tuple(sorted(good[4:] + ok + junk)))
            hard = Labels(good=tuple(sorted(good[4:] + tuple(int(i) for i in pick[18:21]))), junk=good[:4] + junk)
            extra = (("easy", easy), ("medium", Labels(good=good, ok=ok, junk=junk)), ("hard", hard))
        queries.append(Query(f"q{j}", image=j, box=(0, 0, 10, 10), good=good, ok=ok, junk=junk, protocols=extra))
    images = [Image(f"i{i}", f"i{i}.jpg", 64, 48) for i in range(N)]
    return GroundTruth("t", ".", images, N, queries)


def whole(rng) -> Ranking:
    return Ranking(*rank(rng.random((NQ, N))))


def tables(gnd, ranking) -> list[pd.DataFrame]:
    out = [evaluate.evaluate_rankings(gnd, ranking, **SETTINGS)]
    out += [evaluate.evaluate_rankings(gnd, ranking, **SETTINGS, protocol=p) for p in gnd.protocols]
    return out


@pytest.mark.parametrize("protocols", [False, True])
@pytest.mark.parametrize("keep", [1, 20, 299])
def test_a_kept_ranking_gives_the_metrics_of_the_whole_one(protocols, keep):
    rng = np.random.default_rng(keep)
    gnd = ground_truth(rng, protocols)
    full = whole(rng)
    kept = full.kept(keep, labelled_images(gnd), N)
    assert kept.ranks.shape == (NQ, keep) and kept.located is not None
    for a, b in zip(tables(gnd, full.ranks), tables(gnd, kept)):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    np.testing.assert_array_equal(evaluate.interpolated_pr(gnd, full.ranks), evaluate.interpolated_pr(gnd, kept))
    assert evaluate.summary(gnd, kept, SETTINGS) == evaluate.summary(gnd, full.ranks, SETTINGS)


def test_the_whole_database_is_kept_as_it_is():
    rng = np.random.default_rng(0)
    full = whole(rng)
    assert full.kept(N, labelled_images(ground_truth(rng)), N) is full
    assert full.kept(5000, labelled_images(ground_truth(rng)), N) is full


def test_a_reranking_inside_the_top_carries_the_positions_on():
    """The same re-ordering of the top 10, on the whole ranking and on one kept to 30: the kept result,
    carried on, locates every labelled image where the whole one has it, and evaluates the same."""
    rng = np.random.default_rng(1)
    gnd = ground_truth(rng, protocols=True)
    full = whole(rng)
    labelled = labelled_images(gnd)
    local = rng.random((NQ, 10))
    boxes = np.zeros((NQ, 10, 4), np.float32)
    kept = full.kept(30, labelled, N)
    def reordered(r: Ranking) -> Ranking:
        return Ranking(*reorder(r.ranks.astype(np.int64), r.scores.astype(np.float64), local, boxes))

    after_full, after_kept = reordered(full), reordered(kept).after(kept, N)
    np.testing.assert_array_equal(after_kept.ranks, after_full.ranks[:, :30])
    np.testing.assert_array_equal(after_kept.scores, after_full.scores[:, :30])  # the tail's shift: same maximum
    for j, images in enumerate(labelled):
        np.testing.assert_array_equal(after_kept.position(j, images), after_full.position(j, images))
    for a, b in zip(tables(gnd, after_full.ranks), tables(gnd, after_kept)):
        pd.testing.assert_frame_equal(a, b, check_exact=True)
    with pytest.raises(InstanceSearchError, match="may only re-order inside the top"):
        Ranking(kept.ranks[:, :20], kept.scores[:, :20]).after(kept, N)


def test_kept_files_round_trip_and_bad_ones_are_refused(tmp_path):
    rng = np.random.default_rng(2)
    gnd = ground_truth(rng)
    kept = whole(rng).kept(15, labelled_images(gnd), N)
    path = tmp_path / "rank.npz"
    save_ranking(path, kept)
    back = read_ranking(path, gnd)
    for name in ("ranks", "scores", "located", "positions"):
        np.testing.assert_array_equal(getattr(back, name), getattr(kept, name))
    assert back.ranks.nbytes + back.scores.nbytes == NQ * 15 * 8  # queries x K, not queries x database
    save_ranking(tmp_path / "bare.npz", Ranking(kept.ranks, kept.scores))
    with pytest.raises(InstanceSearchError, match="do not locate the labelled ones"):
        load_ranking(tmp_path / "bare.npz", gnd)
    bad = kept.positions.copy()
    bad[0, 0] = N
    save_ranking(tmp_path / "bad.npz", Ranking(kept.ranks, kept.scores, None, kept.located, bad))
    with pytest.raises(InstanceSearchError, match="positions do not match"):
        load_ranking(tmp_path / "bad.npz", gnd)
    lost = Ranking(kept.ranks, kept.scores, None, kept.located[:, :1], kept.positions[:, :1])
    with pytest.raises(InstanceSearchError, match="neither in the stored top"):
        lost.position(0, labelled_images(gnd)[0])
