"""The embedded benchmark: deterministic, in Oxford's format, with every category present."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest
import yaml

from instance_search.datasets import synthetic
from instance_search.datasets.oxford import load_oxford
from instance_search.errors import InstanceSearchError

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(objects=3, views=4, distractors=5, width=320, height=240, jpeg_quality=85, queries=1)


def _files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synthetic") / "data"
    synthetic.generate(out, seed=7, **SMALL)
    return out


def test_two_generations_are_byte_identical(small, tmp_path):
    again = tmp_path / "again"
    synthetic.generate(again, seed=7, **SMALL)
    assert _files(again) == _files(small)


def test_another_seed_gives_other_images(small, tmp_path):
    other = tmp_path / "other"
    synthetic.generate(other, seed=8, **SMALL)
    assert _files(other)["jpg/obj01_v0.jpg"] != _files(small)["jpg/obj01_v0.jpg"]


def test_counts_and_names(small):
    jpgs = sorted(p.name for p in (small / "jpg").iterdir())
    assert len(jpgs) == 3 * 4 + 5
    assert "obj01_v0.jpg" in jpgs and "obj03_v3.jpg" in jpgs and "distractor_004.jpg" in jpgs
    gts = sorted(p.name for p in (small / "gt").iterdir())
    assert gts == sorted(f"obj0{i}_1_{kind}.txt" for i in (1, 2, 3) for kind in ("query", "good", "ok", "junk"))
    assert "seed=7" in (small / "README.txt").read_text()
    for p in (small / "jpg").iterdir():
        assert cv2.imread(str(p)).shape == (240, 320, 3)


def test_query_files_use_oxford_syntax_and_boxes_lie_inside(small):
    for qfile in sorted((small / "gt").glob("*_query.txt")):
        text = qfile.read_text()
        m = re.fullmatch(r"oxc1_(obj\d\d_v0) (\S+) (\S+) (\S+) (\S+)\n", text)
        assert m, text
        x1, y1, x2, y2 = map(float, m.groups()[1:])
        assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
        assert (x2 - x1) * (y2 - y1) > 0.05 * 320 * 240  # the query shows a sizeable object


def test_every_view_has_one_category_and_all_categories_occur(small):
    for i in (1, 2, 3):
        obj = f"obj0{i}"
        lists = {k: (small / "gt" / f"{obj}_1_{k}.txt").read_text().split() for k in ("good", "ok", "junk")}
        assert all(lst == sorted(lst) for lst in lists.values())
        named = sorted(n for lst in lists.values() for n in lst)
        assert named == [f"{obj}_v{v}" for v in range(4)]  # each view exactly once, no distractor
        assert f"{obj}_v0" in lists["good"]  # the query image is in the database and is good, as in Oxford
        assert lists["ok"] and lists["junk"], lists


def test_plan_spreads_categories():
    import numpy as np

    plan = synthetic._plan(np.random.default_rng(0), 8)
    assert plan[0] == "query" and sorted(plan[1:]) == ["good"] * 4 + ["junk"] + ["ok"] * 2
    assert synthetic._plan(np.random.default_rng(0), 2) == ["query", "good"]


def test_oxford_adapter_round_trips(small):
    gnd = load_oxford("synthetic", small / "jpg", small / "gt")
    assert len(gnd.images) == gnd.n_database == 17
    assert [q.name for q in gnd.queries] == ["obj01_1", "obj02_1", "obj03_1"]
    names = [im.name for im in gnd.images]
    for q in gnd.queries:
        obj = q.name[:5]
        assert names[q.image] == f"{obj}_v0" and q.image in q.good
        assert sorted(names[i] for i in q.good + q.ok + q.junk) == [f"{obj}_v{v}" for v in range(4)]
        qline = (small / "gt" / f"{q.name}_query.txt").read_text().split()
        assert list(q.box) == [float(v) for v in qline[1:]]


def test_every_good_view_up_to_the_count_is_a_query(small, tmp_path):
    """queries > 1: an object's first good views, in view order, each with the object's lists; the images
    are those of one query a object (only the ground truth grows)."""
    out = tmp_path / "many"
    counts = synthetic.generate(out, seed=7, **{**SMALL, "queries": 3})
    assert {k: v for k, v in _files(out).items() if k.startswith("jpg/")} == \
        {k: v for k, v in _files(small).items() if k.startswith("jpg/")}
    gnd = load_oxford("synthetic", out / "jpg", out / "gt")
    names = [im.name for im in gnd.images]
    assert counts["queries"] == len(gnd.queries) > 3
    for i in (1, 2, 3):
        obj = f"obj0{i}"
        good = (out / "gt" / f"{obj}_1_good.txt").read_text().split()
        mine = [q for q in gnd.queries if q.name.startswith(obj + "_")]
        assert [q.name for q in mine] == [f"{obj}_{k}" for k in range(1, len(mine) + 1)]
        assert [names[q.image] for q in mine] == good[:3]  # sorted names: view order (views < 10)
        assert all(q.good == mine[0].good and q.junk == mine[0].junk and q.ok == mine[0].ok for q in mine)
        for q in mine:
            x1, y1, x2, y2 = q.box
            assert 0 <= x1 < x2 <= 320 and 0 <= y1 < y2 <= 240
    with pytest.raises(InstanceSearchError, match="queries >= 1"):
        synthetic.generate(tmp_path / "none", seed=7, **{**SMALL, "queries": 0})


def test_output_is_replaced_whole_and_no_temporary_folder_remains(small, tmp_path):
    out = tmp_path / "data"
    (out / "jpg").mkdir(parents=True)
    (out / "jpg" / "stale.jpg").write_bytes(b"old")
    synthetic.generate(out, seed=7, **SMALL)
    assert not (out / "jpg" / "stale.jpg").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]


def test_too_many_objects_is_a_clear_error(tmp_path):
    with pytest.raises(InstanceSearchError, match="objects=500") as exc:
        synthetic.generate(tmp_path / "x", seed=0, **{**SMALL, "objects": 500})
    assert "\n" not in str(exc.value)
    assert not list(tmp_path.iterdir())


def test_script_matches_the_library(small, tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["seed"] = 7
    params["datasets"]["synthetic"]["generator"] = dict(SMALL)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    out = tmp_path / "data" / "synthetic"
    proc = subprocess.run(
        [sys.executable, str(REPO / "workflow/scripts/step.py"), "fetch", "--params", str(tmp_path / "params.yaml"),
         "--dataset", "synthetic", "--manifest", str(tmp_path / "data/synthetic/manifest.json")],
        capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    manifest = out / "manifest.json"
    assert manifest.is_file()
    manifest.unlink()
    assert _files(out) == _files(small)  # byte-identical across processes too
