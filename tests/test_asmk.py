"""ASMK* (retrieval.asmk): binarisation, aggregation, multiple assignment and the kernel, against
hand-computed cases and the brute-force per-pair score."""

import numpy as np
import pytest

from instance_search.errors import InstanceSearchError
from instance_search.retrieval import asmk


def pair_score(q_words, q_bits, x_words, x_bits, idf, dims: int, alpha: float, threshold: float,
               weight_absent: float = 1.0) -> float:
    """S(Q, X) of one pair, word by word (retrieval.asmk's formula): the brute-force reference of the
    inverted file."""
    w = np.asarray(idf, np.float64) ** 2
    x = {int(c): b for c, b in zip(x_words, x_bits)}
    q = set(int(c) for c in q_words)
    dot = 0.0
    for c, b in zip(q_words, q_bits):
        if int(c) in x:
            h = int(np.unpackbits(np.bitwise_xor(b, x[int(c)]))[:dims].sum())
            dot += w[int(c)] * float(asmk.selective(1 - 2 * h / dims, alpha, threshold))
    nq = sum(w[c] for c in q)
    nx = sum(w[int(c)] * (1.0 if int(c) in q else weight_absent) for c in x_words)
    return dot / np.sqrt(nq * nx) if nq * nx > 0 else 0.0


def test_residual_bits_by_hand():
    centroids = np.array([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]], np.float32)
    x = np.array([[1.0, 0.0, 0.6], [0.0, 1.0, 0.5], [-1.0, 2.0, 0.0]], np.float32)
    bits = asmk.residual_bits(x, np.array([0, 0, 1]), centroids)
    # residuals (.5, -.5, .1) -> 101; (-.5, .5, 0) -> 010 (0 is not > 0); (-1, 2, 0) -> 010
    assert bits.tolist() == [[0b10100000], [0b01000000], [0b01000000]]


def test_aggregation_by_hand():
    centroids = np.array([[0.0, 0.0], [1.0, 1.0]], np.float32)
    # image 0: word 0 gets (0.5, -0.5) + (-0.2, 0.1) = (0.3, -0.4) -> 10; word 1 gets (2, 0) - (1, 1) -> 10
    # image 1: one feature of word 1: (0.5, 1.5) - (1, 1) = (-0.5, 0.5) -> 01
    x = np.array([[0.5, -0.5], [2.0, 0.0], [-0.2, 0.1], [0.5, 1.5]], np.float32)
    agg = asmk.aggregate(x, np.array([0, 1, 0, 1]), np.array([0, 3, 4]), centroids)
    assert agg.offsets.tolist() == [0, 2, 3]
    assert agg.words.tolist() == [0, 1, 1]
    assert agg.bits[:, 0].tolist() == [0b10000000, 0b10000000, 0b01000000]


def test_multiple_assignment_by_hand():
    centroids = np.array([[0.0, 0.0], [1.0, 1.0], [-1.0, 3.0]], np.float32)
    x = np.array([[0.4, 0.6], [0.9, 0.2]], np.float32)
    # feature 0 in words 1 and 0: residuals (-.6, -.4) and (.4, .6); feature 1 in words 1 and 0: (-.1, -.8), (.9, .2)
    agg = asmk.aggregate(x, np.array([[1, 0], [1, 0]]), np.array([0, 2]), centroids)
    assert agg.words.tolist() == [0, 1]
    # word 0: (1.3, .8) -> 11; word 1: (-.7, -1.2) -> 00
    assert agg.bits[:, 0].tolist() == [0b11000000, 0]


def test_selective_function():
    u = np.array([-0.5, 0.0, 0.2, 1.0])
    assert np.allclose(asmk.selective(u, 3, 0.0), [0, 0, 0.008, 1.0])
    assert np.allclose(asmk.selective(u, 3, -1.0), [-0.125, 0, 0.008, 1.0])


def test_kernel_by_hand():
    # 4 dimensions; idf (1, 2, 3): weights 1, 4, 9. Q holds words 0 and 1, X words 1 and 2.
    dims, idf = 4, np.array([1.0, 2.0, 3.0])
    q_words, q_bits = np.array([0, 1]), asmk.pack(np.array([[1, 1, 0, 0], [1, 1, 1, 0]], bool))
    x_words, x_bits = np.array([1, 2]), asmk.pack(np.array([[1, 1, 0, 0], [0, 0, 0, 0]], bool))
    # shared word 1: h = 1, u = 1 - 2/4 = 0.5, sigma = 0.125, weighted 4 * 0.125 = 0.5
    # N(Q) = 1 + 4 = 5, N(X) = 4 + 9 = 13: S = 0.5 / sqrt(65)
    expected = 0.5 / np.sqrt(65)
    assert pair_score(q_words, q_bits, x_words, x_bits, idf, dims, 3, 0) == pytest.approx(expected)
    db = asmk.Aggregated(x_words.astype(np.int32), x_bits, np.array([0, 2]), dims)
    got = asmk.InvertedFile(db, idf, 1).scores(q_words, q_bits, 3, 0)
    assert got == pytest.approx([expected])
    # weighted cosine, a = 0.5: word 2 (absent from Q) counts 0.5 * 9 in N(X): 4 + 4.5
    got = asmk.InvertedFile(db, idf, 1).scores(q_words, q_bits, 3, 0, weight_absent=0.5)
    assert got == pytest.approx([0.5 / np.sqrt(5 * 8.5)])
    # an image matches itself with 1
    assert asmk.InvertedFile(db, idf, 1).scores(x_words, x_bits, 3, 0) == pytest.approx([1.0])


@pytest.mark.parametrize("weight_absent", [1.0, 0.8])
def test_inverted_file_equals_brute_force(weight_absent):
    rng = np.random.default_rng(0)
    k, dims, n = 30, 24, 40
    centroids = rng.normal(size=(k, dims)).astype(np.float32)
    counts = rng.integers(0, 25, size=n + 3)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    x = rng.normal(size=(offsets[-1], dims)).astype(np.float32)
    words = rng.integers(0, k, size=offsets[-1])
    agg = asmk.aggregate(x, words, offsets, centroids)
    idf = rng.uniform(0.1, 3, size=k)
    ivf = asmk.InvertedFile(agg, idf, n)  # the last 3 images are query-only: never in the file
    for q in range(n, n + 3):
        qw, qb = agg.image(q)
        got = ivf.scores(qw, qb, 3, 0, weight_absent)
        want = [pair_score(qw, qb, *agg.image(i), idf, dims, 3, 0, weight_absent) for i in range(n)]
        assert np.allclose(got, want)
        assert np.count_nonzero(got) > 0


def test_aggregation_ignores_feature_order_within_an_image():
    rng = np.random.default_rng(1)
    centroids = rng.normal(size=(5, 8)).astype(np.float32)
    x = rng.normal(size=(20, 8)).astype(np.float32)
    words = rng.integers(0, 5, size=20)
    a = asmk.aggregate(x, words, np.array([0, 20]), centroids)
    p = rng.permutation(20)
    b = asmk.aggregate(x[p], words[p], np.array([0, 20]), centroids)
    assert np.array_equal(a.words, b.words) and np.array_equal(a.bits, b.bits)


def test_kernel_settings_are_checked():
    with pytest.raises(InstanceSearchError, match=r"sift.search.asmk.alpha=0"):
        asmk.check_kernel({"alpha": 0, "threshold": 0}, "sift.search.asmk")
    with pytest.raises(InstanceSearchError, match=r"threshold=1"):
        asmk.check_kernel({"alpha": 3, "threshold": 1}, "sift.search.asmk")


# ------------------------------------------------------------------ through the sift method, on a tiny index


@pytest.fixture(scope="module")
def tiny_sift(tmp_path_factory):
    """A sift index of 12 synthetic images (3 objects x 3 views + 3 distractors), 32 words."""
    from pathlib import Path

    import yaml

    from instance_search.pipeline import steps
    from instance_search.datasets import synthetic
    from instance_search.datasets.prepare import prepare
    from instance_search.index import open_index

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path_factory.mktemp("asmk")
    synthetic.generate(out / "data", seed=4, objects=3, views=3, distractors=3, width=320, height=240,
                       jpeg_quality=85)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["datasets"]["tiny"] = {"source": "local", "format": "oxford", "images": str(out / "data/jpg"),
                                  "groundtruth": str(out / "data/gt")}
    params["sift"]["codebook"].update(words=32, sample=20000)
    gnd = out / "gnd.json"
    prepare(params, "tiny", gnd)
    steps.extract(params, "test", "sift", gnd, out / "features")
    steps.codebook(params, "sift", gnd, out / "features", out / "model.npz")
    steps.encode(params, "test", "sift", gnd, out / "features", out / "model.npz", out / "index")
    return params, out, open_index(out / "index", gnd)


def _prepared(out, image):
    """Image ``image``'s features as the vocabulary sees them, its positions, and the vocabulary."""
    from instance_search.features.store import FeatureStore
    from instance_search.io import load_npz
    from instance_search.methods import get
    from instance_search.retrieval.vocabulary import Vocabulary

    store = FeatureStore(out / "features")
    read = get("sift").extraction.reader(store.config)
    vocab = Vocabulary.from_arrays(load_npz(out / "model.npz"))
    for first, sh in store.shards():
        xy, x, off = read(sh)
        if first <= image < first + len(off) - 1:
            a, b = off[image - first], off[image - first + 1]
            return xy[a:b], vocab.prepare(x[a:b]), vocab


def test_the_index_holds_each_images_aggregation_and_each_querys_box(tiny_sift):
    from instance_search.retrieval.geometry import in_box

    params, out, ix = tiny_sift
    q = ix.gnd.queries[0]
    xy, x, vocab = _prepared(out, q.image)
    words, bits = ix.db.aggregated.image(q.image)
    want = asmk.aggregate(x, vocab.words(x), np.array([0, len(x)]), vocab.centroids)
    assert np.array_equal(words, want.words) and np.array_equal(bits, want.bits)
    # the query: its box's features, each in its 5 nearest words (brute force: sorted distances)
    keep = in_box(xy, q.box)[0]
    d = ((x[keep, None, :] - vocab.centroids[None]) ** 2).sum(-1)
    nearest = np.argsort(d, axis=1, kind="stable")[:, :5]
    want = asmk.aggregate(x[keep], nearest, np.array([0, len(keep)]), vocab.centroids)
    queries = ix.benchmark_queries()
    got = queries.extra["asmk"]["ls"].image(0)
    assert np.array_equal(got[0], want.words) and np.array_equal(got[1], want.bits)
    assert len(got[0]) > len(words) / 2  # multiple assignment: more words than the box's features alone hit


@pytest.mark.parametrize("similarity", ["cosine", "weighted_cosine"])
def test_the_methods_search_is_the_per_pair_kernel(tiny_sift, similarity):
    from instance_search.engine import retrieve

    params, out, ix = tiny_sift
    assert params["sift"]["search"]["aggregation"] == "asmk"
    queries = ix.benchmark_queries()
    first = retrieve(ix, queries, params, similarity, until="first_stage")["first_stage"]
    absent = params["similarity"]["weight_absent"] if similarity == "weighted_cosine" else 1.0
    kernel = params["sift"]["search"]["asmk"]
    for j in range(len(queries)):
        qw, qb = queries.extra["asmk"]["ls"].image(j)
        want = [pair_score(qw, qb, *ix.db.aggregated.image(i), ix.db.idf, ix.db.aggregated.dims,
                                kernel["alpha"], kernel["threshold"], absent) for i in range(ix.n_database)]
        got = np.zeros(ix.n_database)
        got[first.ranks[j]] = first.scores[j]
        assert np.allclose(got, want, atol=1e-6) and max(want) > 0


def test_a_photo_query_is_encoded_as_the_benchmark_query(tiny_sift):
    params, out, ix = tiny_sift
    q = ix.gnd.queries[1]
    im = ix.gnd.images[q.image]
    one = ix.image_query(str(ix.image_path(q.image)), im.width, im.height, q.box)
    bench = ix.benchmark_queries()
    for mode in ("ls", "gs"):
        a, b = one.extra["asmk"][mode].image(0), bench.extra["asmk"][mode].image(1)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
