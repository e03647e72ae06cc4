"""Atomic writes, checked image reading, params validation."""

import cv2
import numpy as np
import pytest
import yaml

from instance_search import io
from instance_search.config import load_params
from instance_search.errors import InstanceSearchError


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    io.write_text(target, "old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_npz_bytes_depend_only_on_content(tmp_path):
    a = np.arange(10, dtype=np.int32)
    io.save_npz(tmp_path / "1.npz", b=a, a=a * 2)
    io.save_npz(tmp_path / "2.npz", a=a * 2, b=a)
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()
    assert io.load_npz(tmp_path / "1.npz")["a"].tolist() == (a * 2).tolist()


def test_truncated_jpeg_is_named(tmp_path):
    ok, buf = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))
    path = tmp_path / "cut.jpg"
    path.write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(InstanceSearchError, match="cut.jpg"):
        io.read_image(path)
    (tmp_path / "text.jpg").write_text("<html>not an image</html>")
    with pytest.raises(InstanceSearchError, match="text.jpg"):
        io.read_image(tmp_path / "text.jpg")


def test_wrong_param_type_names_the_key(tmp_path, repo, params):
    params["sift"]["codebook"]["words"] = "abc"
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(InstanceSearchError) as err:
        load_params(path, repo / "workflow/schemas/params.schema.json")
    msg = str(err.value)
    assert "sift.codebook.words" in msg and "\n" not in msg


def test_unknown_key_is_rejected(tmp_path, repo, params):
    params["sift"]["codebok"] = {}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(InstanceSearchError, match="codebok"):
        load_params(path, repo / "workflow/schemas/params.schema.json")


def test_default_params_are_valid(repo):
    load_params(repo / "params.yaml", repo / "workflow/schemas/params.schema.json")
