"""The CNN extractions run their networks as frozen TorchScript graphs on the CPU (faster: batch norm
folded, oneDNN's prepacked weights). This bounds what that changes against the eager network, on demo
images (the synthetic generator at the demo's 640x480, params.yaml's sizes, one thread): blcf's maps
(batches of 2), gem's multi-scale vectors (a box query too) and frcnn's grid vectors and regions each stay
within float16 rounding of the eager path's (the issue's bound), and the frozen path repeats its bytes."""

from __future__ import annotations

import numpy as np
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


def _extract_all(paths: list[str]) -> list[np.ndarray]:
    """Every array the three extractions store for the images."""
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
    return out


@pytest.fixture
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # compute.threads 1: params.yaml's and the committed dvc.lock's
    yield
    torch.set_num_threads(before)


def test_frozen_network_within_float16_rounding_of_eager(demo_images, monkeypatch, one_thread):
    require_weights()
    assert len(demo_images) == 4
    frozen = _extract_all(demo_images)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(frozen, _extract_all(demo_images)))  # repeatable
    monkeypatch.setattr(cnn, "FROZEN_ON_CPU", False)
    eager = _extract_all(demo_images)
    assert len(frozen) == len(eager) == 4 + 1 + 2 * 2 * 4
    changed = 0
    for a, b in zip(frozen, eager):
        assert a.dtype == b.dtype and a.shape == b.shape
        # float16 keeps 11 significant bits: a float32 array stays within half a unit in float16's last
        # place of its largest value (measured: 2e-6 to 7e-6 of it); blcf's maps, stored as float16, may
        # round either way: one unit
        bound = 2.0 ** -10 if a.dtype == np.float16 else 2.0 ** -11
        a, b = a.astype(np.float64), b.astype(np.float64)
        assert np.abs(a - b).max() <= bound * np.abs(b).max()
        changed += a.tobytes() != b.tobytes()
    assert changed  # the two runs did take the two paths


def test_frozen_only_on_the_cpu(monkeypatch):
    require_weights()
    import torch

    from instance_search.features import backbones

    net = backbones.load("mobilenet_v2", "features.18")[0]
    assert isinstance(cnn.prepare(net, "cpu"), torch.jit.ScriptModule)
    monkeypatch.setattr(cnn, "FROZEN_ON_CPU", False)
    eager = cnn.prepare(net, "cpu")
    assert eager.net is net  # the path a GPU takes: the eager module, autocast applies to it
