"""The query command on a small index built here (a fresh clone has no demo index).

The index is built once per session by the pipeline's own step functions from a tiny synthetic
benchmark (``build_mini_index`` of tests/helpers.py; tests/test_web.py uses it too). Its extraction
keeps at most ``MINI_MAX_FEATURES`` keypoints while params.yaml says 2000, so a query that obeys the
index's own config is visible in its feature count.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from instance_search import cli, methods, versions
from instance_search.pipeline import steps
from instance_search.errors import InstanceSearchError
from instance_search.index import load_index
from instance_search.io import load_npz
from instance_search.query import format_text, parse_box, run_query, write_montage
from helpers import (MINI_MAX_FEATURES, MINI_RERANK_CANDIDATES, build_mini_cnn_index, build_mini_index,
                     load_params_with_schema)

REPO = Path(__file__).resolve().parents[1]
@pytest.fixture(scope="session")
def mini(tmp_path_factory):
    index_dir, params_file = build_mini_index(tmp_path_factory.getbasetemp() / "mini-index")
    return index_dir, params_file, load_index(index_dir)


def _run(index, params_file, image, box=None, **kw):
    return run_query(index, image, box, params=load_params_with_schema(params_file), params_source=str(params_file), **kw)


def test_index_reads_its_own_extraction_config(mini):
    index_dir, params_file, index = mini
    assert index.manifest["extraction"]["max_features"] == MINI_MAX_FEATURES  # params.yaml says 2000
    assert index.method is methods.get("sift") and index.n_database == 15
    q = index.gnd.queries[0]
    answer = _run(index, params_file, index.image_path(q.image), q.box, results=3)
    assert answer.n_features <= MINI_MAX_FEATURES and answer.params_source == str(params_file)


def test_box_query_ranks_and_reranks_with_windows(mini):
    _, params_file, index = mini
    q = index.gnd.queries[0]
    answer = _run(index, params_file, index.image_path(q.image), q.box, results=5)
    assert answer.first_stage == "ls" and 0 < answer.n_box_features < answer.n_features <= MINI_MAX_FEATURES
    assert answer.hits[0].image == q.image
    # verified results carry the box mapped into them (the query's own image at least), the others none
    assert answer.reranked == MINI_RERANK_CANDIDATES and answer.hits[0].window is not None
    assert [h.score for h in answer.hits] == sorted((h.score for h in answer.hits), reverse=True)
    assert set(answer.timings) == {"extract", "rank", "rerank", "expand", "total"}


def test_box_query_finds_the_other_views_of_its_object(mini, tmp_path_factory, torch_threads):
    """Not just itself (the query image is its own good image): its other view, among 14 other images, in
    the top 3 for every query (by chance: 3 times in 14 each, (3/14)^3 = 1 in 100 for all three). The
    frcnn index: on these tiny 320x240 images with 64 words the bags of words are too weak for a strict
    check (tests/test_photos.py checks every method on real photos)."""
    base = tmp_path_factory.getbasetemp() / "mini-index"
    index = load_index(build_mini_cnn_index(base, "frcnn"))
    for q in index.gnd.queries:
        answer = _run(index, mini[1], index.image_path(q.image), q.box, results=6)
        others = set(q.positives) - {q.image}
        assert others, q.name
        found = [h.image for h in answer.hits if h.image != q.image][:3]
        assert set(found) & others, (q.name, [h.name for h in answer.hits])


@pytest.mark.parametrize("similarity", ["cosine", "weighted_cosine"])
def test_query_agrees_with_the_pipeline_steps(mini, tmp_path, similarity):
    """The same image and box give the rank and rerank steps' rankings, scores and windows."""
    index_dir, params_file, index = mini
    params = load_params_with_schema(params_file)
    gnd = index_dir.parent / "gnd.json"
    rank, rerank = tmp_path / "rank.npz", tmp_path / "rerank.npz"
    steps.rank(params, similarity, gnd, index_dir / "index", rank)
    steps.rerank(params, similarity, gnd, index_dir / "index", rank, rerank)
    first, final = load_npz(rank), load_npz(rerank)
    for qi, q in enumerate(index.gnd.queries):
        kw = dict(similarity=similarity, results=index.n_database)
        plain = _run(index, params_file, index.image_path(q.image), q.box, rerank=False, **kw)
        assert [h.image for h in plain.hits] == first["ranks"][qi].tolist()
        answer = _run(index, params_file, index.image_path(q.image), q.box, **kw)
        # equal scores may swap places (last-bit differences between a batch and one query); scores may not
        np.testing.assert_allclose([h.score for h in answer.hits], final["scores"][qi], atol=1e-6)
        boxes = dict(zip(final["ranks"][qi][:MINI_RERANK_CANDIDATES].tolist(), final["boxes"][qi].tolist()))
        for h in answer.hits[:MINI_RERANK_CANDIDATES]:  # no window (None) where the step stored NaN
            if h.window is None:
                assert np.isnan(boxes[h.image]).all(), h.image
            else:
                assert h.window == pytest.approx(boxes[h.image])
        assert any(h.window is not None for h in answer.hits), q.name


def test_first_stage_follows_the_params_query_mode(mini, tmp_path):
    """search.query: gs ranks by the whole image, as the rank step does; the windows still use the box."""
    index_dir, params_file, index = mini
    params = yaml.safe_load(params_file.read_text())
    params["sift"]["search"]["query"] = "gs"
    shutil.copytree(params_file.parent / "workflow", tmp_path / "workflow")
    gs_file = tmp_path / "params.yaml"
    gs_file.write_text(yaml.safe_dump(params))
    q = index.gnd.queries[0]
    gs = _run(index, gs_file, index.image_path(q.image), q.box, results=15, rerank=False)
    whole = _run(index, params_file, index.image_path(q.image), None, results=15, rerank=False)
    assert gs.first_stage == "gs" and [h.image for h in gs.hits] == [h.image for h in whole.hits]
    assert gs.params_source == str(gs_file)


@pytest.fixture
def torch_threads():
    """One torch thread here (much faster on a busy CI machine); loading a CNN index changes the count
    for the whole process, so it is put back for later tests."""
    import torch  # a required dependency: imported, never skipped

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("method", ["blcf", "frcnn", "gem", "xfeat"])
def test_cnn_query_agrees_with_the_rank_step(mini, tmp_path_factory, tmp_path, torch_threads, method):
    """The CNN methods through the same machinery: the index's method reproduces the stored query vectors."""
    base = tmp_path_factory.getbasetemp() / "mini-index"
    index_dir = build_mini_cnn_index(base, method)
    params_file = base / "params.yaml"
    index = load_index(index_dir)
    params = load_params_with_schema(params_file)
    rank = tmp_path / "rank.npz"
    steps.rank(params, "cosine", index_dir.parent / "gnd.json", index_dir / "index", rank)
    first = load_npz(rank)
    for qi, q in enumerate(index.gnd.queries):
        answer = _run(index, params_file, index.image_path(q.image), q.box, results=index.n_database, rerank=False)
        assert [h.image for h in answer.hits] == first["ranks"][qi].tolist()
        np.testing.assert_allclose([h.score for h in answer.hits], first["scores"][qi], atol=1e-5)
    # and from the command line, re-ranked and expanded as the params say
    q = index.gnd.queries[0]
    assert cli.main(["query", "--index", str(index_dir), "--image", str(index.image_path(q.image)), "--json",
                     "--box", ",".join(f"{v:g}" for v in q.box), "--params", str(params_file)]) == 0


def test_whole_image_query_and_text(mini):
    _, _, index = mini
    answer = _run(index, mini[1], index.image_path(0), None, results=3, rerank=False)
    assert answer.first_stage == "gs" and answer.n_box_features == answer.n_features
    assert answer.reranked == 0 and all(h.window is None for h in answer.hits)
    text = format_text(answer)
    assert "not re-ranked" in text and len(text.splitlines()) == 3 + 3 + 1


def test_a_box_without_features_falls_back_as_the_pipeline_does(mini):
    _, _, index = mini
    answer = _run(index, mini[1], index.image_path(0), (0, 0, 1, 1), results=3)
    assert answer.box_fallback and answer.n_box_features == answer.n_features  # sift: the whole image
    assert "note: no feature inside the box; the query uses the whole image" in format_text(answer)


def test_cli_prints_results_and_writes_a_montage(mini, tmp_path, capsys):
    index_dir, params_file, index = mini
    q = index.gnd.queries[1]
    box = ",".join(f"{v:g}" for v in q.box)
    out = tmp_path / "montage.png"
    argv = ["query", "--index", str(index_dir), "--image", str(index.image_path(q.image)), "--box", box,
            "--params", str(params_file), "--results", "4", "--similarity", "weighted_cosine"]
    assert cli.main(argv + ["--out", str(out)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"montage: {out}" and lines[-2].startswith("time: extract")
    assert len([ln for ln in lines if ln[:4].strip().isdigit()]) == 4
    picture = cv2.imread(str(out))
    assert picture is not None and picture.shape[1] > picture.shape[0] > 100 and picture.std() > 10

    assert cli.main(argv + ["--json", "--no-rerank"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["similarity"] == "weighted_cosine" and answer["reranked"] == 0 and len(answer["hits"]) == 4
    assert answer["box"] == list(q.box) and answer["hits"][0]["window"] is None


def test_montage_needs_an_image_suffix(mini, tmp_path):
    _, _, index = mini
    answer = _run(index, mini[1], index.image_path(0), None, results=1, rerank=False)
    with pytest.raises(InstanceSearchError, match=r"\.png or \.jpg"):
        write_montage(answer, tmp_path / "m.gif")
    assert not (tmp_path / "m.gif").exists()


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "10,10,5,20", "0,0,nan,9", ""])
def test_bad_box_text(text):
    with pytest.raises(InstanceSearchError, match="box"):
        parse_box(text)


def _copy_index(index_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "results" / "mini" / "sift"
    shutil.copytree(index_dir.parent, copy.parent)
    return copy


def _broken_index(index_dir: Path, tmp_path: Path, missing: str) -> Path:
    copy = _copy_index(index_dir, tmp_path)
    (copy / missing).unlink()
    return copy


def test_an_index_built_under_other_versions_warns_once(mini, tmp_path, caplog, capsys):
    """The manifest records the byte-deciding libraries' versions; loading it under others warns once per
    index (the page reloads indexes), naming each package and both versions, and still answers."""
    index_dir, params_file, index = mini
    assert index.manifest["versions"] == versions.installed() and "numpy" in index.manifest["versions"]
    copy = _copy_index(index_dir, tmp_path)
    manifest = json.loads((copy / "index" / "manifest.json").read_text())
    manifest["versions"].update(numpy="1.0.0", pillow="9.9.9")
    (copy / "index" / "manifest.json").write_text(json.dumps(manifest))
    caplog.set_level(logging.WARNING, logger="instance_search.versions")
    again = load_index(copy)
    load_index(copy)
    warned = [r.getMessage() for r in caplog.records if r.name == "instance_search.versions"]
    here = versions.installed()
    assert len(warned) == 1, warned
    assert f"numpy 1.0.0 (built) vs {here['numpy']} (here)" in warned[0]
    assert f"pillow 9.9.9 (built) vs {here['pillow']} (here)" in warned[0] and "torch" not in warned[0]
    q = again.gnd.queries[0]
    assert _run(again, params_file, again.image_path(q.image), q.box, results=3).hits
    caplog.clear()
    load_index(index_dir)  # built here: nothing to say
    assert not [r for r in caplog.records if r.name == "instance_search.versions"]


@pytest.mark.parametrize("change, expected", [
    ("edited index file", "changed since the index was written"),
    ("swapped model", "not the model this index was encoded with"),
    ("other extraction", "extracted with other settings"),
    ("other image list", "built for 15 images"),
    ("bad params", "sift.rerank.candidates"),
])
def test_a_stale_index_or_bad_params_is_refused_in_one_line(mini, tmp_path, capsys, change, expected):
    """What changed after the index was written is caught at load (or at the first query, for the model)."""
    index_dir, params_file, index = mini
    copy, params_arg = _copy_index(index_dir, tmp_path), params_file
    if change == "edited index file":
        arrays = dict(np.load(copy / "index" / "bow.npz"))
        arrays["idf"] = arrays["idf"] * 2
        np.savez(copy / "index" / "bow.npz", **arrays)
    elif change == "swapped model":
        arrays = dict(np.load(copy / "model.npz"))
        np.savez(copy / "model.npz", centroids=arrays["centroids"][::-1].copy())
    elif change == "other extraction":
        manifest = json.loads((copy / "features" / "manifest.json").read_text())
        manifest["config"]["max_features"] = 999
        (copy / "features" / "manifest.json").write_text(json.dumps(manifest))
    elif change == "other image list":
        gnd = json.loads((copy.parent / "gnd.json").read_text())
        gnd["images"].append(dict(gnd["images"][-1], name="extra"))
        gnd["n_database"] += 1
        (copy.parent / "gnd.json").write_text(json.dumps(gnd))
    elif change == "bad params":
        params = yaml.safe_load(params_file.read_text())
        params["sift"]["rerank"]["candidates"] = "many"
        shutil.copytree(params_file.parent / "workflow", tmp_path / "p" / "workflow")
        params_arg = tmp_path / "p" / "params.yaml"
        params_arg.write_text(yaml.safe_dump(params))
    code = cli.main(["query", "--index", str(copy), "--image", str(index.image_path(0)), "--params", str(params_arg)])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err, err


@pytest.mark.parametrize("case, expected", [
    ("box format", "expected four numbers"),
    ("box outside", "is not inside"),
    ("missing index", "index folder not found"),
    ("missing bow", "bow.npz: missing"),
    ("no results", "--results 0: must be at least 1"),
    ("unreadable image", "not a readable image"),
    ("missing image", "image not found"),
    ("truncated image", "truncated or corrupt JPEG"),
])
def test_bad_input_is_one_line_and_exit_1(mini, tmp_path, capsys, case, expected):
    index_dir, params_file, index = mini
    image, box, index_arg = str(index.image_path(0)), "10,10,100,100", str(index_dir)
    if case == "box format":
        box = "10;10;100;100"
    elif case == "box outside":
        box = "10,10,400,100"  # the images are 320 wide
    elif case == "missing index":
        index_arg = str(tmp_path / "nowhere")
    elif case == "missing bow":
        index_arg = str(_broken_index(index_dir, tmp_path, "index/bow.npz"))
    elif case == "unreadable image":
        image = str(tmp_path / "notes.txt")
        Path(image).write_text("not a picture")
    elif case == "truncated image":
        data = index.image_path(0).read_bytes()
        image = str(tmp_path / "half.jpg")
        Path(image).write_bytes(data[:len(data) // 2])
    elif case == "missing image":
        image = str(tmp_path / "gone.jpg")
    extra = ["--results", "0"] if case == "no results" else []
    code = cli.main(["query", "--index", index_arg, "--image", image, "--box", box, "--params", str(params_file),
                     *extra])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1 and err.startswith("error: ") and expected in err


def test_module_entry_point_exit_status(mini):
    """The real process: one line on stderr, nothing on stdout, exit status 1."""
    index_dir, params_file, index = mini
    bad = subprocess.run([sys.executable, "-m", "instance_search.cli", "query", "--index", str(index_dir),
                          "--image", str(index.image_path(0)), "--params", str(params_file), "--box", "5,5,5,5"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and bad.stdout == ""
    assert bad.stderr.strip() == "error: box [5.0, 5.0, 5.0, 5.0]: needs x1 < x2 and y1 < y2 (top-left, then bottom-right corner)"
