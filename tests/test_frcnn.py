"""Faster R-CNN features (features/frcnn.py) and the region method (methods/regions.py) on hand-made inputs."""

from __future__ import annotations

from collections import OrderedDict

import cv2
import numpy as np
import pytest

import torch
from conftest import require_weights

from instance_search import methods
from instance_search.methods.base import Queries
from instance_search.methods.regions import RegionDatabase, prepare
from instance_search.retrieval import linalg
from instance_search.retrieval.expansion import average_dense
from instance_search.retrieval.geometry import pixel_windows
from instance_search.retrieval.ranking import Ranking, rank
from instance_search.retrieval.similarity import scores as similarity
from instance_search.errors import InstanceSearchError
from instance_search.features import frcnn


# ------------------------------------------------------------------------------------------- pooling

def test_image_pooling_sum_and_max_over_the_valid_cells():
    m = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    m[1] *= -1
    assert frcnn.pool_image(m, "sum").tolist() == [m[0].sum(), m[1].sum()]
    assert frcnn.pool_image(m, "max").tolist() == [11.0, -12.0]
    # cells beyond the image (the RPN's padding) are left out
    assert frcnn.pool_image(m, "sum", valid=(2, 3)).tolist() == [m[0, :2, :3].sum(), m[1, :2, :3].sum()]
    assert frcnn.pool_image(m, "max", valid=(2, 3)).tolist() == [6.0, -12.0]


def _linear_map(gh=5, gw=5):
    """Channels: column index, row index, 1 (bilinear sampling is exact on a linear map)."""
    ys, xs = np.mgrid[0:gh, 0:gw].astype(np.float32)
    return np.stack([xs, ys, np.ones_like(xs)])


def test_roi_align_on_a_cell_aligned_box_reads_the_cells():
    m = _linear_map()
    # a 5x5 map tiling 50x50 pixels: cells of 10 px; [10, 30) x [20, 40) covers cells x 1..2, y 2..3
    box = [10, 20, 30, 40]
    s = frcnn.pool_box(m, box, (50, 50), pooling="sum", roi_size=2)
    assert s.shape == (1, 3) and s.dtype == np.float32
    np.testing.assert_allclose(s[0], [1 + 2 + 1 + 2, 2 + 2 + 3 + 3, 4], atol=1e-5)
    mx = frcnn.pool_box(m, box, (50, 50), pooling="max", roi_size=2)
    np.testing.assert_allclose(mx[0], [2, 3, 1], atol=1e-5)
    # non-square extent and cells: 5 x 5 cells tiling 100 x 25 px (cells 20 x 5 px)
    s2 = frcnn.pool_box(m, [20, 10, 60, 20], (100, 25), pooling="sum", roi_size=2)
    np.testing.assert_allclose(s2, s, atol=1e-5)


def test_roi_pool_takes_the_cells_whose_centres_the_box_holds():
    rng = np.random.default_rng(0)
    m = rng.normal(size=(4, 6, 7)).astype(np.float32)
    # 7 x 6 cells of 10 px: box [10, 20) x [30, 60) -> cells x 1, y 3..5
    got_sum = frcnn.pool_box(m, [10, 30, 20, 60], (70, 60), pooling="sum", roi="pool", roi_size=3)
    got_max = frcnn.pool_box(m, [10, 30, 20, 60], (70, 60), pooling="max", roi="pool", roi_size=3)
    cells = m[:, 3:6, 1]
    # 3 x 3 bins over 1 x 3 cells: each row's cell fills the 3 bins of its row
    np.testing.assert_allclose(got_sum[0], 3 * cells.sum(axis=1), rtol=1e-5)
    np.testing.assert_allclose(got_max[0], cells.max(axis=1), rtol=1e-6)


def test_bad_pooling_names_the_key():
    with pytest.raises(InstanceSearchError, match="frcnn.extract.pooling"):
        frcnn.pool_image(np.zeros((1, 2, 2)), "mean")
    with pytest.raises(InstanceSearchError, match="frcnn.extract.roi"):
        frcnn.pool_box(np.zeros((1, 2, 2)), [0, 0, 1, 1], (2, 2), roi="warp")


# ------------------------------------------------------------------------------------------ geometry

def test_boxes_map_back_to_original_pixels_exactly():
    # a 33 x 25 image fed at 17 x 13 (odd sizes, unequal factors per axis)
    b = frcnn.to_original([[0, 0, 17, 13], [8.5, 6.5, 17, 13], [1, 2, 3, 4]], (17, 13), (33, 25))
    np.testing.assert_allclose(b[0], [0, 0, 33, 25])      # borders land on borders
    np.testing.assert_allclose(b[1], [16.5, 12.5, 33, 25])  # the centre on the centre
    np.testing.assert_allclose(b[2], [33 / 17, 2 * 25 / 13, 3 * 33 / 17, 4 * 25 / 13], rtol=1e-6)
    assert b.dtype == np.float32


def test_grid_proposals_are_deterministic_inside_and_start_with_the_whole_image():
    for w, h in [(640, 480), (333, 517), (1024, 300), (7, 5)]:
        b = pixel_windows(w, h)
        assert b.dtype == np.float32 and b.shape[1] == 4
        np.testing.assert_array_equal(b, pixel_windows(w, h))
        np.testing.assert_array_equal(b[0], [0, 0, w, h])
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert len(np.unique(b, axis=0)) == len(b)
        # windows reach the right and bottom borders at every size
        for size in {(x2 - x1, y2 - y1) for x1, y1, x2, y2 in b.tolist()}:
            same = b[(b[:, 2] - b[:, 0] == size[0]) & (b[:, 3] - b[:, 1] == size[1])]
            assert same[:, 2].max() == w and same[:, 3].max() == h
    # 4:3 image, 4 scales x 3 ratios, stride 1/2: a few hundred at most
    assert 100 < len(pixel_windows(640, 480)) <= 300
    # the limit drops whole fine scales, never the bottom of the image
    coarse = pixel_windows(640, 480, limit=100)
    np.testing.assert_array_equal(coarse, pixel_windows(640, 480, scales=(1.0, 0.7, 0.5))[:len(coarse)])
    assert coarse[:, 3].max() == 480 and len(coarse) <= 100
    with pytest.raises(InstanceSearchError, match="stride"):
        pixel_windows(10, 10, stride=0)


# ------------------------------------------------------------------------------------ the RPN source

class _StubBackbone(torch.nn.Module):
    """Two channels at stride 8 (the input's first two channels averaged per 8 x 8 cell)."""

    out_channels = 2

    def forward(self, x):
        m = torch.nn.functional.avg_pool2d(x[:, :2], 8)
        return OrderedDict([("0", m), ("pool", torch.nn.functional.max_pool2d(m, 1, 2))])


class _StubRPN(torch.nn.Module):
    """Known boxes in network pixels; none for images fed 48 px wide (the fallback case)."""

    def forward(self, images, features):
        out = []
        for h, w in images.image_sizes:
            boxes = [[0, 0, w, h], [w / 2, 0, w, h / 2], [1, 1, 9, 9]]
            out.append(torch.tensor(boxes if w != 48 else [], dtype=torch.float32).reshape(-1, 4))
        return out, {}


class _StubDetector(torch.nn.Module):
    def __init__(self):
        from torchvision.models.detection.transform import GeneralizedRCNNTransform

        super().__init__()
        self.transform = GeneralizedRCNNTransform(800, 1333, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
        self.backbone, self.rpn = _StubBackbone(), _StubRPN()


def _write(path, w, h, seed):
    img = np.random.default_rng(seed).integers(0, 256, size=(h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(path), img)
    return str(path)


def test_rpn_boxes_come_back_in_original_pixels_and_empty_images_fall_back(tmp_path):
    ex = frcnn.RegionExtractor("rpn", model=_StubDetector(), device="cpu", proposals=2, roi_size=2)
    assert ex.source.level == "0" and ex.dim == 2 and ex.min_side == 32
    # 101 x 75 fed at 64 x 48 (padded to 64 x 64); 75 x 101 fed at 48 x 64: the stub proposes nothing
    paths = [_write(tmp_path / "a.png", 101, 75, 0), _write(tmp_path / "b.png", 75, 101, 1)]
    dims = [(101, 75), (75, 101)]
    out, fallbacks = frcnn.extract_images(ex, paths, dims, max_side=64, batch_size=2,
                                          extra=[np.array([[0, 0, 101, 75]]), None])
    assert fallbacks == 1 and not out[0].fallback and out[1].fallback
    # the first P = 2 boxes, scaled by 101/64 and 75/48
    np.testing.assert_allclose(out[0].boxes, [[0, 0, 101, 75], [50.5, 0, 101, 37.5]], rtol=1e-6)
    np.testing.assert_array_equal(out[1].boxes, [[0, 0, 75, 101]])
    assert out[0].regions.shape == (2, 2) and out[1].regions.shape == (1, 2) and out[0].extra.shape == (1, 2)
    # the map tiles the padded input: 64 x 64 network pixels = 101 x (64 * 75 / 48) original pixels
    assert out[0].extent == pytest.approx((101, 100))
    # the stored region vectors are what pool_box gives on the same map (the query path)
    x = torch.from_numpy(frcnn.Preprocess(ex.mean, ex.std)(cv2.imread(paths[0]), (64, 48)))[None]
    (kept,) = ex.run(x, [dims[0]], keep_maps=True)
    assert kept.map.shape == (2, 8, 8)
    np.testing.assert_allclose(frcnn.pool_box(kept.map, kept.boxes, kept.extent, roi_size=2), out[0].regions, rtol=1e-5)
    np.testing.assert_allclose(out[0].extra[0], out[0].regions[0], rtol=1e-5)
    # the image-wise vector pools the 6 rows of cells that cover the image, not the padding
    np.testing.assert_allclose(out[0].vector, kept.map[:, :6, :].sum(axis=(1, 2)), rtol=1e-5)
    with pytest.raises(InstanceSearchError, match="b.png: box .* no area inside the 75x101 image"):
        frcnn.extract_images(ex, paths, dims, max_side=64, extra=[None, np.array([[80, 0, 90, 10]])])
    with pytest.raises(InstanceSearchError, match="frcnn.extract.level='5'.*0, pool"):
        frcnn.RegionExtractor("rpn", model=_StubDetector(), device="cpu", level="5")


def test_missing_coco_weights_name_file_hash_and_place(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    place = tmp_path / "hub" / "checkpoints"
    with pytest.raises(InstanceSearchError) as err:
        frcnn.RegionExtractor("rpn", device="cpu")
    msg = str(err.value)
    assert "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth" in msg and "258fb6c6" in msg and str(place) in msg
    assert "\n" not in msg and "source=grid" in msg
    # a file of that name with other content is not loaded either
    place.mkdir(parents=True)
    (place / "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth").write_bytes(b"truncated")
    with pytest.raises(InstanceSearchError, match="does not start with 258fb6c6"):
        frcnn.RegionExtractor("rpn", device="cpu")
    with pytest.raises(InstanceSearchError, match="frcnn.extract.detector"):
        frcnn.RegionExtractor("rpn", detector="yolo", device="cpu")


# ------------------------------------------------------------ the rpn source on a real torchvision detector

REAL_DETECTOR = "fasterrcnn_mobilenet_v3_large_320_fpn"  # the smallest of frcnn.DETECTORS


def _real_detector(**kwargs):
    """torchvision's own Faster R-CNN, built offline with random weights (seeded): the real transform,
    backbone + FPN and RPN, to test the wiring (never the quality of its boxes)."""
    from torchvision.models import detection

    torch.manual_seed(0)
    return getattr(detection, REAL_DETECTOR)(weights=None, weights_backbone=None, num_classes=91, **kwargs)


def test_rpn_source_on_a_real_detector_gives_original_pixel_boxes_and_falls_back(tmp_path):
    from torchvision.models.detection.image_list import ImageList

    model = _real_detector(rpn_post_nms_top_n_test=40)
    ex = frcnn.RegionExtractor("rpn", model=model, device="cpu", proposals=8, roi_size=2)
    # the coarsest FPN level ("1", stride 32 here), not the extra max-pooled "pool"; the FPN's 256 channels
    assert ex.source.level == "1" and ex.dim == model.backbone.out_channels == 256 and ex.min_side == 32
    dims = [(200, 150), (150, 200), (200, 150)]  # landscape images 0 and 2 batched together
    paths = [_write(tmp_path / f"{k}.png", w, h, k) for k, (w, h) in enumerate(dims)]
    out, fallbacks = frcnn.extract_images(ex, paths, dims, max_side=96, batch_size=2)
    assert fallbacks == 0
    with torch.no_grad():
        for k, (r, (W, H)) in enumerate(zip(out, dims)):
            w, h = frcnn.resized_size(W, H, 96, 32)  # fed at 96 x 72 / 72 x 96, padded to 96 x 96
            assert (w, h) == ((96, 72) if W > H else (72, 96))
            # the RPN's own boxes for this image, in network pixels, straight from the model's parts
            x = torch.from_numpy(frcnn.Preprocess(ex.mean, ex.std)(cv2.imread(paths[k]), (w, h)))[None]
            padded = model.transform.batch_images(list(x), size_divisible=32)
            net_boxes = model.rpn(ImageList(padded, [(h, w)]), model.backbone(padded))[0][0].numpy()
            assert len(net_boxes) > 8  # the test needs more than P proposals to see the cut
            # at most P = 8 boxes: the RPN's first 8, scaled to ORIGINAL pixels by W / w and H / h
            assert r.boxes.shape == (8, 4) and r.boxes.dtype == np.float32 and not r.fallback
            np.testing.assert_allclose(r.boxes, net_boxes[:8] * [W / w, H / h, W / w, H / h], rtol=1e-4, atol=1e-3)
            assert (r.boxes[:, :2] >= 0).all() and (r.boxes[:, 2] <= W + 1e-3).all() and (r.boxes[:, 3] <= H + 1e-3).all()
            assert (r.boxes[:, 2] > r.boxes[:, 0]).all() and (r.boxes[:, 3] > r.boxes[:, 1]).all()
            assert r.boxes[:, 2:].max() > max(w, h)  # beyond the network input: original pixels indeed
            # region vectors and the image vector have the FPN level's dimension
            assert r.regions.shape == (8, 256) and r.vector.shape == (256,) and np.isfinite(r.regions).all()
            # the map tiles the padded 96 x 96 input: 96 W / w x 96 H / h original pixels
            assert r.extent == pytest.approx((96 * W / w, 96 * H / h))
    # the stored region vectors are pool_box on the level's map (the query path)
    x = torch.from_numpy(frcnn.Preprocess(ex.mean, ex.std)(cv2.imread(paths[1]), (72, 96)))[None]
    (kept,) = ex.run(x, [dims[1]], keep_maps=True)
    assert kept.map.shape == (256, 3, 3)  # level "1": stride 32 on the padded 96 x 96 input
    np.testing.assert_allclose(frcnn.pool_box(kept.map, kept.boxes, kept.extent, roi_size=2), out[1].regions,
                               rtol=1e-4, atol=1e-5)
    # an RPN that keeps no box (score threshold above any objectness): every image falls back to itself
    model.rpn.score_thresh = 2.0
    out, fallbacks = frcnn.extract_images(ex, paths, dims, max_side=96, batch_size=2)
    assert fallbacks == 3 and all(r.fallback for r in out)
    for r, (W, H) in zip(out, dims):
        np.testing.assert_array_equal(r.boxes, [[0, 0, W, H]])
        assert r.regions.shape == (1, 256)


def test_load_detector_names_the_missing_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    place = tmp_path / "hub" / "checkpoints"
    assert frcnn.detector_weight_file(REAL_DETECTOR) == place / "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth"
    with pytest.raises(InstanceSearchError) as err:
        frcnn.load_detector(REAL_DETECTOR, 10)
    msg = str(err.value)
    assert "fasterrcnn_mobilenet_v3_large_320_fpn-907ea3f9.pth" in msg and "907ea3f9" in msg and str(place) in msg
    assert "\n" not in msg and "source=grid" in msg


def test_load_detector_builds_the_detector_with_its_weights_and_proposal_count(monkeypatch):
    # the COCO file cannot be here offline: the hash check and the file read are replaced by a state dict
    # of a seeded random model; everything else (builder, classes, RPN top-n, eval mode) is load_detector's
    reference = _real_detector().state_dict()
    weights = frcnn._detector_weights(REAL_DETECTOR)
    monkeypatch.setattr(frcnn, "check_detector_weights", lambda detector: frcnn.detector_weight_file(detector))
    monkeypatch.setattr(type(weights), "get_state_dict", lambda self, **kwargs: reference)
    ex = frcnn.RegionExtractor("rpn", detector=REAL_DETECTOR, device="cpu", proposals=7)
    model = ex.source.model
    assert not model.training and model.rpn._post_nms_top_n["testing"] == 7
    assert model.roi_heads.box_predictor.cls_score.out_features == len(weights.meta["categories"]) == 91
    for name, value in model.state_dict().items():
        assert torch.equal(value, reference[name]), name


# ------------------------------------------------------------------------ a real run of the grid source

def test_grid_source_runs_mobilenet_v2_on_the_cpu(tmp_path):
    require_weights("mobilenet_v2")  # missing: fails with the install command (conftest.missing_weights)
    # two images of one size (batched together) and an odd-sized portrait one
    paths = [_write(tmp_path / f"{k}.jpg", w, h, k) for k, (w, h) in enumerate([(160, 120), (160, 120), (97, 131)])]
    dims = [(160, 120), (160, 120), (97, 131)]
    ex = frcnn.RegionExtractor("grid", backbone="mobilenet_v2", device="cpu", proposals=50, pooling="max")
    out, fallbacks = frcnn.extract_images(ex, paths, dims, max_side=128, batch_size=4,
                                          extra=[None, None, np.array([[10, 20, 60, 90]])])
    assert fallbacks == 0
    for r, (w, h) in zip(out, dims):
        assert r.vector.shape == (ex.dim,) and r.vector.dtype == np.float32
        assert 1 < len(r.boxes) <= 50 and r.regions.shape == (len(r.boxes), ex.dim)
        np.testing.assert_array_equal(r.boxes, pixel_windows(w, h, limit=50))
        assert r.extent == (w, h) and np.isfinite(r.regions).all()
    assert out[2].extra.shape == (1, ex.dim) and out[0].extra.shape == (0, ex.dim)
    again, _ = frcnn.extract_images(ex, paths, dims, max_side=128, batch_size=1)
    for a, b in zip(out, again):  # batching never changes a result
        np.testing.assert_allclose(a.regions, b.regions, rtol=1e-4, atol=1e-5)
    feats = frcnn.RegionFeatures.from_images(out)
    np.testing.assert_array_equal(feats.image(2)[0], out[2].boxes)
    assert feats.regions.dtype == np.float16 and feats.offsets[-1] == len(feats.boxes) == sum(len(r.boxes) for r in out)


# --------------------------------------------------------------------------------------- similarity

def test_weighted_cosine_matches_the_direct_formula():
    rng = np.random.default_rng(1)
    q = np.maximum(rng.normal(size=(3, 8)), 0)   # pooled post-ReLU vectors: zeros where a channel is silent
    d = np.maximum(rng.normal(size=(5, 8)), 0)
    alpha = 0.8
    got = similarity(q, d, "weighted_cosine", alpha)
    for i in range(3):
        w = np.where(q[i] != 0, 1.0, alpha)
        for j in range(5):
            direct = (w * q[i] * d[j]).sum() / (np.sqrt((w * q[i] ** 2).sum()) * np.sqrt((w * d[j] ** 2).sum()))
            assert got[i, j] == pytest.approx(direct, rel=1e-12)
    # on dense (e.g. whitened) vectors it is the cosine
    dense = rng.normal(size=(3, 8))
    np.testing.assert_allclose(similarity(dense, d, "weighted_cosine"), similarity(dense, d),
                               rtol=1e-12)
    assert similarity(np.zeros((1, 8)), d, "weighted_cosine").tolist() == [[0.0] * 5]
    ranks, scores = rank(similarity(prepare(q), prepare(d), "weighted_cosine", alpha))
    assert ranks.dtype == np.int32 and (np.diff(scores, axis=1) <= 0).all()
    white = linalg.fit_whitening(linalg.l2(d).astype(np.float32), 4)
    wr, _ = rank(similarity(prepare(q, white), prepare(d, white), "cosine"))
    np.testing.assert_array_equal(wr, rank(similarity(prepare(q, white), prepare(d, white), "weighted_cosine"))[0])


# ---------------------------------------------------------------------------------------- re-ranking

METHOD = methods.get("frcnn")


def _db(get, n):
    """A RegionDatabase of n images whose proposals get(i) gives (boxes, region vectors)."""
    parts = [get(i) for i in range(n)]
    counts = [len(b) for b, _ in parts]
    c = max(v.shape[1] for _, v in parts)
    proposals = frcnn.RegionFeatures(np.zeros((n, 0), np.float32),
                                     np.concatenate([np.asarray(v, np.float16).reshape(-1, c) for _, v in parts]),
                                     np.concatenate([np.asarray(b, np.float32).reshape(-1, 4) for b, _ in parts]),
                                     np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))
    return RegionDatabase(np.zeros((n, c), np.float32), proposals, {}, n)


def _rerank(first, first_scores, q, get, top, n=4):
    queries = Queries([f"q{j}" for j in range(len(q))], box=q, image=q, extra={"box_region": np.asarray(q)})
    r = METHOD.rerank(_db(get, n), queries, Ranking(first, first_scores), {"rerank": {"candidates": top}},
                      "cosine", 0.8)
    return r.ranks, r.scores, r.boxes


def _expand(ranking, q, get, k, top, n=3):
    queries = Queries(["q"], box=q, image=q, extra={"box_region": np.asarray(q)})
    p = {"rerank": {"candidates": top}, "expand": {"mode": "lqe", "neighbours": k}}
    return METHOD.expand(_db(get, n), queries, ranking, p, "cosine", 0.8)

def _database(rng, n=4, p=6, c=16):
    boxes = [rng.uniform(0, 50, size=(p, 2)).repeat(2, axis=1) + [0, 0, 10, 10] for _ in range(n)]
    vecs = [rng.uniform(0, 1, size=(p, c)) for _ in range(n)]
    return boxes, vecs


def test_rerank_finds_the_planted_region():
    rng = np.random.default_rng(2)
    boxes, vecs = _database(rng)
    q = rng.uniform(0, 1, size=(2, 16))
    vecs[2][4] = 3 * q[0]                       # image 2, proposal 4 holds query 0's object
    boxes[2][4] = [5, 6, 25, 36]
    vecs[3][1] = q[1] + 0.01                    # image 3, proposal 1 holds query 1's
    first = np.array([[0, 1, 2, 3], [3, 2, 1, 0]])
    first_scores = np.array([[0.9, 0.8, 0.7, 0.6], [0.9, 0.8, 0.7, 0.6]])
    get = lambda i: (np.asarray(boxes[i], np.float32), vecs[i].astype(np.float16))  # noqa: E731
    ranks, scores, best = _rerank(first, first_scores, q, get, top=3)
    assert ranks[0, 0] == 2 and scores[0, 0] == pytest.approx(1.0, abs=1e-3)
    np.testing.assert_array_equal(best[0, 0], [5, 6, 25, 36])
    assert ranks[0, 3] == 3                     # beyond the top T: first-stage order, scores below
    assert scores[0, 3] == pytest.approx(scores[0, :3].min() - 1)
    assert ranks[1, 0] == 3 and best.shape == (2, 3, 4) and best.dtype == np.float32
    np.testing.assert_array_equal(best[1, 0], boxes[3][1].astype(np.float32))
    # the image-major products equal a plain loop over (query, image)
    for j in range(2):
        for t in range(3):
            b, v = get(ranks[j, t])
            assert scores[j, t] == pytest.approx(similarity(q[j], v).max(), rel=1e-6)  # stored as float32
    # an image without proposals scores 0 with a NaN box
    empty = lambda i: (np.zeros((0, 4), np.float32), np.zeros((0, 16))) if i == 0 else get(i)  # noqa: E731
    r, s, b = _rerank(first, first_scores, q, empty, top=4)
    assert np.isnan(b[0][r[0] == 0][0]).all() and s[0][r[0] == 0][0] == 0


def test_query_expansion_on_a_hand_made_ranking():
    e = np.eye(3)
    props = {0: np.array([[1, 0.5, 0], [0, 0, 1]]),  # best region of the top-1 result: (1, 0.5, 0)
             1: np.array([[1, 0, 1]]),
             2: np.array([[1, 1.2, 0]])}
    get = lambda i: (np.tile([0, 0, 1, 1], (len(props[i]), 1)).astype(np.float32), props[i])  # noqa: E731
    q = e[:1]
    first, first_scores = np.array([[0, 1, 2]]), np.array([[3.0, 2.0, 1.0]])
    ranks, scores, boxes = _rerank(first, first_scores, q, get, top=3, n=3)
    assert ranks.tolist() == [[0, 1, 2]]
    # the mean of the unit query and the unit best region of the top-1 result
    expanded = average_dense(q, np.array([0]), np.array([[1, 0.5, 0]]))
    np.testing.assert_allclose(expanded[0], (e[0] + np.array([1, 0.5, 0]) / np.sqrt(1.25)) / 2)
    # the expanded query leans towards the second axis: image 2 overtakes image 1
    out = _expand(Ranking(ranks, scores, boxes), q, get, k=1, top=3)
    assert out.ranks.tolist() == [[0, 2, 1]] and (np.diff(out.scores) <= 0).all()
    with pytest.raises(InstanceSearchError, match="at least 1"):
        _expand(Ranking(ranks, scores, boxes), q, get, k=0, top=3)


def test_proposals_normalised_in_blocks_are_those_normalised_at_once():
    from instance_search.methods.region_index import _unit_half
    from instance_search.retrieval import linalg

    regions = np.random.default_rng(5).normal(size=(50, 12)).astype(np.float16)
    regions[7] = 0  # a dead row stays zero
    out = np.empty_like(regions)
    _unit_half(regions, out, block=7)
    np.testing.assert_array_equal(out, linalg.l2(regions.astype(np.float32)).astype(np.float16))
    assert not out[7].any() and out.dtype == np.float16
