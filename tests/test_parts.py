"""Extraction split into part jobs (compute.parts) and gathered: every file of the feature folder
is the byte one job writes, for every method and for counts that do and do not divide the shards;
a gather refuses parts that are missing, from another configuration or another count."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from conftest import require_weights

from instance_search.pipeline import steps
from instance_search.datasets import synthetic
from instance_search.datasets.prepare import prepare
from instance_search.errors import InstanceSearchError
from instance_search.features.parts import image_range

REPO = Path(__file__).resolve().parents[1]
SMALL = {"max_side": 160, "workers": 0}
SETTINGS = {"sift": {"max_side": 160, "shard_size": 2}, "blcf": {**SMALL, "shard_size": 2},
            "frcnn": {**SMALL, "shard_size": 2}, "gem": {**SMALL, "scales": [1.0]},
            "xfeat": {"max_side": 160, "shard_size": 2, "device": "cpu"}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """12 images (3 objects x 3 views + 3 distractors) and params that extract them quickly."""
    out = tmp_path_factory.mktemp("parts")
    synthetic.generate(out / "data", seed=4, objects=3, views=3, distractors=3, width=240, height=180, jpeg_quality=85)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"]["tiny"] = {"source": "local", "format": "oxford", "images": str(out / "data/jpg"),
                                  "groundtruth": str(out / "data/gt")}
    for method, settings in SETTINGS.items():
        params[method]["extract"].update(settings)
    prepare(params, "tiny", out / "gnd.json")
    return out, params


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def extract_in_parts(params, method, gnd, out: Path, n: int) -> Path:
    params = {**params, "compute": {**params["compute"], "parts": {"tiny": n}}}
    for i in range(n):
        steps.extract_part(params, method, gnd, out / "features.parts" / f"{i}-of-{n}", i, n)
    steps.extract(params, "tiny", method, gnd, out / "features", parts=out / "features.parts")
    return out / "features"


def test_parts_deal_out_whole_shards_in_order():
    assert [image_range(12, 2, (i, 4)) for i in range(4)] == [range(0, 2), range(2, 6), range(6, 8), range(8, 12)]
    assert [len(image_range(5, 2, (i, 8))) for i in range(8)] == [0, 0, 2, 0, 0, 2, 0, 1]
    assert image_range(7, 3, None) == range(7)
    with pytest.raises(InstanceSearchError, match="part 4 of 4"):
        image_range(7, 3, (4, 4))


@pytest.mark.parametrize("method", ["sift", "blcf", "frcnn", "gem", "xfeat"])
def test_four_parts_gather_into_the_bytes_of_one_job(tiny, tmp_path, method):
    if method not in ("sift", "xfeat"):  # xfeat's weights come with its package
        require_weights("mobilenet_v2")
    out, params = tiny
    gnd = out / "gnd.json"
    steps.extract(params, "tiny", method, gnd, tmp_path / "whole")
    whole = files(tmp_path / "whole")
    assert whole and "manifest.json" in whole
    counts = (4, 8) if method == "sift" else (4,)  # 8 parts of 6 shards: some parts hold none
    for n in counts:
        gathered = files(extract_in_parts(params, method, gnd, tmp_path / f"in{n}", n))
        assert gathered.keys() == whole.keys(), (method, n)
        differ = [name for name in whole if whole[name] != gathered[name]]
        assert not differ, (method, n, differ)


@pytest.mark.parametrize("method", ["sift", "blcf", "xfeat"])
def test_bags_of_words_encode_in_parts_into_the_bytes_of_one_job(tiny, tmp_path, method):
    """The nearest words in 4 part jobs, the word weights at the gathering: the index one job writes."""
    if method == "blcf":
        require_weights("mobilenet_v2")
    out, params = tiny
    gnd = out / "gnd.json"
    params = {**params, method: {**params[method], "codebook": {**params[method]["codebook"], "words": 16,
                                                                "sample": 5000, "pca_dim": 0}}}
    steps.extract(params, "tiny", method, gnd, tmp_path / "features")
    steps.codebook(params, method, gnd, tmp_path / "features", tmp_path / "model.npz")
    steps.encode(params, "tiny", method, gnd, tmp_path / "features", tmp_path / "model.npz", tmp_path / "index")
    parted = {**params, "compute": {**params["compute"], "parts": {"tiny": 4}}}
    for i in range(4):
        steps.encode_part(parted, method, gnd, tmp_path / "features", tmp_path / "model.npz",
                          tmp_path / "index.parts" / f"{i}-of-4", i, 4)
    steps.encode(parted, "tiny", method, gnd, tmp_path / "features", tmp_path / "model.npz", tmp_path / "gathered",
                 parts=tmp_path / "index.parts")
    assert files(tmp_path / "gathered") == files(tmp_path / "index")
    with pytest.raises(InstanceSearchError, match="gem encodes in one job"):
        steps.encode_part(parted, "gem", gnd, tmp_path / "features", tmp_path / "model.npz", tmp_path / "x", 0, 4)


def test_a_gather_refuses_missing_foreign_or_miscounted_parts(tiny, tmp_path):
    out, params = tiny
    gnd = out / "gnd.json"
    extract_in_parts(params, "sift", gnd, tmp_path, 3)
    parted = {**params, "compute": {**params["compute"], "parts": {"tiny": 3}}}
    folder = tmp_path / "features.parts"
    shutil.rmtree(folder / "1-of-3")
    with pytest.raises(InstanceSearchError, match="not a finished extraction part"):
        steps.extract(parted, "tiny", "sift", gnd, tmp_path / "again", parts=folder)
    other = {**parted, "sift": {**parted["sift"], "extract": {**parted["sift"]["extract"], "max_features": 50}}}
    steps.extract_part(other, "sift", gnd, folder / "1-of-3", 1, 3)
    with pytest.raises(InstanceSearchError, match="different settings"):
        steps.extract(parted, "tiny", "sift", gnd, tmp_path / "again", parts=folder)
    steps.extract_part(parted, "sift", gnd, folder / "1-of-3", 0, 3)  # part 0's images in part 1's folder
    with pytest.raises(InstanceSearchError, match="are not 0..2 of 3"):
        steps.extract(parted, "tiny", "sift", gnd, tmp_path / "again", parts=folder)
    assert not (tmp_path / "again").exists()
