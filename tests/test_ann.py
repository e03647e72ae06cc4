"""gem's approximate-nearest-neighbour index (retrieval/ann.py): against exact search on a small random
database with the size threshold lowered, its file's bytes, its settings' errors, and the index below
the threshold unchanged."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import faiss
import numpy as np
import pytest

from instance_search import methods
from instance_search.errors import InstanceSearchError
from instance_search.index import read_files, write
from instance_search.io import save_npz, write_json
from instance_search.methods.base import Queries
from instance_search.retrieval import ann
from instance_search.retrieval import similarity as sim
from instance_search.retrieval.linalg import l2
from instance_search.retrieval.ranking import rank

N, D = 2000, 32
BUILD = {"kind": "ivf", "min_images": 1000, "nlist": 16, "pq": 0, "train": 1000}


def _data(n: int = N, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered non-negative vectors with exact zeros (as pooled post-ReLU ones), and 5 queries."""
    rng = np.random.default_rng(seed)
    centres = rng.random((20, D))
    x = centres[rng.integers(0, 20, n)] + 0.3 * rng.random((n, D))
    x[rng.random((n, D)) < 0.2] = 0
    q = centres[:5] + 0.3 * rng.random((5, D))
    q[:, :4] = 0  # the weighted cosine differs from the cosine only where the query has zeros
    return l2(x, np.float32), l2(q, np.float32)


def _exact(q, x, similarity):
    return rank(sim.scores(q, x, similarity, 0.5))


@pytest.mark.parametrize("similarity", ["cosine", "weighted_cosine"])
@pytest.mark.parametrize("pq", [0, 8])
def test_exhaustive_settings_give_the_exact_top_with_exact_scores(similarity, pq):
    x, q = _data()
    index = ann.load(ann.build(x, {**BUILD, "pq": pq}))
    ranks, scores = ann.search(index, q, x, {"nprobe": 16, "candidates": 200}, similarity, 0.5)
    want_ranks, want_scores = _exact(q, x, similarity)
    for j in range(len(q)):
        assert sorted(ranks[j].tolist()) == list(range(N))  # a whole ranking
        assert np.all(np.diff(scores[j]) <= 0)
        # every candidate's score is its exact score, whatever proposed it
        np.testing.assert_allclose(scores[j, :200], sim.scores(q[j:j + 1], x[ranks[j, :200]], similarity, 0.5)[0],
                                   rtol=1e-6)
        assert scores[j, 200:].max() < scores[j, :200].min()
    if pq == 0 and similarity == "cosine":  # all cells scanned exactly: the exact top 200, in order
        np.testing.assert_array_equal(ranks[:, :200], want_ranks[:, :200])
        np.testing.assert_allclose(scores[:, :200], want_scores[:, :200], rtol=1e-6)
    else:  # PQ proposes by approximate scores, the weighted cosine re-orders: the top 20 are still found
        hits = [len(np.intersect1d(ranks[j, :20], want_ranks[j, :20])) for j in range(len(q))]
        assert np.mean(hits) / 20 >= 0.95, hits


def test_fewer_cells_scanned_still_find_most_neighbours():
    x, q = _data()
    index = ann.load(ann.build(x, BUILD))
    ranks, _ = ann.search(index, q, x, {"nprobe": 4, "candidates": 100}, "cosine", 0.5)
    want, _ = _exact(q, x, "cosine")
    assert np.mean([len(np.intersect1d(ranks[j, :10], want[j, :10])) for j in range(len(q))]) >= 9


def test_index_bytes_are_repeatable_across_builds_and_thread_counts():
    x, _ = _data()
    before = faiss.omp_get_max_threads()
    try:
        faiss.omp_set_num_threads(1)
        one = ann.build(x, {**BUILD, "pq": 8})
        faiss.omp_set_num_threads(2)
        two = ann.build(x, {**BUILD, "pq": 8})
    finally:
        faiss.omp_set_num_threads(before)
    assert one.dtype == np.uint8 and one.tobytes() == two.tobytes()
    assert faiss.serialize_index(ann.load(one)).tobytes() == one.tobytes()  # round trip


@pytest.mark.parametrize("setting, message", [
    ({"kind": "hnsw"}, "gem.encode.ann.kind='hnsw'"),
    ({"nlist": -1}, "gem.encode.ann.nlist=-1"),
    ({"pq": "8"}, "gem.encode.ann.pq='8'"),
    ({"pq": 5}, "gem.encode.ann.pq=5: must divide"),
    ({"nlist": 5000}, "gem.encode.ann.nlist=5000"),
    ({"train": 10}, "gem.encode.ann.train=10"),
    ({"min_images": 0}, "gem.encode.ann.min_images=0"),
    ({"seed": 1}, "gem.encode.ann.seed: unknown"),
])
def test_bad_build_settings_name_the_key(setting, message):
    x, _ = _data()
    with pytest.raises(InstanceSearchError, match=message.replace("(", r"\(")) as e:
        ann.build(x, {**BUILD, **setting})
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("setting, message", [
    ({"nprobe": 0, "candidates": 10}, "gem.search.ann.nprobe=0"),
    ({"nprobe": 1, "candidates": None}, "gem.search.ann.candidates=None"),
    ({"nprobe": 1, "candidates": 10, "k": 1}, "gem.search.ann.k: unknown"),
])
def test_bad_search_settings_name_the_key(setting, message):
    x, q = _data()
    index = ann.load(ann.build(x, BUILD))
    with pytest.raises(InstanceSearchError, match=message):
        ann.search(index, q, x, setting, "cosine", 0.5)


def _encode(tmp: Path, name: str, encode: dict) -> Path:
    """An index folder written as the encode step writes it, from a fake gem feature folder."""
    x, q = _data()
    features = tmp / "features"
    if not features.is_dir():
        features.mkdir()
        save_npz(features / "vectors.npz", vectors=np.concatenate([x, q]), ls=q, gs=q)
        write_json(features / "manifest.json", {"n_images": N + len(q)})
        save_npz(tmp / "model.npz", none=np.zeros(0, np.float32))
    gnd = SimpleNamespace(n_database=N, images=[None] * (N + len(q)))
    m = methods.indexing("gem")
    files = m.encode(encode, gnd, features, {"none": np.zeros(0, np.float32)})
    write(tmp / name, "gem", files, n_images=N + len(q), n_database=N, model=tmp / "model.npz",
          extraction={}, encoding=encode)
    return tmp / name


def test_below_the_threshold_the_index_files_are_todays(tmp_path):
    today = _encode(tmp_path, "today", {})
    below = _encode(tmp_path, "below", {"ann": {**BUILD, "min_images": N + 1}})
    none = _encode(tmp_path, "none", {"ann": {**BUILD, "kind": "none", "min_images": 1}})
    for other in (below, none):
        assert sorted(p.name for p in other.glob("*.npz")) == ["queries.npz", "vectors.npz"]
        for name in ("queries.npz", "vectors.npz"):
            assert (other / name).read_bytes() == (today / name).read_bytes()


def test_the_encode_step_saves_the_index_and_search_uses_it(tmp_path):
    a = _encode(tmp_path, "a", {"ann": BUILD})
    b = _encode(tmp_path, "b", {"ann": BUILD})
    assert (a / "ann.npz").read_bytes() == (b / "ann.npz").read_bytes()
    manifest, files = read_files(a, check=True)
    assert "ann.npz" in manifest["files"]  # fingerprinted like every other file
    g = methods.get("gem")
    db = g.load(files, N)
    assert db.ann is not None and db.ann.ntotal == N
    q = files["queries"]["ls"]
    queries = Queries(["q"] * len(q), box=q, image=q)
    p = {"search": {"query": "ls", "ann": {"nprobe": 16, "candidates": 300}},
         "expand": {"mode": "aqe", "alpha": 3, "neighbours": 2}}
    got = g.search(db, queries, p, "cosine", 0.5)
    want = g.search(g.load({k: v for k, v in files.items() if k != "ann"}, N), queries, p, "cosine", 0.5)
    np.testing.assert_array_equal(got.ranks[:, :300], want.ranks[:, :300])
    assert got.ranks.shape == want.ranks.shape == (len(q), N)
    labelled = [np.array([want.ranks[j, 5], want.ranks[j, -1]]) for j in range(len(q))]
    kept = got.kept(100, labelled, N)  # a stored ranking locates its labelled images in the whole ranking
    assert [kept.position(j, labelled[j])[0] for j in range(len(q))] == [5] * len(q)
    assert all(kept.position(j, labelled[j])[1] >= 300 for j in range(len(q)))
    expanded = g.expand(db, queries, got, p, "cosine", 0.5)  # the expanded query goes through the index too
    assert expanded.ranks.shape == (len(q), N)
    with pytest.raises(InstanceSearchError, match="gem.search.ann: missing"):
        g.search(db, queries, {"search": {"query": "ls"}}, "cosine", 0.5)


def test_an_augmented_database_is_searched_exactly_beside_an_ann_index(tmp_path):
    """search.augment: dba replaces the database vectors, which the ANN index does not hold: the search and
    the expansion then rank the augmented vectors exactly, as without an index."""
    a = _encode(tmp_path, "a", {"ann": BUILD})
    _, files = read_files(a)
    g = methods.get("gem")
    with_index, without = g.load(files, N), g.load({k: v for k, v in files.items() if k != "ann"}, N)
    q = files["queries"]["ls"]
    queries = Queries(["q"] * len(q), box=q, image=q)
    p = {"search": {"query": "ls", "augment": "dba", "dba": {"k": 2, "alpha": 3},
                    "ann": {"nprobe": 1, "candidates": 10}},
         "expand": {"mode": "aqe", "alpha": 3, "neighbours": 2}}
    got, want = g.search(with_index, queries, p, "cosine", 0.5), g.search(without, queries, p, "cosine", 0.5)
    np.testing.assert_array_equal(got.ranks, want.ranks)
    np.testing.assert_array_equal(g.expand(with_index, queries, got, p, "cosine", 0.5).ranks,
                                  g.expand(without, queries, want, p, "cosine", 0.5).ranks)
