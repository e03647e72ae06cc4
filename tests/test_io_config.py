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


def test_swap_dir_exchanges_a_folder_in_one_step(tmp_path):
    """The new folder takes the old one's place; the old one is gone afterwards, and nothing else is left."""
    from instance_search import io as iio

    final, new = tmp_path / "index", tmp_path / ".index.new"
    final.mkdir()
    (final / "a.txt").write_text("old")
    new.mkdir()
    (new / "a.txt").write_text("new")
    iio.swap_dir(new, final)
    assert (final / "a.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index"]


def test_the_exchange_is_one_call_where_the_system_has_it(tmp_path):
    import pytest

    from instance_search import io as iio

    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "from_a").touch()
    if not iio._renameat2_exchange(a, b):
        pytest.skip("this system or file system has no renameat2 exchange: swap_dir uses two renames")
    assert (b / "from_a").exists() and not (a / "from_a").exists()


def test_swap_dir_into_a_new_place(tmp_path):
    from instance_search import io as iio

    new = tmp_path / ".x.new"
    new.mkdir()
    iio.swap_dir(new, tmp_path / "x")
    assert (tmp_path / "x").is_dir() and not new.exists()
