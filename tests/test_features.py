"""SIFT extraction, the sharded store (resume, config change), codebook determinism."""

import cv2
import numpy as np
import pytest

from instance_search.retrieval import vocabulary
from instance_search.errors import InstanceSearchError
from instance_search.features import sift
from instance_search.features.store import FeatureStore, build_store


def _textured(path, w=320, h=240, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.integers(0, 255, (h // 8, w // 8), dtype=np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    cv2.imwrite(str(path), img)
    return path


def test_sift_positions_are_in_original_pixels(tmp_path):
    path = _textured(tmp_path / "a.png")
    det = sift.make_detector(500, 0.04)
    xy_full, d_full = sift.extract(str(path), det, 0)
    xy_half, _ = sift.extract(str(path), det, 160)  # detected at half size, mapped back
    assert d_full.dtype == np.uint8 and d_full.shape[1] == 128
    assert len(xy_full) > 20 and len(xy_half) > 5
    for xy in (xy_full, xy_half):
        assert (xy[:, 0] >= 0).all() and (xy[:, 0] < 320).all() and (xy[:, 1] < 240).all()
    # each half-size keypoint lies near some full-size keypoint
    dist = np.linalg.norm(xy_half[:, None] - xy_full[None], axis=2).min(axis=1)
    assert np.median(dist) < 3


def test_rootsift_is_hellinger():
    raw = np.array([[4, 0, 12] + [0] * 125], np.uint8)
    x = sift.descriptors(raw, rootsift=True)
    np.testing.assert_allclose(x[0, :3], [0.5, 0, np.sqrt(0.75)], rtol=1e-6)
    assert np.linalg.norm(x[0]) == pytest.approx(1)
    assert np.linalg.norm(sift.descriptors(raw, rootsift=False)[0]) == pytest.approx(1)


def _fake_extract(i):
    rng = np.random.default_rng(i)
    n = 3 + i % 4
    return rng.random((n, 2)).astype(np.float32) * 100, rng.integers(0, 255, (n, 8)).astype(np.uint8)


def test_store_roundtrip_and_resume(tmp_path):
    out = tmp_path / "features"
    calls = []

    def failing(i):
        calls.append(i)
        if i == 7:
            raise KeyboardInterrupt  # the run is killed while extracting image 7
        return _fake_extract(i)

    with pytest.raises(KeyboardInterrupt):
        build_store(out, 10, failing, shard_size=3, config={"a": 1})
    assert not out.exists()  # nothing looks finished
    calls.clear()
    build_store(out, 10, lambda i: (calls.append(i), _fake_extract(i))[1], shard_size=3, config={"a": 1})
    assert calls == [6, 7, 8, 9]  # the two finished shards were kept
    store = FeatureStore(out)
    assert store.n_images == 10 and store.n_features == sum(len(_fake_extract(i)[0]) for i in range(10))
    for i in range(10):
        xy, d = store.image(i)
        np.testing.assert_array_equal(d, _fake_extract(i)[1])


def test_store_discards_shards_of_another_config(tmp_path):
    out = tmp_path / "features"
    partial = tmp_path / "features.partial"
    with pytest.raises(KeyboardInterrupt):
        build_store(out, 6, lambda i: _fake_extract(i) if i < 4 else (_ for _ in ()).throw(KeyboardInterrupt),
                    shard_size=2, config={"a": 1})
    assert (partial / "shard-00000.npz").exists()
    calls = []
    build_store(out, 6, lambda i: (calls.append(i), _fake_extract(i))[1], shard_size=2, config={"a": 2})
    assert calls == list(range(6))


def test_unfinished_store_is_an_error(tmp_path):
    with pytest.raises(InstanceSearchError, match="manifest.json"):
        FeatureStore(tmp_path)


def test_kmeans_is_deterministic_and_assignment_is_nearest():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3000, 16)).astype(np.float32)
    c1 = vocabulary.train(x, 20, 10, seed=5)
    c2 = vocabulary.train(x, 20, 10, seed=5)
    assert c1.tobytes() == c2.tobytes()
    words = vocabulary.Assigner(c1)(x[:100])
    brute = np.argmin(((x[:100, None] - c1[None]) ** 2).sum(-1), axis=1)
    np.testing.assert_array_equal(words, brute)


def test_codebook_larger_than_sample_is_an_error():
    with pytest.raises(InstanceSearchError, match="codebook.words"):
        vocabulary.train(np.zeros((10, 4), np.float32), 20, 5, seed=0)
