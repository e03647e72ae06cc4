"""Faster R-CNN features (features/frcnn.py) and region search (regions.py) on hand-made inputs."""

from __future__ import annotations

from collections import OrderedDict

import cv2
import numpy as np
import pytest

from instance_search import regions
from instance_search.errors import InstanceSearchError
from instance_search.features import backbones, frcnn

torch = pytest.importorskip("torch")


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
        b = frcnn.grid_boxes(w, h)
        assert b.dtype == np.float32 and b.shape[1] == 4
        np.testing.assert_array_equal(b, frcnn.grid_boxes(w, h))
        np.testing.assert_array_equal(b[0], [0, 0, w, h])
        assert (b[:, 0] >= 0).all() and (b[:, 1] >= 0).all() and (b[:, 2] <= w).all() and (b[:, 3] <= h).all()
        assert (b[:, 2] > b[:, 0]).all() and (b[:, 3] > b[:, 1]).all()
        assert len(np.unique(b, axis=0)) == len(b)
        # windows reach the right and bottom borders at every size
        for size in {(x2 - x1, y2 - y1) for x1, y1, x2, y2 in b.tolist()}:
            same = b[(b[:, 2] - b[:, 0] == size[0]) & (b[:, 3] - b[:, 1] == size[1])]
            assert same[:, 2].max() == w and same[:, 3].max() == h
    # 4:3 image, 4 scales x 3 ratios, stride 1/2: a few hundred at most
    assert 100 < len(frcnn.grid_boxes(640, 480)) <= 300
    # the limit drops whole fine scales, never the bottom of the image
    coarse = frcnn.grid_boxes(640, 480, limit=100)
    np.testing.assert_array_equal(coarse, frcnn.grid_boxes(640, 480, scales=(1.0, 0.7, 0.5))[:len(coarse)])
    assert coarse[:, 3].max() == 480 and len(coarse) <= 100
    with pytest.raises(InstanceSearchError, match="stride"):
        frcnn.grid_boxes(10, 10, stride=0)


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
    x = torch.from_numpy(frcnn._Preprocess(ex.mean, ex.std)(cv2.imread(paths[0]), (64, 48)))[None]
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


# ------------------------------------------------------------------------ a real run of the grid source

def test_grid_source_runs_mobilenet_v2_on_the_cpu(tmp_path):
    if not backbones.weight_file("mobilenet_v2").is_file():
        pytest.skip(f"{backbones.weight_file('mobilenet_v2')} missing: run make install (offline copy)")
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
        np.testing.assert_array_equal(r.boxes, frcnn.grid_boxes(w, h, limit=50))
        assert r.extent == (w, h) and np.isfinite(r.regions).all()
    assert out[2].extra.shape == (1, ex.dim) and out[0].extra.shape == (0, ex.dim)
    again, _ = frcnn.extract_images(ex, paths, dims, max_side=128, batch_size=1)
    for a, b in zip(out, again):  # batching never changes a result
        np.testing.assert_allclose(a.regions, b.regions, rtol=1e-4, atol=1e-5)
    feats = regions.RegionFeatures.from_images(out)
    feats.save(tmp_path / "f.npz")
    back = regions.RegionFeatures.load(tmp_path / "f.npz")
    np.testing.assert_array_equal(back.image(2)[0], out[2].boxes)
    assert back.regions.dtype == np.float16 and back.offsets[-1] == len(back.boxes) == sum(len(r.boxes) for r in out)


# --------------------------------------------------------------------------------------- similarity

def test_weighted_cosine_matches_the_direct_formula():
    rng = np.random.default_rng(1)
    q = np.maximum(rng.normal(size=(3, 8)), 0)   # pooled post-ReLU vectors: zeros where a channel is silent
    d = np.maximum(rng.normal(size=(5, 8)), 0)
    alpha = 0.8
    got = regions.similarity(q, d, "weighted_cosine", alpha)
    for i in range(3):
        w = np.where(q[i] != 0, 1.0, alpha)
        for j in range(5):
            direct = (w * q[i] * d[j]).sum() / (np.sqrt((w * q[i] ** 2).sum()) * np.sqrt((w * d[j] ** 2).sum()))
            assert got[i, j] == pytest.approx(direct, rel=1e-12)
    # on dense (e.g. whitened) vectors it is the cosine
    dense = rng.normal(size=(3, 8))
    np.testing.assert_allclose(regions.similarity(dense, d, "weighted_cosine"), regions.similarity(dense, d),
                               rtol=1e-12)
    assert regions.similarity(np.zeros((1, 8)), d, "weighted_cosine").tolist() == [[0.0] * 5]
    ranks, scores = regions.filter_rank(q, d, "weighted_cosine", alpha)
    assert ranks.dtype == np.int32 and (np.diff(scores, axis=1) <= 0).all()
    white = regions.fit_whitening(d, 4)
    wr, _ = regions.filter_rank(q, d, "cosine", whitening=white)
    np.testing.assert_array_equal(wr, regions.filter_rank(q, d, "weighted_cosine", whitening=white)[0])


# ---------------------------------------------------------------------------------------- re-ranking

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
    ranks, scores, best = regions.rerank(first, first_scores, q, get, top=3)
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
            assert scores[j, t] == pytest.approx(regions.similarity(q[j], v).max(), rel=1e-12)
    # an image without proposals scores 0 with a NaN box
    empty = lambda i: (np.zeros((0, 4), np.float32), np.zeros((0, 16))) if i == 0 else get(i)  # noqa: E731
    r, s, b = regions.rerank(first, first_scores, q, empty, top=4)
    assert np.isnan(b[0][r[0] == 0][0]).all() and s[0][r[0] == 0][0] == 0


def test_query_expansion_on_a_hand_made_ranking():
    e = np.eye(3)
    props = {0: np.array([[1, 0.5, 0], [0, 0, 1]]),  # best region of the top-1 result: (1, 0.5, 0)
             1: np.array([[1, 0, 1]]),
             2: np.array([[1, 1.2, 0]])}
    get = lambda i: (np.tile([0, 0, 1, 1], (len(props[i]), 1)).astype(np.float32), props[i])  # noqa: E731
    q = e[:1]
    first, first_scores = np.array([[0, 1, 2]]), np.array([[3.0, 2.0, 1.0]])
    ranks, _, _ = regions.rerank(first, first_scores, q, get, top=3)
    assert ranks.tolist() == [[0, 1, 2]]
    expanded = regions.expand(q, ranks, get, k=1)
    np.testing.assert_allclose(expanded[0], (e[0] + np.array([1, 0.5, 0]) / np.sqrt(1.25)) / 2)
    # the expanded query leans towards the second axis: image 2 overtakes image 1
    ranks, scores, _ = regions.rerank_expanded(first, first_scores, q, get, top=3, k=1)
    assert ranks.tolist() == [[0, 2, 1]] and (np.diff(scores) <= 0).all()
    with pytest.raises(InstanceSearchError, match="at least 1"):
        regions.expand(q, ranks, get, k=0)
