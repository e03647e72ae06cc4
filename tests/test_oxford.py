"""The Oxford-format adapter on hand-made fixtures: parsing, layouts, and one-line errors."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from instance_search import groundtruth
from instance_search.datasets.oxford import load_oxford
from instance_search.datasets.prepare import prepare
from instance_search.errors import InstanceSearchError
from helpers import write_jpeg, write_oxford_gt

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def oxford(tmp_path) -> Path:
    """Flat Oxford layout: 5 images, two queries with the oxc1_ prefix, lists written unsorted."""
    root = tmp_path / "ox"
    for i, name in enumerate(["bridge_000002", "bridge_000001", "tower_000001", "tower_000002", "random_000001"]):
        write_jpeg(root / "jpg" / f"{name}.jpg", 40 + 8 * i, 30, seed=i)
    write_oxford_gt(root / "gt", "bridge_1", "oxc1_bridge_000001 2.5 3 30.25 20", good=["bridge_000002", "bridge_000001"],
        junk=["random_000001"])
    write_oxford_gt(root / "gt", "tower_1", "oxc1_tower_000002 0 0 64 30", good=["tower_000002"], ok=["tower_000001"])
    return root


def _load(root: Path, **kw):
    return load_oxford("ox", root / "jpg", root / "gt", **kw)


def test_parses_names_indices_boxes_and_sorted_lists(oxford):
    gnd = _load(oxford)
    names = [im.name for im in gnd.images]
    assert names == ["bridge_000001", "bridge_000002", "random_000001", "tower_000001", "tower_000002"]
    assert [(im.width, im.height) for im in gnd.images] == [(48, 30), (40, 30), (72, 30), (56, 30), (64, 30)]
    assert gnd.n_database == 5 and gnd.root == (oxford / "jpg").as_posix()
    bridge, tower = gnd.queries
    assert (bridge.name, names[bridge.image], bridge.box) == ("bridge_1", "bridge_000001", (2.5, 3.0, 30.25, 20.0))
    assert bridge.good == (0, 1) and bridge.ok == () and bridge.junk == (2,)
    assert (tower.name, names[tower.image], tower.good, tower.ok) == ("tower_1", "tower_000002", (4,), (3,))


def test_prepare_writes_loadable_json(oxford, tmp_path):
    params = {"datasets": {"ox": {"format": "oxford", "images": str(oxford / "jpg"), "groundtruth": str(oxford / "gt")}}}
    prepare(params, "ox", tmp_path / "out" / "gnd.json")
    again = groundtruth.load(tmp_path / "out" / "gnd.json")
    assert again.to_dict() == _load(oxford).to_dict()


def test_paris_layout_with_subfolders_and_skip_list(tmp_path, caplog):
    root = tmp_path / "paris"
    for landmark in ("louvre", "eiffel"):
        for i in (1, 2):
            write_jpeg(root / "jpg" / landmark / f"paris_{landmark}_00000{i}.jpg", 32, 24, seed=i)
    corrupt = root / "jpg" / "louvre" / "paris_louvre_000136.jpg"
    corrupt.write_text("<html>not an image</html>")  # as the real Paris archive has
    write_oxford_gt(root / "gt", "louvre_1", "paris_louvre_000001 1 1 20 20",
        good=["paris_louvre_000002", "paris_louvre_000136"], junk=["paris_eiffel_000001"])
    with caplog.at_level(logging.INFO):
        gnd = _load(root, skip=["paris_louvre_000136"])
    assert [im.path for im in gnd.images] == [
        "eiffel/paris_eiffel_000001.jpg", "eiffel/paris_eiffel_000002.jpg",
        "louvre/paris_louvre_000001.jpg", "louvre/paris_louvre_000002.jpg"]
    (q,) = gnd.queries
    assert (q.image, q.good, q.junk) == (2, (3,), (0,))  # the skipped image is dropped from the lists too
    assert any("left out 1 known-corrupt" in r.getMessage() for r in caplog.records)
    with pytest.raises(InstanceSearchError, match="paris_louvre_000136.jpg"):
        _load(root)  # not skipped: the corrupt file is named


def test_tiny_box_overshoot_is_clipped(oxford):
    (oxford / "gt" / "bridge_1_query.txt").write_text("oxc1_bridge_000001 -0.5 0 48.7 30.4\n")
    assert _load(oxford).queries[0].box == (0.0, 0.0, 48.0, 30.0)


def _truncate(root):
    path = root / "jpg" / "tower_000001.jpg"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


BROKEN = {
    "name not in database": (lambda r: (r / "gt" / "bridge_1_junk.txt").write_text("ghost_000001\n"), "bridge_1_junk.txt"),
    "missing ok file": (lambda r: (r / "gt" / "tower_1_ok.txt").unlink(), "tower_1_ok.txt"),
    "query image missing": (lambda r: (r / "jpg" / "tower_000002.jpg").unlink(), "tower_1_query.txt"),
    "box outside": (lambda r: (r / "gt" / "tower_1_query.txt").write_text("oxc1_tower_000002 0 0 66 30\n"),
                    "tower_1_query.txt"),
    "empty box": (lambda r: (r / "gt" / "tower_1_query.txt").write_text("oxc1_tower_000002 9 0 9 30\n"),
                  "tower_1_query.txt"),
    "no positives": (lambda r: [(r / "gt" / f"tower_1_{k}.txt").write_text("") for k in ("good", "ok")],
                     "tower_1_good.txt"),
    "malformed line": (lambda r: (r / "gt" / "bridge_1_query.txt").write_text("oxc1_bridge_000001 1 2 x 4\n"),
                       "bridge_1_query.txt: line 1"),
    "two query lines": (lambda r: (r / "gt" / "bridge_1_query.txt").write_text("oxc1_bridge_000001 1 2 3 4\nfoo 1 2 3 4\n"),
                        "bridge_1_query.txt: line 2"),
    "empty query file": (lambda r: (r / "gt" / "bridge_1_query.txt").write_text(""), "bridge_1_query.txt"),
    "no query files": (lambda r: [p.unlink() for p in (r / "gt").glob("*_query.txt")], "gt: no *_query.txt files"),
    "no gt folder": (lambda r: shutil.rmtree(r / "gt"), "gt: ground-truth folder not found"),
    "truncated jpeg": (_truncate, "tower_000001.jpg"),
    "html as jpeg": (lambda r: (r / "jpg" / "random_000001.jpg").write_text("<html></html>"), "random_000001.jpg"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_bad_input_is_a_one_line_error_naming_the_file(oxford, case):
    damage, expected = BROKEN[case]
    damage(oxford)
    with pytest.raises(InstanceSearchError) as exc:
        _load(oxford)
    message = str(exc.value)
    assert "\n" not in message
    assert expected in message


def _params_file(tmp_path: Path, root: Path) -> Path:
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"]["ox"] = {"format": "oxford", "source": "local", "images": str(root / "jpg"),
                                "groundtruth": str(root / "gt")}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    return path


def _prepare_script(params: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "workflow/scripts/step.py"), "prepare", "--params", str(params),
                           "--dataset", "ox", "--gnd", str(out)], capture_output=True, text=True,
                          cwd=params.parent)


def test_script_writes_gnd(oxford, tmp_path):
    out = tmp_path / "results" / "gnd.json"
    proc = _prepare_script(_params_file(tmp_path, oxford), out)
    assert proc.returncode == 0, proc.stderr
    assert len(groundtruth.load(out).queries) == 2


def test_script_fails_cleanly_and_keeps_earlier_output(oxford, tmp_path):
    _truncate(oxford)
    out = tmp_path / "results" / "gnd.json"
    out.parent.mkdir()
    out.write_text("earlier result\n")
    proc = _prepare_script(_params_file(tmp_path, oxford), out)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "tower_000001.jpg" in errors[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert out.read_text() == "earlier result\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["gnd.json"]


def test_expected_counts_are_checked_only_when_given(oxford):
    assert len(_load(oxford, expect={"images": 5, "database": 5, "queries": 2}).images) == 5
    assert len(_load(oxford, expect=None).images) == 5
    with pytest.raises(InstanceSearchError) as exc:
        _load(oxford, expect={"images": 5063, "queries": 55})
    assert str(exc.value) == (f"{oxford / 'gt'}: found 5 images, expected 5063 (datasets.ox.expect.images); "
                              "check that the download is complete and is the official release")


def test_prepare_checks_the_counts_of_every_format(tmp_path):
    """params datasets.<name>.expect reaches the loader; UKBench's is checked by prepare itself."""
    jpg = tmp_path / "uk" / "jpg"
    for i in range(8):
        write_jpeg(jpg / f"ukbench{i:05d}.jpg", 32, 24, seed=i)
    (tmp_path / "uk" / "groundtruth.csv").write_text(
        "image,object\n" + "".join(f"ukbench{i:05d}.jpg,{i // 4}\n" for i in range(8)))
    cfg = {"format": "ukbench", "images": str(jpg), "groundtruth": str(tmp_path / "uk" / "groundtruth.csv")}
    prepare({"datasets": {"uk": {**cfg, "expect": {"images": 8, "queries": 8}}}}, "uk", tmp_path / "ok.json")
    with pytest.raises(InstanceSearchError, match="found 8 images, expected 10200"):
        prepare({"datasets": {"uk": {**cfg, "expect": {"images": 10200}}}}, "uk", tmp_path / "bad.json")
    assert not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("cfg, expected", [
    ({"format": "pkl"}, "datasets.d.format: unknown format 'pkl'"),
    ({"format": "revisited", "images": "x"}, "datasets.d.groundtruth missing"),
])
def test_prepare_names_the_bad_key(tmp_path, cfg, expected):
    with pytest.raises(InstanceSearchError, match=expected):
        prepare({"datasets": {"d": cfg}}, "d", tmp_path / "gnd.json")
