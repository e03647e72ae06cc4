"""The fetch step's local and generated sources: sha256 recorded once, checked afterwards."""

import json

import pytest

from instance_search.datasets import fetch
from instance_search.errors import InstanceSearchError


def _local(tmp_path):
    images = tmp_path / "copy" / "jpg"
    images.mkdir(parents=True)
    (images / "a.jpg").write_bytes(b"one")
    (images / "b.jpg").write_bytes(b"two")
    gt = tmp_path / "copy" / "groundtruth.csv"
    gt.write_text("image,group\n")
    return {"seed": 0, "datasets": {"mine": {"source": "local", "format": "ukbench", "images": str(images),
                                             "groundtruth": str(gt)}}}, images


def test_local_copy_is_recorded_then_checked(tmp_path):
    params, images = _local(tmp_path)
    lock = tmp_path / "lock.json"
    first = fetch.fetch(params, "mine", tmp_path / "data", lock)
    entry = json.loads(lock.read_text())["mine/local"]
    assert entry["sha256"] == first["sha256"] and first["files"] == 3
    manifest = tmp_path / "data" / "mine" / "manifest.json"
    stamp = manifest.stat().st_mtime_ns
    fetch.fetch(params, "mine", tmp_path / "data", lock)
    assert manifest.stat().st_mtime_ns == stamp  # unchanged content: not rewritten
    (images / "b.jpg").write_bytes(b"changed")
    with pytest.raises(InstanceSearchError) as exc:
        fetch.fetch(params, "mine", tmp_path / "data", lock)
    assert "mine/local" in str(exc.value) and str(lock) in str(exc.value) and "\n" not in str(exc.value)
    assert json.loads(manifest.read_text())["sha256"] == first["sha256"]  # earlier result untouched


def test_missing_local_folder_names_it(tmp_path):
    params, images = _local(tmp_path)
    params["datasets"]["mine"]["images"] = str(tmp_path / "nowhere")
    with pytest.raises(InstanceSearchError, match="nowhere: not found"):
        fetch.fetch(params, "mine", tmp_path / "data", tmp_path / "lock.json")


def test_tree_digest_depends_on_names_and_content(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a").write_bytes(b"1")
    d1 = fetch.tree_digest(tmp_path / "x")
    (tmp_path / "x" / "a").rename(tmp_path / "x" / "b")
    d2 = fetch.tree_digest(tmp_path / "x")
    assert d1[0] != d2[0] and d1[1:] == d2[1:] == (1, 1)


def test_distractors_must_name_a_downloadable_dataset(tmp_path):
    params, _ = _local(tmp_path)
    params["datasets"]["mine"]["distractors"] = str(tmp_path / "holiday-snaps")
    with pytest.raises(InstanceSearchError, match="distractors: .*holiday-snaps is not a folder named after"):
        fetch.fetch(params, "mine", tmp_path / "data", tmp_path / "lock.json")
