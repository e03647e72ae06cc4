"""The CNN extractions run their networks in channels-last layout on the CPU with one thread (faster);
this proves the features are byte for byte those of the previous NCHW path on demo images (the
synthetic generator at the demo's 640x480, params.yaml's sizes and compute.threads 1): blcf's maps
(batches of 2), gem's multi-scale vectors (a box query too) and frcnn's grid vectors and regions. With
more threads the bytes would differ, so the layout stays NCHW there."""

from __future__ import annotations

import pytest
from conftest import require_weights

from instance_search.datasets import synthetic
from instance_search.features import cnn, frcnn, gem


@pytest.fixture(scope="module")
def demo_images(tmp_path_factory) -> list[str]:
    out = tmp_path_factory.mktemp("demo") / "data"
    synthetic.generate(out, seed=0, objects=2, views=2, distractors=1, width=640, height=480, jpeg_quality=85,
                       queries=1)
    return [str(p) for p in sorted((out / "jpg").glob("*.jpg"))][:4]


def _extract_all(paths: list[str]) -> tuple[list, bool]:
    """Every array the three extractions store for the images, and whether the network was channels-last."""
    import torch

    ex = cnn.Extractor("mobilenet_v2", "features.18", "cpu", False)
    dims = [(640, 480)] * len(paths)
    out = [d for _, d in cnn.extract_images(ex, paths, dims, max_side=640, batch_size=2, workers=0)]
    out.append(gem.describe(ex, paths, [None, (100.0, 80.0, 400.0, 380.0)] + [None] * (len(paths) - 2),
                            scales=[1.0, 0.7071, 0.5], p=3.0, max_side=640, workers=0))
    for pooling in ("max", "sum"):
        regions = frcnn.RegionExtractor("grid", backbone="mobilenet_v2", layer="features.18", pooling=pooling,
                                        device="cpu")
        got, _ = frcnn.extract_images(regions, paths, dims, max_side=512, batch_size=2, workers=0)
        out += [a for r in got for a in (r.vector, r.regions)]
    weight = next(p for p in ex.net.parameters() if p.dim() == 4)
    return out, weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


@pytest.fixture
def torch_threads():
    """Sets torch's intra-op thread count for one test, restored after it."""
    import torch

    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


def test_channels_last_gives_the_bytes_of_nchw(demo_images, monkeypatch, torch_threads):
    require_weights()
    assert len(demo_images) == 4
    torch_threads(1)  # compute.threads 1: params.yaml's and the committed dvc.lock's
    fast, was_channels_last = _extract_all(demo_images)
    monkeypatch.setattr(cnn, "CHANNELS_LAST_ON_CPU", False)
    before, still = _extract_all(demo_images)
    assert was_channels_last and not still  # the two runs did take the two paths
    assert len(fast) == len(before) == 4 + 1 + 2 * 2 * 4
    for a, b in zip(fast, before):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.tobytes() == b.tobytes()


def test_more_threads_keep_nchw(torch_threads):
    require_weights()
    torch_threads(2)
    assert not cnn.Extractor("mobilenet_v2", "features.18", "cpu", False).net.channels_last
    torch_threads(1)
    assert cnn.Extractor("mobilenet_v2", "features.18", "cpu", False).net.channels_last
