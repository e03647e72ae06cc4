"""The query command on a small index built here (a fresh clone has no demo index).

The index is built once per session by the pipeline's own step functions from a tiny synthetic
benchmark (``build_mini_index``; tests/test_web.py uses it too). Its extraction keeps at most
``MAX_FEATURES`` keypoints while params.yaml says 2000, so a query that obeys the index's own
config is visible in its feature count.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from instance_search import cli, stages
from instance_search.datasets import synthetic
from instance_search.datasets.prepare import prepare
from instance_search.errors import InstanceSearchError
from instance_search.index import IMAGE_EXTRACTORS, load_index
from instance_search.io import load_npz
from instance_search.query import format_text, parse_box, run_query, write_montage

REPO = Path(__file__).resolve().parents[1]
MAX_FEATURES = 300
RERANK_TOP = 8
MINI = dict(objects=3, views=3, distractors=6, width=320, height=240, jpeg_quality=90)


def build_mini_index(base: Path) -> tuple[Path, Path]:
    """(index folder, params file) of a ``mini`` dataset under ``base``; reused once finished."""
    index, params_file = base / "results" / "mini" / "sift", base / "params.yaml"
    if (index / "assign.npz").is_file():
        return index, params_file
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    # the embedded benchmark's entry, smaller and elsewhere (whatever else the schema asks of it stays)
    mini = dict(params["datasets"]["synthetic"], images=str(base / "data" / "mini" / "jpg"),
                groundtruth=str(base / "data" / "mini" / "gt"))
    mini["generator"] = dict(mini["generator"], **MINI)
    params["datasets"] = {"mini": mini}
    synthetic.generate(base / "data" / "mini", seed=params["seed"], **mini["generator"])
    params["run"]["datasets"] = ["mini"]
    sift = params["sift"]
    sift["extract"]["max_features"] = MAX_FEATURES
    sift["codebook"]["words"] = 64
    sift["rerank"]["top"] = RERANK_TOP
    # the schema beside the params file, so that the query validates it as in a checkout
    shutil.copytree(REPO / "workflow" / "schemas", base / "workflow" / "schemas", dirs_exist_ok=True)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    gnd = base / "results" / "mini" / "gnd.json"
    prepare(params, "mini", gnd)
    stages.extract(params, "sift", gnd, index / "features")
    stages.train_codebook(params, "sift", index / "features", gnd, index / "codebook.npz")
    stages.encode(params, "sift", gnd, index / "features", index / "codebook.npz", index / "bow.npz",
                  index / "assign.npz")
    return index, params_file


def build_mini_blcf_index(base: Path) -> Path:
    """results/mini/blcf beside the sift index (same images); skips without the CNN's weights."""
    build_mini_index(base)
    index = base / "results" / "mini" / "blcf"
    if (index / "assign.npz").is_file():
        return index
    from instance_search.features import backbones

    params = yaml.safe_load((base / "params.yaml").read_text())
    if "blcf" not in params:
        pytest.skip("params.yaml has no blcf section yet")
    try:
        backbones.check_weights(params["blcf"]["extract"]["backbone"])
    except InstanceSearchError as exc:
        pytest.skip(f"no CNN weights for the blcf query test: {exc}")
    params["blcf"]["codebook"]["words"] = 64
    params["blcf"]["extract"].update(device="cpu", workers=0, max_side=224)  # small and quick
    gnd = base / "results" / "mini" / "gnd.json"
    stages.extract(params, "blcf", gnd, index / "features")
    stages.train_codebook(params, "blcf", index / "features", gnd, index / "codebook.npz")
    stages.encode(params, "blcf", gnd, index / "features", index / "codebook.npz", index / "bow.npz",
                  index / "assign.npz")
    (base / "params-blcf.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return index


@pytest.fixture(scope="session")
def mini(tmp_path_factory):
    index_dir, params_file = build_mini_index(tmp_path_factory.getbasetemp() / "mini-index")
    return index_dir, params_file, load_index(index_dir, params_file)


def test_index_reads_its_own_extraction_config(mini):
    _, params_file, index = mini
    assert index.extraction["max_features"] == MAX_FEATURES  # params.yaml says 2000
    assert index.params["rerank"]["top"] == RERANK_TOP and index.params_source == str(params_file)
    assert {"sift", "blcf"} <= set(IMAGE_EXTRACTORS) and index.method == "sift" and index.n_database == 15


def test_box_query_finds_its_object(mini):
    _, _, index = mini
    q = index.gnd.queries[0]
    answer = run_query(index, index.image_path(q.image), q.box, top=5)
    assert answer.first_stage == "ls" and 0 < answer.n_box_features < answer.n_features <= MAX_FEATURES
    assert answer.hits[0].image == q.image and answer.hits[0].score > 0.5
    assert {h.image for h in answer.hits[:3]} & set(q.positives)
    assert answer.reranked == RERANK_TOP and all(h.window is not None for h in answer.hits)
    assert [h.score for h in answer.hits] == sorted((h.score for h in answer.hits), reverse=True)
    assert set(answer.timings) == {"extract", "rank", "rerank", "total"}


@pytest.mark.parametrize("similarity", ["cosine", "weighted_cosine"])
def test_query_agrees_with_the_pipeline_steps(mini, tmp_path, similarity):
    """The same image and box give the rank and rerank steps' rankings, scores and windows."""
    index_dir, params_file, index = mini
    params = yaml.safe_load(params_file.read_text())
    gnd = index_dir.parent / "gnd.json"
    rank, rerank = tmp_path / "rank.npz", tmp_path / "rerank.npz"
    stages.rank(params, "sift", similarity, gnd, index_dir / "bow.npz", index_dir / "assign.npz", rank)
    stages.rerank(params, "sift", similarity, gnd, index_dir / "bow.npz", index_dir / "assign.npz", rank, rerank)
    first, final = load_npz(rank), load_npz(rerank)
    for qi, q in enumerate(index.gnd.queries):
        kw = dict(similarity=similarity, top=index.n_database)
        plain = run_query(index, index.image_path(q.image), q.box, rerank=False, **kw)
        assert [h.image for h in plain.hits] == first["ranks"][qi].tolist()
        answer = run_query(index, index.image_path(q.image), q.box, **kw)
        # equal scores may swap places (last-bit differences between a batch and one query); scores may not
        np.testing.assert_allclose([h.score for h in answer.hits], final["scores"][qi], atol=1e-6)
        boxes = dict(zip(final["ranks"][qi][:RERANK_TOP].tolist(), final["boxes"][qi].tolist()))
        for h in answer.hits[:RERANK_TOP]:
            assert h.window == pytest.approx(boxes[h.image])


def test_first_stage_follows_the_params_query_mode(mini, tmp_path):
    """search.query: gs ranks by the whole image, as the rank step does; the windows still use the box."""
    index_dir, params_file, index = mini
    params = yaml.safe_load(params_file.read_text())
    params["sift"]["search"]["query"] = "gs"
    gs_file = tmp_path / "params.yaml"
    gs_file.write_text(yaml.safe_dump(params))
    q = index.gnd.queries[0]
    gs = run_query(load_index(index_dir, gs_file), index.image_path(q.image), q.box, top=15, rerank=False)
    whole = run_query(index, index.image_path(q.image), None, top=15, rerank=False)
    assert gs.first_stage == "gs" and [h.image for h in gs.hits] == [h.image for h in whole.hits]
    assert gs.params_source == str(gs_file)


@pytest.fixture
def torch_threads():
    """One torch thread here (much faster on a busy CI machine); loading a CNN index changes the count
    for the whole process, so it is put back for later tests."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_blcf_query_agrees_with_the_rank_step(mini, tmp_path_factory, tmp_path, torch_threads):
    """The CNN method through the same machinery: its registry entry reproduces the stored features."""
    base = tmp_path_factory.getbasetemp() / "mini-index"
    index_dir = build_mini_blcf_index(base)
    params_file = base / "params-blcf.yaml"
    index = load_index(index_dir, params_file)
    params = yaml.safe_load(params_file.read_text())
    rank = tmp_path / "rank.npz"
    stages.rank(params, "blcf", "cosine", index_dir.parent / "gnd.json", index_dir / "bow.npz",
                index_dir / "assign.npz", rank)
    first = load_npz(rank)
    for qi, q in enumerate(index.gnd.queries):
        answer = run_query(index, index.image_path(q.image), q.box, top=index.n_database, rerank=False)
        assert [h.image for h in answer.hits] == first["ranks"][qi].tolist()
        np.testing.assert_allclose([h.score for h in answer.hits], first["scores"][qi], atol=1e-5)
    assert index.box_fallback == "nearest"


def test_whole_image_query_and_text(mini):
    _, _, index = mini
    answer = run_query(index, index.image_path(0), None, top=3, rerank=False)
    assert answer.first_stage == "gs" and answer.n_box_features == answer.n_features
    assert answer.reranked == 0 and all(h.window is None for h in answer.hits)
    text = format_text(answer)
    assert "not re-ranked" in text and len(text.splitlines()) == 3 + 3 + 1


def test_a_box_without_features_falls_back_as_the_pipeline_does(mini):
    _, _, index = mini
    answer = run_query(index, index.image_path(0), (0, 0, 1, 1), top=3)
    assert answer.box_fallback and index.box_fallback == "image" and answer.n_box_features == answer.n_features
    assert "note: no feature inside the box; the query uses the whole image" in format_text(answer)


def test_cli_prints_results_and_writes_a_montage(mini, tmp_path, capsys):
    index_dir, params_file, index = mini
    q = index.gnd.queries[1]
    box = ",".join(f"{v:g}" for v in q.box)
    out = tmp_path / "montage.png"
    argv = ["query", "--index", str(index_dir), "--image", str(index.image_path(q.image)), "--box", box,
            "--params", str(params_file), "--top", "4", "--similarity", "weighted_cosine"]
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
    answer = run_query(index, index.image_path(0), None, top=1, rerank=False)
    with pytest.raises(InstanceSearchError, match=r"\.png or \.jpg"):
        write_montage(answer, tmp_path / "m.gif")
    assert not (tmp_path / "m.gif").exists()


@pytest.mark.parametrize("text", ["1,2,3", "a,b,c,d", "10,10,5,20", "0,0,nan,9", ""])
def test_bad_box_text(text):
    with pytest.raises(InstanceSearchError, match="box"):
        parse_box(text)


def _broken_index(index_dir: Path, tmp_path: Path, missing: str) -> Path:
    copy = tmp_path / "results" / "mini" / "sift"
    shutil.copytree(index_dir.parent, copy.parent)
    (copy / missing).unlink()
    return copy


@pytest.mark.parametrize("case, expected", [
    ("box format", "expected four numbers"),
    ("box outside", "is not inside"),
    ("missing index", "index folder not found"),
    ("missing bow", "bow.npz: missing"),
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
        index_arg = str(_broken_index(index_dir, tmp_path, "bow.npz"))
    elif case == "unreadable image":
        image = str(tmp_path / "notes.txt")
        Path(image).write_text("not a picture")
    elif case == "truncated image":
        data = index.image_path(0).read_bytes()
        image = str(tmp_path / "half.jpg")
        Path(image).write_bytes(data[:len(data) // 2])
    elif case == "missing image":
        image = str(tmp_path / "gone.jpg")
    code = cli.main(["query", "--index", index_arg, "--image", image, "--box", box, "--params", str(params_file)])
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
