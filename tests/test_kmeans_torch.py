"""The vocabulary's torch path (retrieval/kmeans_torch.py): the same Lloyd iterations and exact nearest words
as faiss, deterministic for a seed; CUDA agrees with the CPU; codebook.device resolved, named in its error,
and declared to Snakemake as a GPU where it resolves to CUDA."""

from __future__ import annotations

import faiss
import numpy as np
import pytest
import torch
import yaml
from workflow_tools import copy_repo, snakemake

from instance_search import methods
from instance_search.errors import InstanceSearchError
from instance_search.metrics import average_precision
from instance_search.retrieval import bow, kmeans_torch, vocabulary
from instance_search.retrieval import similarity as sim
from instance_search.retrieval.ranking import rank

K, ITERATIONS = 256, 10
NO_CUDA = "no CUDA device: the CPU-vs-GPU agreement needs one (torch.cuda.is_available() is False)"


def retrieval_problem(seed: int, objects: int = 20, parts: int = 8, clutter: int = 20, per_object: int = 10,
                      features: int = 40, dim: int = 32, noise: float = 0.8, p_clutter: float = 0.7):
    """A small BoW retrieval problem, hard enough that mAP depends on the words (about 0.95-0.99):
    each object has its own parts (Gaussian blobs), every image draws its features from its object's
    parts or from clutter shared by all; 10 database images per object, then one query image each.
    Returns (features, per-image offsets, object of each image, n_database)."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((objects * parts + clutter, dim)).astype(np.float32)
    owner = np.concatenate([np.repeat(np.arange(objects), per_object), np.arange(objects)])
    x = []
    for o in owner:
        own = rng.random(features) >= p_clutter
        blob = np.where(own, o * parts + rng.integers(0, parts, features),
                        objects * parts + rng.integers(0, clutter, features))
        x.append(centres[blob] + noise * rng.standard_normal((features, dim)).astype(np.float32))
    return np.concatenate(x), np.arange(len(owner) + 1) * features, owner, objects * per_object


def mean_ap(words, offsets, owner, n_database: int, k: int) -> float:
    """mAP of the query images' tf-idf bags ranked by cosine against the database's; positives: same object."""
    w = bow.weighted(c := bow.counts_matrix(words, offsets, k), bow.word_weights(c, n_database, "tfidf"))
    ranks, _ = rank(sim.scores(w[n_database:], w[:n_database], "cosine"))
    return float(np.mean([average_precision(ranks[j], np.flatnonzero(owner[:n_database] == owner[n_database + j]))
                          for j in range(len(ranks))]))


def faiss_kmeans(x, init, iterations):
    """faiss's k-means as vocabulary.train runs it, but from the given initial centroids."""
    km = faiss.Kmeans(x.shape[1], len(init), niter=iterations, seed=0, verbose=False,
                      max_points_per_centroid=max(256, len(x) // len(init) + 1))
    km.train(x, init_centroids=init)
    return km.centroids, float(km.obj[-1])


@pytest.fixture(scope="module")
def problem():
    x, offsets, owner, n_database = retrieval_problem(1)
    return x, offsets, owner, n_database, x[:offsets[n_database]]  # the database's features: the k-means sample


# ----------------------------------------------------------------------------------- the CPU, here

def test_torch_kmeans_follows_faiss_from_the_same_start(problem):
    x, offsets, owner, n_database, sample = problem
    init = kmeans_torch.initial(sample, K, seed=0)
    c_faiss, obj_faiss = faiss_kmeans(sample, init, ITERATIONS)
    c_torch, obj_torch = kmeans_torch.train(sample, K, ITERATIONS, seed=0, device="cpu", init=init)
    np.testing.assert_allclose(c_torch, c_faiss, atol=1e-4)
    assert obj_torch == pytest.approx(obj_faiss, rel=1e-5)
    w_faiss, w_torch = vocabulary.Assigner(c_faiss)(x), kmeans_torch.assign(x, c_torch, "cpu")
    assert (w_faiss == w_torch).mean() >= 0.999
    assert abs(mean_ap(w_faiss, offsets, owner, n_database, K) - mean_ap(w_torch, offsets, owner, n_database, K)) < 1e-3


def test_torch_kmeans_is_deterministic_and_as_good_as_faiss(problem):
    sample = problem[4]
    c1, obj1 = kmeans_torch.train(sample, K, ITERATIONS, seed=3, device="cpu")
    c2, _ = kmeans_torch.train(sample, K, ITERATIONS, seed=3, device="cpu", batch=1000)  # other batches, same sums
    c3, _ = kmeans_torch.train(sample, K, ITERATIONS, seed=4, device="cpu")
    assert c1.dtype == np.float32 and c1.shape == (K, sample.shape[1])
    assert c1.tobytes() == kmeans_torch.train(sample, K, ITERATIONS, seed=3, device="cpu")[0].tobytes()
    np.testing.assert_allclose(c2, c1, atol=1e-5)  # batching changes only the rounding of the distances
    assert c3.tobytes() != c1.tobytes()
    # its own seeded start against faiss's: another local optimum, of the same quality
    km = faiss.Kmeans(sample.shape[1], K, niter=ITERATIONS, seed=3, verbose=False, max_points_per_centroid=10**6)
    km.train(sample)
    assert obj1 == pytest.approx(float(km.obj[-1]), rel=0.02)


def test_an_emptied_word_takes_half_of_the_largest():
    c = torch.tensor([[1.0, 2.0, 4.0], [8.0, 16.0, 32.0], [64.0, 128.0, 256.0]])
    assert kmeans_torch._split_empty(c, np.array([0, 10, 4])) == 1
    eps = kmeans_torch.EPS
    np.testing.assert_allclose(c[0], [8 * (1 + eps), 16 * (1 - eps), 32 * (1 + eps)])
    np.testing.assert_allclose(c[1], [8 * (1 - eps), 16 * (1 + eps), 32 * (1 - eps)])
    np.testing.assert_allclose(c[2], [64, 128, 256])
    # a start with one centroid twice (duplicate features): its twin empties, takes half of the largest
    # blob, and every word ends up used
    rng = np.random.default_rng(0)
    centres = 20 * rng.standard_normal((12, 8)).astype(np.float32)
    sizes = np.arange(1, 13) * 20
    x = np.concatenate([c + rng.standard_normal((n, 8)).astype(np.float32) for c, n in zip(centres, sizes)])
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    init = x[np.r_[first[:11], first[0]]]  # blob 11 (the largest) unseeded, blob 0 seeded twice
    c, _ = kmeans_torch.train(x, 12, 10, seed=0, device="cpu", init=init)
    assert np.bincount(kmeans_torch.assign(x, c, "cpu"), minlength=12).min() > 0
    assert c.tobytes() == kmeans_torch.train(x, 12, 10, seed=0, device="cpu", init=init)[0].tobytes()


def test_torch_assignment_is_faiss_exact_search_except_ties():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((20000, 64)).astype(np.float32)
    c = rng.standard_normal((500, 64)).astype(np.float32)
    w_faiss = vocabulary.Assigner(c)(x)
    w_torch = kmeans_torch.assign(x, c, "cpu", batch=777)  # batches that do not divide the rows
    assert w_torch.dtype == np.int32 and w_faiss.dtype == np.int32
    differ = np.flatnonzero(w_faiss != w_torch)
    assert len(differ) <= 2, differ
    for i in differ:  # only where both words are equally near at float32 resolution
        d = ((x[i].astype(np.float64) - c[[w_faiss[i], w_torch[i]]]) ** 2).sum(1)
        assert abs(d[0] - d[1]) <= 1e-5 * d.max(), (i, d)
    assert len(kmeans_torch.assign(np.zeros((0, 64), np.float32), c, "cpu")) == 0


def test_codebook_device_resolution(monkeypatch):
    key = "sift.codebook.device"
    assert vocabulary.resolve_device("cpu", key) == "cpu"
    assert vocabulary.resolve_device("auto", key) == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(InstanceSearchError, match="expected auto, cpu or cuda"):
        vocabulary.resolve_device("gpu", key)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert vocabulary.resolve_device("auto", key) == "cpu"
    assert not vocabulary.runs_on_gpu("auto") and not vocabulary.runs_on_gpu("cpu")
    assert vocabulary.runs_on_gpu("cuda")  # a head node without a GPU still reserves one for the job
    for method in ("sift", "blcf"):  # both steps refuse before reading anything
        m = methods.indexing(method)
        with pytest.raises(InstanceSearchError) as err:
            m.learn({"device": "cuda", "sample": 10, "words": 2, "iterations": 1, "pca_dim": 0}, 0, None, None)
        assert str(err.value) == f"{method}.codebook.device=cuda but no CUDA device is visible; use auto or cpu"
        with pytest.raises(InstanceSearchError, match=f"^{method}.codebook.device=cuda but no CUDA"):
            m.encode({"weighting": "tfidf"}, None, None, {}, device="cuda")


def test_codebook_and_encode_declare_a_gpu_where_the_codebook_runs_on_cuda(tmp_path):
    """A Snakemake dry run with sift's codebook on cuda: sift's codebook and encode reserve a GPU; blcf's
    (auto) only where this machine has CUDA; frcnn's and gem's codebooks have no device and reserve none."""
    root = copy_repo(tmp_path / "repo")
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["sift"]["codebook"]["device"] = "cuda"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    proc = snakemake("-n", "--cores", "8", "--resources", "gpu=1", cwd=root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    auto = int(torch.cuda.is_available())
    expected = {"sift": 1, "blcf": auto, "frcnn": 0, "gem": 0, "xfeat": auto}
    for d in params["run"]["datasets"]:
        for m in params["run"]["methods"]:
            assert f"Learning the {m} model of {d} on results/{d}/{m}/features (gpu={expected[m]})" in out, \
                (m, out[-3000:])
            assert f"Encoding {d} with the {m} model (gpu={expected[m]})" in out, m


# ------------------------------------------------------------------------------------------ CUDA

@pytest.mark.skipif(not torch.cuda.is_available(), reason=NO_CUDA)
def test_cuda_agrees_with_the_cpu(problem):
    """The GPU path against the CPU's: the words of one vocabulary (faiss on the CPU, torch on CUDA), and the
    k-means itself (torch from the same seed on both): >= 99.9% the same words, the same mAP to 1e-3."""
    x, offsets, owner, n_database, sample = problem

    def agree(w_cpu, w_gpu):
        assert (w_cpu == w_gpu).mean() >= 0.999
        assert abs(mean_ap(w_cpu, offsets, owner, n_database, K) - mean_ap(w_gpu, offsets, owner, n_database, K)) < 1e-3

    c_faiss = vocabulary.train(sample, K, ITERATIONS, seed=0, device="cpu")
    agree(vocabulary.Assigner(c_faiss)(x), vocabulary.Assigner(c_faiss, "cuda")(x))
    c_cpu, _ = kmeans_torch.train(sample, K, ITERATIONS, seed=0, device="cpu")
    c_gpu = vocabulary.train(sample, K, ITERATIONS, seed=0, device="cuda")  # the pipeline's CUDA path
    agree(kmeans_torch.assign(x, c_cpu, "cpu"), vocabulary.Assigner(c_gpu, "cuda")(x))
    assert c_gpu.tobytes() == vocabulary.train(sample, K, ITERATIONS, seed=0, device="cuda").tobytes()
