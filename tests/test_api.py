"""The Python API (instance_search.api) and batch queries (``instance-search query --queries``).

docs/api.md's example is run as it is written, in a folder laid out as it says (an index of a photo
folder built here from the mini benchmark's images); the batch tests use the mini sift index of
tests/helpers.py, the gem test its gem index.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import instance_search
from instance_search import cli
from instance_search.api import SearchIndex
from instance_search.errors import InstanceSearchError
from instance_search.index import load_index
from helpers import build_mini_cnn_index, build_mini_index, load_params_with_schema

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mini(tmp_path_factory):
    index_dir, params_file = build_mini_index(tmp_path_factory.getbasetemp() / "mini-index")
    return index_dir, params_file


def _doc_block(path: Path, language: str = "python") -> str:
    blocks = re.findall(rf"```{language}\n(.*?)```", path.read_text(encoding="utf-8"), re.S)
    assert len(blocks) == 1, f"{path}: expected one {language} block"
    return blocks[0]


def test_import_is_cheap_and_exports_the_api():
    """``import instance_search`` loads no numerical library; the API is there on first use."""
    code = ("import sys, instance_search; heavy = [m for m in ('numpy', 'cv2', 'torch', 'faiss', 'pandas') "
            "if m in sys.modules]; print(heavy, callable(instance_search.open_index))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[] True"
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        instance_search.nothing  # noqa: B018


def test_the_documented_example_runs(mini, tmp_path, monkeypatch, capsys):
    """docs/api.md's block, run in a folder holding what it names: my-index, query.jpg, more-photos/."""
    _, params_file = mini
    images = sorted((params_file.parent / "data" / "mini" / "jpg").glob("*.jpg"))
    assert len(images) >= 12
    for name, chosen in (("photos", images[:9]), ("more-photos", images[9:12])):
        (tmp_path / name).mkdir()
        for im in chosen:
            shutil.copy(im, tmp_path / name / im.name)
    shutil.copy(images[0], tmp_path / "query.jpg")  # 320x240: the example's box fits
    assert cli.main(["index", "--images", str(tmp_path / "photos"), "--method", "sift",
                     "--out", str(tmp_path / "my-index"), "--params", str(params_file)]) == 0
    capsys.readouterr()
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(_doc_block(REPO / "docs" / "api.md"), "docs/api.md", "exec"), scope)  # noqa: S102
    out = capsys.readouterr().out.splitlines()
    answer, whole, index = scope["answer"], scope["whole"], scope["index"]
    assert len(answer.hits) == 5 and answer.box == [40, 30, 300, 220] and answer.first_stage == "ls"
    assert answer.hits[0].name == images[0].stem and Path(answer.hits[0].path).is_file()  # itself first
    assert set(answer.timings) == {"extract", "rank", "rerank", "expand", "total"}
    assert whole.image == "<array>" and whole.box is None and whole.hits[0].name == images[0].stem
    assert scope["added"] == 3 and len(index) == 12 and out[-1] == "3 images added, 12 in the index"
    # the reloaded index answers with the added images too
    assert index.query(str(tmp_path / "more-photos" / images[10].name), results=1).hits[0].name.endswith(
        images[10].stem)


def test_an_array_query_answers_as_its_file(mini):
    index_dir, params_file = mini
    index = instance_search.open_index(index_dir, params=params_file)
    q = index.index.gnd.queries[0]
    path = index.index.image_path(q.image)
    by_file = index.query(path, q.box, results=5)
    by_array = index.query(cv2.imread(str(path)), q.box, results=5)
    assert by_array.hits[0].name == by_file.hits[0].name and by_array.image == "<array>"
    grey = index.query(cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), q.box, results=1)
    assert grey.hits[0].name == by_file.hits[0].name
    for bad in (np.zeros((10, 10, 4), np.uint8), np.zeros((10, 10, 3), np.float32)):
        with pytest.raises(InstanceSearchError, match="expected HxWx3 uint8"):
            index.query(bad)


def test_params_may_be_a_dict_or_the_checkout_default(mini):
    index_dir, params_file = mini
    params = load_params_with_schema(params_file)
    assert instance_search.open_index(index_dir, params=params).params_source == "params (dict)"
    assert instance_search.open_index(index_dir).params_source == str(REPO / "params.yaml")
    bad = dict(params, similarity={"weight_absent": "much"})
    with pytest.raises(InstanceSearchError, match=r"params \(dict\): key similarity.weight_absent"):
        instance_search.open_index(index_dir, params=bad)


def _write_queries(folder: Path, index_dir: Path, lines: list[str]) -> Path:
    """queries.csv in ``folder`` (images linked beside it: the paths are relative to the CSV)."""
    index = load_index(index_dir)
    (folder / "img").mkdir(exist_ok=True)
    for i in range(3):
        link = folder / "img" / f"q{i}.jpg"
        if not link.exists():
            link.symlink_to(index.image_path(index.gnd.queries[i].image))
    path = folder / "queries.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_batch_queries_print_one_json_line_each(mini, tmp_path, capsys):
    index_dir, params_file = mini
    index = load_index(index_dir)
    box = ",".join(f"{v:g}" for v in index.gnd.queries[1].box)
    csv = _write_queries(tmp_path, index_dir, ["image,x1,y1,x2,y2", f"img/q1.jpg,{box}", "img/q0.jpg,,,,", "",
                                               f"{tmp_path / 'img' / 'q2.jpg'},,,,"])
    argv = ["query", "--index", str(index_dir), "--queries", str(csv), "--params", str(params_file), "--results", "3"]
    assert cli.main(argv + ["--json"]) == 0
    captured = capsys.readouterr()
    answers = [json.loads(line) for line in captured.out.splitlines()]
    assert [Path(a["image"]).name for a in answers] == ["q1.jpg", "q0.jpg", "q2.jpg"]
    assert answers[0]["box"] == [float(v) for v in box.split(",")] and answers[1]["box"] is None
    assert all(len(a["hits"]) == 3 for a in answers) and "queries" in captured.err  # the progress bar
    # the same answers as one query at a time (the index and network loaded once make no difference)
    assert cli.main(["query", "--index", str(index_dir), "--image", str(tmp_path / "img" / "q1.jpg"), "--box", box,
                     "--params", str(params_file), "--results", "3", "--json"]) == 0
    single = json.loads(capsys.readouterr().out)
    assert [h["name"] for h in single["hits"]] == [h["name"] for h in answers[0]["hits"]]

    assert cli.main(argv) == 0  # the text answers, one after another
    text = capsys.readouterr().out
    assert text.count("\nindex ") == 3 and text.count("time: extract") == 3


def test_a_csv_of_image_paths_alone(mini, tmp_path, capsys):
    index_dir, params_file = mini
    csv = _write_queries(tmp_path, index_dir, ["image", "img/q0.jpg", "img/q1.jpg"])
    assert cli.main(["query", "--index", str(index_dir), "--queries", str(csv), "--params", str(params_file),
                     "--json", "--no-rerank", "--results", "1"]) == 0
    assert [json.loads(line)["reranked"] for line in capsys.readouterr().out.splitlines()] == [0, 0]


@pytest.mark.parametrize("rows, expected", [
    (["image,x1,y1,x2,y2", "img/q0.jpg,1,2,3"], "line 2: 4 fields, expected 5"),
    (["image,x1,y1,x2,y2", "img/q0.jpg,,,,", "img/q1.jpg,10,10,,40"], "line 3: box 10,10,,40: expected four numbers"),
    (["image,x1,y1,x2,y2", "img/q0.jpg,50,10,20,40"], "line 2: box [50.0, 10.0, 20.0, 40.0]: needs x1 < x2"),
    (["image,x1,y1,x2,y2", "img/q0.jpg,0,0,400,100"], "line 2: box [0.0, 0.0, 400.0, 100.0] is not inside q0.jpg"),
    (["image,x1,y1,x2,y2", "img/gone.jpg,,,,"], "line 2: "),
    (["image,x1,y1,x2,y2", "notes.txt,,,,"], "notes.txt: not a readable image"),
    (["name,box"], "line 1: expected the header image,x1,y1,x2,y2"),
    (["image,x1,y1,x2,y2"], "no query after the header"),
])
def test_a_bad_row_stops_before_any_answer(mini, tmp_path, capsys, rows, expected):
    index_dir, params_file = mini
    (tmp_path / "notes.txt").write_text("not a picture")
    csv = _write_queries(tmp_path, index_dir, rows)
    code = cli.main(["query", "--index", str(index_dir), "--queries", str(csv), "--params", str(params_file)])
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert code == 1 and captured.out == "" and len(err.splitlines()) == 1, captured
    assert err.startswith(f"error: {csv}: ") and expected in err, err
    if "gone" in rows[-1]:
        assert "image not found (paths are relative to" in err


@pytest.mark.parametrize("extra, message", [
    (["--image", "a.jpg"], "not allowed with argument --queries"),
    (["--box", "1,2,3,4"], "--box and --out go with --image"),
    ([], None),
])
def test_image_and_queries_exclude_each_other(mini, tmp_path, capsys, extra, message):
    index_dir, params_file = mini
    csv = _write_queries(tmp_path, index_dir, ["image", "img/q0.jpg"])
    argv = ["query", "--index", str(index_dir), "--params", str(params_file)]
    if message is None:  # neither: argparse asks for one
        with pytest.raises(SystemExit) as stop:
            cli.main(argv)
        assert stop.value.code == 2 and "one of the arguments --image --queries is required" in capsys.readouterr().err
        return
    if extra[0] == "--image":
        with pytest.raises(SystemExit) as stop:
            cli.main(argv + ["--queries", str(csv), *extra])
        assert stop.value.code == 2 and message in capsys.readouterr().err
    else:
        assert cli.main(argv + ["--queries", str(csv), *extra]) == 1
        assert message in capsys.readouterr().err


@pytest.fixture
def torch_threads():
    """One torch thread (as tests/test_query.py's), the count put back after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_gem_computes_only_the_vector_its_search_reads(mini, tmp_path_factory, torch_threads):
    """With a box and search.query ls, the whole image's vector (3 forward passes) is left out; the box's is
    the one the full encoding gives, and so is the answer."""
    index = load_index(build_mini_cnn_index(tmp_path_factory.getbasetemp() / "mini-index", "gem"))
    q = index.gnd.queries[0]
    im = index.gnd.images[q.image]
    box = (q.box[0] + 8, q.box[1] + 8, q.box[2] - 8, q.box[3] - 8)  # a real crop: not the whole image
    path = str(index.image_path(q.image))
    both = index.image_query(path, im.width, im.height, box)
    ls = index.image_query(path, im.width, im.height, box, searched="ls")
    gs = index.image_query(path, im.width, im.height, box, searched="gs")
    assert ls.image is None and np.array_equal(ls.box, both.box)
    assert gs.box is None and np.array_equal(gs.image, both.image)
    assert not np.array_equal(both.box, both.image)
    params = load_params_with_schema(mini[1])
    answer = SearchIndex(index, params, "mini").query(path, box, results=5)
    assert answer.first_stage == "ls" and answer.hits[0].score > 0
