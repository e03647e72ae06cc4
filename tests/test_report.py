"""Evaluation, tables and figures on a tiny hand-made ground truth and hand-made rank files."""

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from instance_search import groundtruth, io, methods, report
from instance_search.errors import InstanceSearchError
from instance_search.evaluate import write_evaluation
from instance_search.groundtruth import GroundTruth, Image, Query

REPO = Path(__file__).resolve().parent.parent
PARAMS = {"evaluate": {"seed_top": 100, "seed_max_hits": 20}}
N_DB = 6


@pytest.fixture
def gnd_path(tmp_path):
    """Six 64x48 JPEGs of distinct colours; query 0 (image 0): good 0 1, ok 2, junk 3; query 1 (image 4): good 4."""
    root = tmp_path / "jpg"
    root.mkdir()
    images = []
    for i in range(N_DB):
        pixels = np.full((48, 64, 3), (40 * i, 255 - 40 * i, 128), np.uint8)
        cv2.rectangle(pixels, (10, 10), (30, 30), (255, 255, 255), -1)
        cv2.imwrite(str(root / f"im{i}.jpg"), pixels)
        images.append(Image(name=f"im{i}", path=f"im{i}.jpg", width=64, height=48))
    gnd = GroundTruth(dataset="tiny", root=str(root), images=images, n_database=N_DB, queries=[
        Query(name="q0", image=0, box=(8.0, 8.0, 40.0, 32.0), good=(0, 1), ok=(2,), junk=(3,)),
        Query(name="q1", image=4, box=(0.0, 0.0, 64.0, 48.0), good=(4,)),
    ])
    path = tmp_path / "gnd.json"
    groundtruth.save(gnd, path)
    return path


def _rank_file(path, ranks, boxes=None):
    ranks = np.asarray(ranks, np.int32)
    scores = np.tile(np.linspace(1, 0, ranks.shape[1], dtype=np.float32), (ranks.shape[0], 1))
    extra = {} if boxes is None else {"boxes": np.asarray(boxes, np.float32), "top": np.array(boxes.shape[1])}
    io.save_npz(path, ranks=ranks, scores=scores, **extra)
    return path


@pytest.fixture
def rank_files(tmp_path):
    """(first stage, re-ranked, expanded): three rankings with three different mAPs (0.881944, 1, 0.381944),
    so a table or summary that reads one stage for another shows another number."""
    first = _rank_file(tmp_path / "rank.npz", [[0, 3, 5, 1, 2, 4], [4, 0, 1, 2, 3, 5]])
    boxes = np.full((2, 3, 4), np.nan, np.float32)
    boxes[0, 1] = [5, 5, 35, 30]
    boxes[1, 0] = [10, 10, 50, 40]
    rerank = _rank_file(tmp_path / "rerank.npz", [[0, 1, 2, 3, 4, 5], [4, 5, 0, 1, 2, 3]], boxes)
    # worse on purpose (the test needs distinct numbers, not a realistic expansion)
    expand = _rank_file(tmp_path / "expand.npz", [[5, 0, 1, 2, 3, 4], [0, 4, 1, 2, 3, 5]])
    return first, rerank, expand


# expand, by hand. q0: 5 0 1 2 3 4, junk 3 -> 5 0 1 2 4, positives 0 1 2 at r = 1, 2, 3:
# AP = ((0 + 1/2)/2 + (1/2 + 2/3)/2 + (2/3 + 3/4)/2) / 3 = (6/24 + 14/24 + 17/24) / 3 = 37/72;
# q1: good 4 at r = 1: AP = (0 + 1/2)/2 = 1/4. mAP = (37/72 + 18/72) / 2 = 55/144.
# NDCG (gains 2^3 - 1 = 7 for good, 2^2 - 1 = 3 for ok; discount log2(position + 1)):
# q0 (7/log2 3 + 7/2 + 3/log2 5) / (7 + 7/log2 3 + 3/2); q1 (7/log2 3) / 7.
EXPAND_MAP = round(55 / 144, 6)  # 0.381944
EXPAND_NDCG = round(((7 / math.log2(3) + 7 / 2 + 3 / math.log2(5)) / (7 + 7 / math.log2(3) + 3 / 2)
                     + 1 / math.log2(3)) / 2, 6)


def _evaluate(tmp_path, gnd_path, rank_files, dataset="oxford5k", similarity="cosine", tag="a"):
    out = tmp_path / tag
    write_evaluation(gnd_path, dict(zip(("first_stage", "rerank", "expand"), rank_files)),
                     out / f"{dataset}.json",
                     out / f"{dataset}.csv", PARAMS, dataset, "sift", similarity)
    return out / f"{dataset}.json", out / f"{dataset}.csv"


def test_evaluation_values(tmp_path, gnd_path, rank_files):
    metrics_path, per_query_path = _evaluate(tmp_path, gnd_path, rank_files)
    summary = json.loads(metrics_path.read_text())
    # first stage q0: 0 3 5 1 2 4, junk 3 -> 0 5 1 2 4; positives 0 1 2 at r = 0, 2, 3
    # AP = (1 + (1/2 + 2/3)/2 + (2/3 + 3/4)/2) / 3 = (1 + 7/12 + 17/24) / 3 = 55/72; q1: 4 first -> 1
    assert summary["first_stage"]["mAP"] == round((55 / 72 + 1) / 2, 6)
    assert summary["rerank"]["mAP"] == 1.0 and summary["rerank"]["NDCG"] == 1.0
    assert summary["expand"]["mAP"] == EXPAND_MAP and summary["expand"]["NDCG"] == EXPAND_NDCG
    assert summary["first_stage"]["queries"] == 2
    assert (summary["dataset"], summary["method"], summary["similarity"]) == ("oxford5k", "sift", "cosine")
    assert "protocols" not in summary  # only datasets with protocols (revisited) get the key
    lines = per_query_path.read_text().splitlines()
    assert lines[0] == "stage,query,ap,ndcg,p1,p5,p10,seed_map,seed_ndcg,ns4"
    # mP@k, expanded: q0 positives at junk-free 2, 3, 4 -> P@1 0, P@5 (k cut to 4) 3/4; q1 at 2 -> 0 and 1/2
    assert (summary["expand"]["mP@1"], summary["expand"]["mP@5"], summary["expand"]["mP@10"]) == (0.0, 0.625, 0.625)
    assert lines[1].startswith("first_stage,q0,0.763889,")
    assert lines[1].endswith(",2")  # top 4 of q0: 0 3 5 1 -> positives 0 and 1
    assert lines[3].startswith("rerank,q0,1.000000,1.000000,1.000000,")
    assert lines[5].startswith("expand,q0,0.513889,")  # 37/72
    assert lines[6].startswith("expand,q1,0.250000,")
    assert len(lines) == 7


def test_mismatched_rank_file_names_the_file(tmp_path, gnd_path, rank_files):
    bad = _rank_file(tmp_path / "bad_rank.npz", [[0, 1, 2, 3, 4], [4, 0, 1, 2, 3]])
    with pytest.raises(InstanceSearchError, match="bad_rank.npz"):
        write_evaluation(gnd_path, {"first_stage": bad, "rerank": rank_files[1]}, tmp_path / "m.json",
                         tmp_path / "q.csv", PARAMS, "tiny", "sift", "cosine")
    assert not (tmp_path / "m.json").exists()  # nothing half-written


def test_evaluate_script_reports_a_one_line_error(tmp_path, gnd_path, rank_files):
    bad = _rank_file(tmp_path / "bad_rank.npz", [[0, 1, 2, 3, 4, 5]])  # one query short
    result = subprocess.run(
        [sys.executable, str(REPO / "workflow/scripts/step.py"), "evaluate", "--params", str(REPO / "params.yaml"),
         "--dataset", "tiny", "--method", "sift", "--similarity", "cosine", "--gnd", str(gnd_path),
         "--rank", str(bad), "--rerank", str(rank_files[1]), "--expand", str(rank_files[2]),
         "--metrics", str(tmp_path / "m.json"),
         "--per-query", str(tmp_path / "q.csv"), "--pr", str(tmp_path / "pr.csv")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "error:" in result.stderr and "bad_rank.npz" in result.stderr


def test_table_content_and_determinism(tmp_path, gnd_path, rank_files):
    paths = [_evaluate(tmp_path, gnd_path, rank_files, dataset=d)[0] for d in ("oxford5k", "tiny")]
    outputs = []
    for run in ("1", "2"):
        md, csv = tmp_path / run / "sift_cosine.md", tmp_path / run / "sift_cosine.csv"
        report.write_table(paths, "sift", "cosine", md, csv, published=methods.published("sift"))
        outputs.append((md.read_bytes(), csv.read_bytes()))
    assert outputs[0] == outputs[1]
    md_text, csv_text = (b.decode() for b in outputs[0])
    csv_lines = csv_text.splitlines()
    assert csv_lines[0] == ("dataset,mAP,NDCG,mP@1,mP@5,mP@10,seed_map,seed_ndcg,mAP_first_stage,mAP_reranked,"
                            "seed_published_mAP")
    # the final columns come from the expand stage (mAP 0.381944), not the re-ranked one (1.0); the two
    # step columns from first_stage (0.881944) and rerank (1.0), in that order
    summary = json.loads(paths[0].read_text())
    # seed_map of expand: q0 positives at 1, 2, 3 of 5 0 1 2 3 4 -> (1/2 + 2/3 + 3/4) / 3 = 23/36; q1 1/2
    assert summary["expand"]["seed_map"] == round((23 / 36 + 1 / 2) / 2, 6) == 0.569444
    final = f"{EXPAND_MAP:.6f},{EXPAND_NDCG:.6f},0.000000,0.625000,0.625000,0.569444,{summary['expand']['seed_ndcg']:.6f}"
    assert summary["expand"]["seed_ndcg"] != summary["rerank"]["seed_ndcg"]
    assert csv_lines[1] == f"oxford5k,{final},0.881944,1.000000,0.056000"
    assert csv_lines[2] == f"tiny,{final},0.881944,1.000000,"  # no published number
    assert md_text.startswith("# sift, cosine similarity\n")
    assert f"| oxford5k | 0.382 | {EXPAND_NDCG:.3f} | 0.000 | 0.625 | 0.625 | 0.569 |" in md_text and "| 0.882 | 1.000 | 0.056 |" in md_text
    assert "official Oxford" in md_text


def test_table_rejects_metrics_of_another_method(tmp_path, gnd_path, rank_files):
    path, _ = _evaluate(tmp_path, gnd_path, rank_files, similarity="weighted_cosine")
    with pytest.raises(InstanceSearchError, match="oxford5k.json"):
        report.write_table([path], "sift", "cosine", tmp_path / "t.md", tmp_path / "t.csv")


def test_figure_is_deterministic_and_coloured(tmp_path, gnd_path, rank_files):
    outs = [tmp_path / f"fig{i}.png" for i in (1, 2)]
    for out in outs:
        report.write_figure(gnd_path, rank_files[1], out, 2, 4)  # 2 queries, 4 results each
    assert outs[0].read_bytes() == outs[1].read_bytes()
    fig = cv2.imread(str(outs[0]))
    row = report.THUMB_HEIGHT + 2 * report.BORDER + report.LABEL_HEIGHT + report.GAP
    assert fig.shape[0] == report.GAP + 2 * row
    colours = {tuple(int(c) for c in px) for px in fig.reshape(-1, 3)}
    assert {report.GREEN, report.GREY, report.RED, report.WINDOW_COLOUR} <= colours
    # right is green and wrong is red (BGR): a swap of the two constants fails here
    assert max(range(3), key=lambda c: report.GREEN[c]) == 1 and max(range(3), key=lambda c: report.RED[c]) == 2
    assert len(set(report.GREY)) == 1
    # each tile's frame: tiles of 64x48 images are 180 * 64 / 48 = 240 px wide plus the borders
    tile_w = round(64 * report.THUMB_HEIGHT / 48) + 2 * report.BORDER

    def frame(qi, j):  # a pixel inside the frame (top-left corner) of tile j (0: the query) of row qi
        y, x = report.GAP + qi * row + 2, report.GAP + j * (tile_w + report.GAP) + 2
        return tuple(int(c) for c in fig[y, x])

    # q0 re-ranked 0 1 2 3: good 0 1, ok 2 (positives: green), junk 3 (grey);
    # q1 re-ranked 4 5 0 1: good 4 (green), then three negatives (red)
    assert [frame(0, j) for j in range(5)] == [report.QUERY_COLOUR, report.GREEN, report.GREEN, report.GREEN,
                                               report.GREY]
    assert [frame(1, j) for j in range(5)] == [report.QUERY_COLOUR, report.GREEN, report.RED, report.RED, report.RED]
    # the window of q0's second result, [5, 5, 35, 30] scaled by 180/48: its left edge at x = 18.75 -> 19
    scale = report.THUMB_HEIGHT / 48
    y, x = report.GAP + report.BORDER + round(20 * scale), report.GAP + 2 * (tile_w + report.GAP) + report.BORDER
    assert tuple(int(c) for c in fig[y, x + round(5 * scale)]) == report.WINDOW_COLOUR
    assert tuple(int(c) for c in fig[y, x + round(5 * scale) - 3]) != report.WINDOW_COLOUR  # outside the line


def test_figure_rejects_a_rerank_file_without_boxes(tmp_path, gnd_path, rank_files):
    with pytest.raises(InstanceSearchError, match="rank.npz"):
        report.write_figure(gnd_path, rank_files[0], tmp_path / "f.png", 1, 2)


# ----------------------------------------------------------------------------------- precision-recall

# matplotlib's first three default line colours (tab:blue, tab:orange, tab:green) in BGR, OpenCV's order
CURVE_COLOURS = [(180, 119, 31), (14, 127, 255), (44, 160, 44)]


def test_pr_figure_draws_a_curve_per_stage_the_same_every_time(tmp_path, gnd_path, rank_files):
    pr = tmp_path / "pr.csv"
    write_evaluation(gnd_path, dict(zip(("first_stage", "rerank", "expand"), rank_files)), tmp_path / "m.json",
                     tmp_path / "q.csv", PARAMS, "oxford5k", "sift", "cosine", pr_path=pr)
    outs = [tmp_path / f"pr{i}.png" for i in (1, 2)]
    for out in outs:
        report.write_pr_figure(pr, out, "oxford5k, sift, cosine")
    assert outs[0].read_bytes() == outs[1].read_bytes()
    assert b"Software" not in outs[0].read_bytes()  # no matplotlib version in the file: bytes survive an upgrade's metadata
    colours = {tuple(int(c) for c in px) for px in cv2.imread(str(outs[0])).reshape(-1, 3)}
    assert all(c in colours for c in CURVE_COLOURS)  # first stage, re-ranked, expanded

    unevaluated = tmp_path / "none.csv"
    unevaluated.write_text("stage,recall,precision\n", encoding="utf-8")
    report.write_pr_figure(unevaluated, tmp_path / "none.png", "photos, sift, cosine")
    colours = {tuple(int(c) for c in px) for px in cv2.imread(str(tmp_path / "none.png")).reshape(-1, 3)}
    assert not any(c in colours for c in CURVE_COLOURS)


def test_pr_figure_rejects_a_file_that_is_not_a_pr_csv(tmp_path):
    bad = tmp_path / "per_query.csv"
    bad.write_text("stage,query,ap\nfirst_stage,q0,1.0\n", encoding="utf-8")
    with pytest.raises(InstanceSearchError, match="per_query.csv"):
        report.write_pr_figure(bad, tmp_path / "pr.png", "x")
    with pytest.raises(InstanceSearchError, match="missing.csv"):
        report.write_pr_figure(tmp_path / "missing.csv", tmp_path / "pr.png", "x")
    assert not (tmp_path / "pr.png").exists()


# ------------------------------------------------------------------------------ second-stage options

def _summary(value: float) -> dict:
    return {"mAP": value, "NDCG": value + 0.1, "mP@1": value, "mP@5": value, "mP@10": value, "N-S": 4 * value, "seed_map": value, "seed_ndcg": value, "queries": 2}


def _options_file(path: Path, dataset: str, method: str, first: float, options: dict, similarity="cosine", **extra):
    io.write_json(path, {"dataset": dataset, "method": method, "similarity": similarity, **extra,
                         "first_stage": _summary(first), "options": {k: _summary(v) for k, v in options.items()}})
    return path


def test_options_table_puts_each_option_beside_the_first_stage_and_names_the_best(tmp_path):
    paths = [_options_file(tmp_path / "a-sift.json", "a", "sift", 0.5,
                           {"asmk+sv": 0.7, "bow+window": 0.6, "asmk": 0.5}),
             _options_file(tmp_path / "a-gem.json", "a", "gem", 0.6, {"aqe": 0.6, "diffusion": 0.4}, whitening="none"),
             _options_file(tmp_path / "a-frcnn.json", "a", "frcnn", 0.5, {"regions": 0.4}, proposals="grid")]
    io.write_json(tmp_path / "photos-sift.json", {"dataset": "photos", "method": "sift", "similarity": "cosine",
                                                 "evaluated": False})
    paths.append(tmp_path / "photos-sift.json")
    md, csv = tmp_path / "t.md", tmp_path / "t.csv"
    table = report.write_options_table(paths, "cosine", md, csv)
    # columns: labels where a row has one, the options in their fixed order, then the best
    assert list(table.columns) == ["dataset", "method", "proposals", "whitening", "metric", "first_stage",
                                   "bow+window", "asmk", "asmk+sv", "regions", "diffusion", "aqe", "best"]
    assert table["metric"].tolist() == ["mAP", "NDCG", "mP@1", "mP@5", "mP@10", "N-S"] * 3  # the unevaluated photo folder has no row
    rows = {(r["method"], r["metric"]): r for r in table.to_dict("records")}
    assert rows["sift", "mAP"]["asmk+sv"] == 0.7 and rows["sift", "mAP"]["bow+window"] == 0.6
    assert rows["sift", "mAP"]["best"] == "asmk+sv"
    assert rows["gem", "mAP"]["best"] == "first_stage"  # aqe ties with the first stage: ties go left
    assert rows["frcnn", "N-S"]["best"] == "first_stage" and rows["frcnn", "mAP"]["proposals"] == "grid"
    assert math.isnan(rows["sift", "mAP"]["aqe"])
    text = md.read_text()
    assert "| a | sift |  |  | mAP | 0.500 | 0.600 | 0.500 | 0.700 |  |  |  | asmk+sv |" in text
    first = csv.read_bytes()
    report.write_options_table(paths, "cosine", md, csv)
    assert csv.read_bytes() == first


def test_options_table_has_a_row_per_protocol(tmp_path):
    def with_protocols(v):
        return {**_summary(v), "protocols": {p: _summary(v + d) for p, d in (("easy", 0.1), ("medium", 0), ("hard", -0.1))}}
    path = tmp_path / "r-sift.json"
    io.write_json(path, {"dataset": "roxford5k", "method": "sift", "similarity": "cosine",
                         "first_stage": with_protocols(0.5), "options": {"sv": with_protocols(0.6)}})
    table = report.build_options_table([path], "cosine")
    n = len(report.OPTION_METRICS)
    assert table["dataset"].tolist()[::n] == ["roxford5k-E", "roxford5k-M", "roxford5k-H"]
    assert table[table.metric == "mAP"]["sv"].round(6).tolist() == [0.7, 0.6, 0.5]


def test_options_table_rejects_another_similarity_or_a_malformed_file(tmp_path):
    path = _options_file(tmp_path / "a-sift.json", "a", "sift", 0.5, {"sv": 0.7}, similarity="weighted_cosine")
    with pytest.raises(InstanceSearchError, match="a-sift.json: options of the weighted_cosine"):
        report.build_options_table([path], "cosine")
    io.write_json(path, {"dataset": "a", "method": "sift", "similarity": "cosine"})
    with pytest.raises(InstanceSearchError, match="a-sift.json: malformed options file"):
        report.build_options_table([path], "cosine")


def test_every_method_offers_options_its_params_accept():
    """Each option only overrides keys the method's params section has (a typo would be a silent no-op)."""
    import yaml

    params = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())

    def within(override, section, where):
        for key, value in override.items():
            assert key in section, f"{where}.{key}"
            if isinstance(value, dict):
                within(value, section[key], f"{where}.{key}")

    for name in params["run"]["methods"]:
        opts = methods.get(name).options(params[name])
        assert opts and set(opts) <= set(report.OPTION_ORDER)
        for option, override in opts.items():
            within(override, params[name], f"{name}:{option}")
