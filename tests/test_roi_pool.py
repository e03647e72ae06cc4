"""frcnn's RoIAlign by matrix products (features/frcnn.py, ``_align_vectors``) against torchvision's
roi_align kernel, which it replaces: a hand-computed case, random maps and boxes (outside the map, tiny,
on its border), and the grid extraction of real-size images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import require_weights
from torchvision.ops import roi_align

from instance_search.datasets import synthetic
from instance_search.features import frcnn


@pytest.fixture(autouse=True)
def one_thread():
    """torch at one thread, as the extraction runs it (compute.threads 1); restored after each test."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _torchvision(fmaps, rois, pooling: str, roi_size: int):
    """The previous path: torchvision's RoIAlign bins, then their max or sum."""
    bins = roi_align(fmaps, rois, roi_size, spatial_scale=1.0, sampling_ratio=frcnn.SAMPLING_RATIO, aligned=True)
    return frcnn._reduce(bins, pooling, (2, 3))


def _rois(rng, n: int, batch: int, gh: int, gw: int) -> torch.Tensor:
    """n boxes (batch index, x1, y1, x2, y2) in map coordinates: anywhere from 3 cells before the map to 3
    beyond it, a fifth tiny (under a cell), a fifth with corners on a quarter-cell lattice around the
    border (samples land exactly on -1, 0, the last cell and the map's end), a few empty or the whole map."""
    x1 = rng.uniform(-3, gw + 3, n)
    y1 = rng.uniform(-3, gh + 3, n)
    w = rng.uniform(0, 1, n) ** 2 * (gw + 4)
    h = rng.uniform(0, 1, n) ** 2 * (gh + 4)
    tiny = rng.uniform(size=n) < 0.2
    w[tiny] *= rng.uniform(0, 1 / (gw + 4), tiny.sum())
    h[tiny] *= rng.uniform(0, 1 / (gh + 4), tiny.sum())
    boxes = np.stack([x1, y1, x1 + w, y1 + h], 1)
    lattice = rng.uniform(size=n) < 0.2
    corners = rng.integers(-8, 4 * max(gh, gw) + 8, (lattice.sum(), 4)) / 4.0
    xs, ys = np.sort(corners[:, :2], 1), np.sort(corners[:, 2:], 1)
    boxes[lattice] = np.stack([xs[:, 0], ys[:, 0], xs[:, 1], ys[:, 1]], 1)
    boxes[:3] = [[0, 0, gw, gh], [-1, -1, gw + 1, gh + 1], [2, 1, 2, 1]]   # whole map, beyond it, empty
    image = rng.integers(0, batch, n)
    return torch.from_numpy(np.hstack([image[:, None], boxes])).float()


def test_hand_computed_bins():
    # one channel, 3 rows x 4 columns: M[i, j] = 4 i + j + 1
    m = torch.arange(1, 13, dtype=torch.float32).reshape(1, 1, 3, 4)
    rois = torch.tensor([[0, 0, 0, 4, 3],            # the whole map
                         [0, -2.5, 0, 1.5, 1],       # half of it left of the map
                         [0, 1, 2.5, 2, 4.5]])       # below the last row
    # aligned=True shifts boxes by -0.5. Whole map, 2 x 2 bins: x in [-0.5, 3.5), bins of 2 cells, samples
    # at x = 0, 1 | 2, 3 (3: the last column); y in [-0.5, 2.5), bins of 1.5 rows, samples at -0.125
    # (clamped to row 0), 0.625 | 1.375, 2.125 (past the last row: row 2). M is linear where sampled, so
    # a bin is 4 mean(y) + mean(x) + 1: mean y 0.3125 | 1.6875, mean x 0.5 | 2.5.
    bins = [4 * 0.3125 + 0.5 + 1, 4 * 0.3125 + 2.5 + 1, 4 * 1.6875 + 0.5 + 1, 4 * 1.6875 + 2.5 + 1]
    assert bins == [2.75, 4.75, 8.25, 10.25]
    # One bin (roi_size 1). Whole map: samples at x = 0.5, 2.5 and y = 0.25, 1.75, all inside: 4 + 1.5 + 1.
    # Second box: x in [-3, 1), samples at -2 (before -1: reads nothing) and 0; y in [-0.5, 0.5), samples
    # at -0.25 (row 0) and 0.25 (0.75 row 0 + 0.25 row 1). The two samples at x = 0 read 1 and
    # 0.75 * 1 + 0.25 * 5 = 2; the mean is over all 4 samples: 3 / 4.
    # Third box: x in [0.5, 1.5), samples 0.75 and 1.25; y in [2, 4), samples 2.5 (row 2) and 3.5 (beyond
    # the map's end 3: nothing). Row 2 is 9 10 11 12: 9.75 and 10.25 at the two x; (9.75 + 10.25) / 4.
    one = [6.5, 0.75, 5.0]
    for pooling, size, rows, want in (("max", 2, [0], [max(bins)]), ("sum", 2, [0], [sum(bins)]),
                                      ("max", 1, [0, 1, 2], one), ("sum", 1, [0, 1, 2], one)):
        got = frcnn._roi_vectors(m, rois, pooling, "align", size)
        assert got.shape == (3, 1) and got.dtype == torch.float32
        np.testing.assert_allclose(got[rows, 0].numpy(), want, rtol=1e-6)
        # torchvision reads the same, on every box
        np.testing.assert_allclose(got.numpy(), _torchvision(m, rois, pooling, size).numpy(), rtol=1e-6)


@pytest.mark.parametrize("channels, gh, gw", [(1, 3, 4), (7, 16, 12), (64, 12, 16), (256, 1, 5), (3, 5, 1)])
def test_random_maps_and_boxes_match_torchvision(channels, gh, gw):
    rng = np.random.default_rng(channels * 100 + gh * 10 + gw)
    m = torch.from_numpy(rng.normal(size=(2, channels, gh, gw)).astype(np.float32))
    rois = _rois(rng, 500, 2, gh, gw)
    for roi_size in (7, 3):
        for pooling in ("max", "sum"):
            want = _torchvision(m, rois, pooling, roi_size)
            got = frcnn._roi_vectors(m, rois, pooling, "align", roi_size)
            assert got.shape == want.shape and got.dtype == want.dtype
            scale = want.abs().max().item()
            diff = (got - want).abs().max().item()
            # measured: at most 1.8e-7 of the largest value (float32 rounding of a reordered sum)
            assert diff <= 1e-5 * scale, (pooling, roi_size, diff, scale)


def test_blocks_of_any_size_give_the_same_vectors(monkeypatch):
    """Tiny blocks: every chunk boundary (groups, rois, images) is crossed."""
    rng = np.random.default_rng(5)
    m = torch.from_numpy(rng.normal(size=(3, 16, 6, 9)).astype(np.float32))
    rois = _rois(rng, 200, 3, 6, 9)
    rois[100:150, [2, 4]] = torch.tensor([1.0, 4.5])     # many rois sharing one vertical extent
    whole = {p: frcnn._roi_vectors(m, rois, p, "align", 7) for p in ("max", "sum")}
    for chunk in (1, 16 * 49 * 3, 16 * 9 * 7 * 2 + 1):
        monkeypatch.setattr(frcnn, "_CHUNK", chunk)
        for pooling in ("max", "sum"):
            got = frcnn._roi_vectors(m, rois, pooling, "align", 7)
            # another blocking of the products rounds otherwise: float32 rounding, no more
            assert (got - whole[pooling]).abs().max() <= 1e-6 * whole[pooling].abs().max()
            want = _torchvision(m, rois, pooling, 7)
            assert (got - want).abs().max() <= 1e-5 * want.abs().max()


def test_one_roi_and_roi_pool_unchanged():
    rng = np.random.default_rng(6)
    m = torch.from_numpy(rng.normal(size=(1, 5, 4, 6)).astype(np.float32))
    rois = torch.tensor([[0, 0.3, 0.7, 5.1, 3.9]])
    assert frcnn._roi_vectors(m, rois[:0], "max", "align", 7).shape == (0, 5)
    np.testing.assert_allclose(frcnn._roi_vectors(m, rois, "max", "align", 7).numpy(),
                               _torchvision(m, rois, "max", 7).numpy(), rtol=1e-6)
    # RoIPool stays torchvision's
    from torchvision.ops import roi_pool

    shifted = rois.clone()
    shifted[:, 3:] -= 1
    want = roi_pool(m, shifted, 3, spatial_scale=1.0).amax(dim=(2, 3))
    assert torch.equal(frcnn._roi_vectors(m, rois, "max", "pool", 3), want)


def test_grid_extraction_matches_torchvision_on_real_size_images(tmp_path, monkeypatch):
    """frcnn's grid source (params.yaml's mobilenet_v2 features.18 at max_side 512: ~190 windows of a
    640x480 image on a 16 x 12 map, 1280 channels) and a query box: the regions against the same extraction
    pooled by torchvision."""
    require_weights()
    synthetic.generate(tmp_path, seed=0, objects=1, views=2, distractors=0, width=640, height=480,
                       jpeg_quality=85, queries=1)
    paths = [str(p) for p in sorted((tmp_path / "jpg").glob("*.jpg"))][:2]
    dims = [(640, 480)] * len(paths)
    extra = [np.array([[100.0, 80.0, 400.0, 380.0]]), None]
    for pooling in ("max", "sum"):
        ex = frcnn.RegionExtractor("grid", backbone="mobilenet_v2", layer="features.18", pooling=pooling,
                                   device="cpu")
        new, _ = frcnn.extract_images(ex, paths, dims, max_side=512, batch_size=2, extra=extra)
        with monkeypatch.context() as patch:
            patch.setattr(frcnn, "_align_vectors", _torchvision)
            old, _ = frcnn.extract_images(ex, paths, dims, max_side=512, batch_size=2, extra=extra)
        for a, b in zip(new, old):
            assert len(a.boxes) > 150 and a.regions.shape == b.regions.shape == (len(a.boxes), 1280)
            np.testing.assert_array_equal(a.vector, b.vector)
            for x, y in ((a.regions, b.regions), (a.extra, b.extra)):
                assert x.shape == y.shape and (not y.size or np.abs(x - y).max() <= 1e-5 * np.abs(y).max())
        assert new[0].extra.shape == (1, 1280)
