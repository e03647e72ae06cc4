"""The Sculptures6k adapter: Oxford-style lists per half, the test half evaluated by default."""

from __future__ import annotations

import shutil

import pytest

from instance_search import groundtruth
from instance_search.datasets.prepare import prepare
from instance_search.datasets.sculptures import EVALUATED_HALF, load_sculptures
from instance_search.errors import InstanceSearchError
from helpers import write_jpeg, write_oxford_gt  # the Oxford-format fixture writers


@pytest.fixture
def sculptures(tmp_path):
    """Two halves with disjoint images and their own queries, as the dataset is distributed."""
    root = tmp_path / "sculptures6k"
    halves = {"train": ["Henry_Moore_Arch_Leg_0000", "Henry_Moore_Arch_Leg_0001", "Rodin_Thinker_0002"],
              "test": ["Rodin_Stanford_0250", "Rodin_Stanford_0251", "Henry_Moore_Knife_0252", "Rodin_Kiss_0253"]}
    for half, names in halves.items():
        for i, name in enumerate(names):
            write_jpeg(root / "images" / half / f"{name}.jpg", 32 + 4 * i, 24, seed=i)
    write_oxford_gt(root / "gt" / "train", "arch_leg_1", "Henry_Moore_Arch_Leg_0000 1 1 20 20",
        good=["Henry_Moore_Arch_Leg_0001"])
    write_oxford_gt(root / "gt" / "test", "stanford_1", "Rodin_Stanford_0250 0 0 32 24", good=["Rodin_Stanford_0250"],
        ok=["Rodin_Stanford_0251"], junk=["Rodin_Kiss_0253"])
    write_oxford_gt(root / "gt" / "test", "knife_1", "Henry_Moore_Knife_0252 4 2 30 20", good=["Henry_Moore_Knife_0252"])
    return root


def test_the_test_half_is_evaluated_by_default(sculptures):
    assert EVALUATED_HALF == "test"
    gnd = load_sculptures("sculptures6k", sculptures / "images", sculptures / "gt",
                          expect={"images": 4, "queries": 2})
    assert [im.name for im in gnd.images] == ["Henry_Moore_Knife_0252", "Rodin_Kiss_0253",
                                             "Rodin_Stanford_0250", "Rodin_Stanford_0251"]
    knife, stanford = gnd.queries
    assert (knife.name, knife.image, knife.good) == ("knife_1", 0, (0,))
    assert (stanford.good, stanford.ok, stanford.junk) == ((2,), (3,), (1,))


def test_the_train_half_on_request(sculptures):
    gnd = load_sculptures("s", sculptures / "images", sculptures / "gt", half="train")
    assert gnd.n_database == 3 and [q.name for q in gnd.queries] == ["arch_leg_1"]


def test_prepare_reads_format_sculptures(sculptures, tmp_path):
    params = {"datasets": {"sc": {"format": "sculptures", "images": str(sculptures / "images"),
                                  "groundtruth": str(sculptures / "gt")}}}
    prepare(params, "sc", tmp_path / "gnd.json")
    assert len(groundtruth.load(tmp_path / "gnd.json").queries) == 2


BROKEN = {
    "unknown half": ({"half": "val"}, None, "datasets.s.half: 'val'"),
    "half folder missing": ({}, lambda r: shutil.rmtree(r / "images" / "test"), "test: folder of the test half not found"),
    "ground truth missing": ({}, lambda r: shutil.rmtree(r / "gt" / "test"), "test: folder of the test half not found"),
    "count mismatch": ({"expect": {"images": 3170, "queries": 70}}, None, "found 4 images, expected 3170"),
    # a train image named in a test list: the halves are separate databases
    "image of the other half": ({}, lambda r: (r / "gt" / "test" / "knife_1_ok.txt").write_text(
        "Rodin_Thinker_0002\n"), "knife_1_ok.txt: image Rodin_Thinker_0002 is not in the database"),
    "box outside the image": ({}, lambda r: (r / "gt" / "test" / "knife_1_query.txt").write_text(
        "Henry_Moore_Knife_0252 4 2 30 40\n"), "knife_1_query.txt: box 4 2 30 40"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_bad_input_is_a_one_line_error(sculptures, case):
    kw, damage, expected = BROKEN[case]
    if damage:
        damage(sculptures)
    with pytest.raises(InstanceSearchError) as exc:
        load_sculptures("s", sculptures / "images", sculptures / "gt", **kw)
    assert "\n" not in str(exc.value) and expected in str(exc.value)


# --- the single-file layout (sculptures6k_evaluation/sculptures6k_gt.txt, as NelleV/SORBB reads it) --

def _single_file(root, lines, where="sculptures6k_evaluation/sculptures6k_gt.txt"):
    path = root / "gt1" / where
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(["sculptures6k ground truth: query, box, positives, ignore", *lines]) + "\n")
    return path


# The fixture's three queries in one file: name, box line, positives, ignore (the train query first).
SINGLE = ["Henry_Moore_Arch_Leg_0000.jpg", "1 1 20 20", "Henry_Moore_Arch_Leg_0001.jpg", "",
          "Rodin_Stanford_0250.jpg", "0 0 32 24", "Rodin_Stanford_0250.jpg Rodin_Stanford_0251.jpg", "Rodin_Kiss_0253.jpg",
          "Henry_Moore_Knife_0252.jpg", "4 2 30 20", "Henry_Moore_Knife_0252.jpg", ""]


def test_single_file_layout_is_chosen_by_what_is_on_disk(sculptures):
    _single_file(sculptures, SINGLE)
    gnd = load_sculptures("sculptures6k", sculptures / "images", sculptures / "gt1", expect={"images": 4, "queries": 2})
    assert [im.name for im in gnd.images] == ["Henry_Moore_Knife_0252", "Rodin_Kiss_0253",
                                             "Rodin_Stanford_0250", "Rodin_Stanford_0251"]
    knife, stanford = gnd.queries  # named after their query image; sorted
    assert (knife.name, knife.image, knife.good, knife.box) == ("Henry_Moore_Knife_0252", 0, (0,), (4.0, 2.0, 30.0, 20.0))
    # positives on one line are good (the file has no ok class); the ignore line is junk
    assert (stanford.good, stanford.ok, stanford.junk) == ((2, 3), (), (1,))
    lists = load_sculptures("sculptures6k", sculptures / "images", sculptures / "gt")
    assert [q.box for q in gnd.queries] == [q.box for q in lists.queries]  # the same boxes as the per-query lists
    train = load_sculptures("s", sculptures / "images", sculptures / "gt1", half="train")
    assert [q.name for q in train.queries] == ["Henry_Moore_Arch_Leg_0000"] and train.n_database == 3


def test_single_file_given_directly_and_without_box_lines(sculptures, tmp_path):
    lines = list(SINGLE)
    lines[5] = "-"  # not a box: the whole query image is the query
    path = _single_file(sculptures, lines, where="sculptures6k_gt.txt")
    params = {"datasets": {"sc": {"format": "sculptures", "images": str(sculptures / "images"), "groundtruth": str(path)}}}
    gnd = prepare(params, "sc", tmp_path / "gnd.json")
    stanford = gnd.queries[1]
    assert stanford.name == "Rodin_Stanford_0250" and stanford.box == (0.0, 0.0, 32.0, 24.0)  # its 32x24 image
    assert groundtruth.load(tmp_path / "gnd.json").to_dict() == gnd.to_dict()


SINGLE_BROKEN = {
    "lines not a multiple of 4": (SINGLE[:-1], "11 lines after the header, expected 4 a query"),
    "positive of the other half": (SINGLE[:10] + ["Henry_Moore_Knife_0252.jpg Rodin_Thinker_0002.jpg", ""],
                                   "line 12: image Rodin_Thinker_0002 is not in"),
    "no positive": (SINGLE[:10] + ["", ""], "line 12: query Henry_Moore_Knife_0252 has no positive image"),
    "no query of this half": (SINGLE[:4], "none of its 1 queries is an image of"),
}


@pytest.mark.parametrize("case", sorted(SINGLE_BROKEN))
def test_single_file_bad_input_is_a_one_line_error(sculptures, case):
    lines, expected = SINGLE_BROKEN[case]
    _single_file(sculptures, lines)
    with pytest.raises(InstanceSearchError) as exc:
        load_sculptures("s", sculptures / "images", sculptures / "gt1")
    assert "\n" not in str(exc.value) and expected in str(exc.value)


def test_neither_layout_names_both(sculptures):
    (sculptures / "gt1").mkdir()
    with pytest.raises(InstanceSearchError) as exc:
        load_sculptures("s", sculptures / "images", sculptures / "gt1")
    assert "folder of the test half not found" in str(exc.value)
    assert "sculptures6k_evaluation/sculptures6k_gt.txt" in str(exc.value)
