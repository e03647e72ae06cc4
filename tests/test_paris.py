"""The Paris6k adapter: per-landmark folders, the known-corrupt files skipped and counted, counts."""

from __future__ import annotations

import logging
import shutil

import pytest

from instance_search import groundtruth
from instance_search.datasets.paris import CORRUPT, load_paris
from instance_search.datasets.prepare import prepare
from instance_search.errors import InstanceSearchError
from helpers import write_jpeg, write_oxford_gt  # the Oxford-format fixture writers


@pytest.fixture
def paris(tmp_path):
    """paris/<landmark>/paris_<landmark>_NNNNNN.jpg as the archives unpack, two of the real corrupt files
    (saved HTML pages) among them, and the corrupt names also in a good and a junk list."""
    root = tmp_path / "paris"
    for landmark in ("louvre", "triomphe"):
        for i in (1, 2, 3):
            write_jpeg(root / "images" / "paris" / landmark / f"paris_{landmark}_00000{i}.jpg", 40, 30, seed=i)
    for name in ("paris_louvre_000136", "paris_triomphe_000662"):
        (root / "images" / "paris" / name.split("_")[1] / f"{name}.jpg").write_text("<html>moved</html>")
    write_oxford_gt(root / "gt", "louvre_1", "paris_louvre_000001 2 3 30 25",
        good=["paris_louvre_000001", "paris_louvre_000002", "paris_louvre_000136"], ok=["paris_louvre_000003"],
        junk=["paris_triomphe_000662"])
    write_oxford_gt(root / "gt", "triomphe_1", "paris_triomphe_000002 0 0 40 30",
        good=["paris_triomphe_000001", "paris_triomphe_000002"], junk=["paris_triomphe_000003"])
    return root


def _load(root, **kw):
    return load_paris("paris6k", root / "images", root / "gt", **kw)


def test_the_published_corrupt_list_has_twenty_names():
    assert len(set(CORRUPT)) == 20 and "paris_pompidou_000640" in CORRUPT


def test_corrupt_files_are_skipped_on_purpose_and_counted(paris, caplog):
    with caplog.at_level(logging.INFO):
        gnd = _load(paris, expect={"images": 6, "database": 6, "queries": 2})
    assert [im.path for im in gnd.images][:2] == ["paris/louvre/paris_louvre_000001.jpg",
                                                   "paris/louvre/paris_louvre_000002.jpg"]
    assert gnd.n_database == len(gnd.images) == 6
    louvre, triomphe = gnd.queries
    assert (louvre.name, louvre.image, louvre.box) == ("louvre_1", 0, (2.0, 3.0, 30.0, 25.0))
    assert louvre.good == (0, 1) and louvre.ok == (2,) and louvre.junk == ()  # corrupt names dropped
    assert (triomphe.image, triomphe.good, triomphe.junk) == (4, (3, 4), (5,))
    assert any("left out 2 known-corrupt" in r.getMessage() for r in caplog.records)


def test_prepare_reads_format_paris(paris, tmp_path):
    params = {"datasets": {"paris6k": {"format": "paris", "images": str(paris / "images"),
                                  "groundtruth": str(paris / "gt"), "expect": {"images": 6, "queries": 2}}}}
    prepare(params, "paris6k", tmp_path / "gnd.json")
    assert groundtruth.load(tmp_path / "gnd.json").to_dict() == _load(paris).to_dict()


def _html(root, name):
    (root / "images" / "paris" / "louvre" / f"{name}.jpg").write_text("<html></html>")


BROKEN = {
    "count mismatch": ({"expect": {"images": 6392, "queries": 55}}, None, "found 6 images, expected 6392"),
    "query count mismatch": ({"expect": {"queries": 55}}, None, "found 2 queries, expected 55"),
    "unknown count key": ({"expect": {"photos": 1}}, None, "datasets.paris6k.expect.photos"),
    "corrupt file not on the list": ({}, lambda r: _html(r, "paris_louvre_000999"), "paris_louvre_000999.jpg"),
    "unknown image in a list": ({}, lambda r: (r / "gt" / "triomphe_1_ok.txt").write_text("paris_eiffel_000001\n"),
                                "triomphe_1_ok.txt: image paris_eiffel_000001 is not in the database"),
    "box outside the image": ({}, lambda r: (r / "gt" / "louvre_1_query.txt").write_text(
        "paris_louvre_000001 2 3 45 25\n"), "louvre_1_query.txt: box 2 3 45 25"),
    "missing ground truth": ({}, lambda r: shutil.rmtree(r / "gt"), "ground-truth folder not found"),
    "missing list file": ({}, lambda r: (r / "gt" / "louvre_1_junk.txt").unlink(), "louvre_1_junk.txt"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_bad_input_is_a_one_line_error(paris, case):
    kw, damage, expected = BROKEN[case]
    if damage:
        damage(paris)
    with pytest.raises(InstanceSearchError) as exc:
        _load(paris, **kw)
    assert "\n" not in str(exc.value) and expected in str(exc.value)
