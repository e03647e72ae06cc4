"""The seed's six tables (method x similarity, rows = datasets), pictures of top results, and
precision-recall plots.

Every output is byte-deterministic: fixed float formats in the tables, PNGs composed and encoded
with OpenCV from the same inputs, and matplotlib's Agg renderer (no date or version written) for the
curves.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Mapping

import cv2
import numpy as np
import pandas as pd

from . import groundtruth
from .errors import InstanceSearchError
from .groundtruth import GroundTruth
from .io import read_image, read_json, write_bytes, write_text
from .ranking_files import load_ranking

PRECISION_KEYS = ("mP@1", "mP@5", "mP@10")
TABLE_COLUMNS = ["dataset", "mAP", "NDCG", *PRECISION_KEYS, "seed_map", "seed_ndcg", "mAP_first_stage",
                 "mAP_reranked", "seed_published_mAP"]

FOOTNOTE = (
    "mAP: mean of the official Oxford/Paris average precision over the full ranking (junk ignored); "
    "NDCG: over the full junk-free ranking (good = 3, ok = 2), normalised by all relevant images. "
    "mP@k: mean precision at k of the junk-free ranking as revisitop computes it (k is cut to the position "
    "of the query's last positive when that comes first). "
    "seed_map and seed_ndcg: the reproduced system's own definitions (mean precision at the first hits of "
    "the top list, divided by the hits found; NDCG with junk = 1 normalised within the top list; list length "
    "and hit cap from params evaluate.seed_top / seed_max_hits, the seed used 100 and 20), comparable with "
    "seed_published_mAP. mAP, NDCG, mP@k, seed_*: the final ranking (first stage, re-ranking, then query expansion "
    "as the params' expand.mode says; with expansion off it is the re-ranked one); mAP_first_stage and "
    "mAP_reranked: the two steps before it."
)
# Added under a table that has rows of revisited datasets.
PROTOCOL_NOTE = (
    "Revisited datasets (-E / -M / -H): the Easy, Medium and Hard protocols of Radenovic et al. (CVPR 2018), "
    "each row a separate evaluation of the same ranking (Easy: positives easy, hard as junk; Medium: easy + "
    "hard; Hard: positives hard, easy as junk)."
)


# ---------------------------------------------------------------------------------------------- tables

# Row suffix of each protocol of a revisited dataset (ROxford5k-E / -M / -H, as the paper writes them).
PROTOCOL_SUFFIX = {"easy": "E", "medium": "M", "hard": "H"}


def _protocol_order(protocols) -> list[str]:
    """E, M, H first (the JSON's keys are sorted alphabetically), any other protocol after them."""
    known = [p for p in PROTOCOL_SUFFIX if p in protocols]
    return known + sorted(set(protocols) - set(known))


def _protocol_row(dataset: str, protocol: str) -> str:
    return f"{dataset}-{PROTOCOL_SUFFIX.get(protocol, protocol)}"


# What a method's labels (Method.labels, in its metrics files) may hold: a column each where present.
LABELS = ("proposals", "whitening", "words")


def _row(dataset: str, stages: dict, published, m: dict) -> dict:
    final = stages["expand"]
    return {"dataset": dataset, **{k: m.get(k) for k in LABELS}, "mAP": final["mAP"], "NDCG": final["NDCG"],
            **{k: final[k] for k in PRECISION_KEYS},
            "seed_map": final["seed_map"], "seed_ndcg": final["seed_ndcg"], "mAP_first_stage": stages["first_stage"]["mAP"],
            "mAP_reranked": stages["rerank"]["mAP"], "seed_published_mAP": published}


def _table_rows(path: str | os.PathLike, method: str, similarity: str, published: Mapping[str, float]) -> list[dict]:
    """One row per metrics file, or one per protocol (``<dataset>-E``, ...) for a dataset with protocols."""
    m = read_json(path)
    if m.get("evaluated") is False:  # a photo folder: no ground truth, no row
        return []
    try:
        if (m["method"], m["similarity"]) != (method, similarity):
            raise InstanceSearchError(
                f"{path}: metrics of {m['method']}/{m['similarity']}, not {method}/{similarity}; pass the right files")
        if "protocols" in m:  # the seed never evaluated these: no published number beside them
            return [_row(_protocol_row(m["dataset"], p), m["protocols"][p], np.nan, m)
                    for p in _protocol_order(m["protocols"])]
        return [_row(m["dataset"], m, published.get(m["dataset"], np.nan), m)]
    except (KeyError, TypeError, AttributeError) as exc:
        raise InstanceSearchError(f"{path}: malformed metrics file (missing {exc}); re-run the evaluate step") from None


def build_table(metrics_paths, method: str, similarity: str, published: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Rows = datasets in the order of ``metrics_paths`` (a revisited dataset: its E, M, H rows);
    columns :data:`TABLE_COLUMNS`; ``published``: the seed's mAP per dataset, shown beside ours."""
    rows = [row for p in metrics_paths for row in _table_rows(p, method, similarity, published or {})]
    # frcnn's numbers depend on where its proposals came from, the others' on where their model was learned
    columns = TABLE_COLUMNS + [k for k in LABELS if any(r[k] for r in rows)]
    return pd.DataFrame(rows, columns=columns)


def _markdown(table: pd.DataFrame, title: str, similarity: str, notes: list[str] | None = None) -> str:
    def cell(v) -> str:
        return v if isinstance(v, str) else ("" if pd.isna(v) else f"{v:.3f}")

    columns = list(table.columns)
    lines = [f"# {title}, {similarity} similarity", "",
             "| " + " | ".join(columns) + " |",
             "|" + "|".join(["---"] + ["---:"] * (len(columns) - 1)) + "|"]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(index=False)]
    suffixes = tuple(f"-{s}" for s in PROTOCOL_SUFFIX.values())
    notes = (notes or [FOOTNOTE]) + ([PROTOCOL_NOTE] if table["dataset"].str.endswith(suffixes).any() else [])
    return "\n".join(lines + [line for note in notes for line in ("", note)] + [""])


def write_table(metrics_paths, method: str, similarity: str, md_path, csv_path,
                published: Mapping[str, float] | None = None) -> pd.DataFrame:
    """Write one method x similarity table as Markdown (3 decimals) and CSV (6 decimals)."""
    table = build_table(metrics_paths, method, similarity, published)
    write_text(csv_path, table.to_csv(index=False, float_format="%.6f", lineterminator="\n", na_rep=""))
    write_text(md_path, _markdown(table, method, similarity))
    return table


# ------------------------------------------------------------------------------ second-stage options

# Column order of the options table; a method's option not listed here follows, sorted.
OPTION_ORDER = ("bow", "bow+window", "bow+sv", "asmk", "asmk+window", "asmk+sv", "regions", "diffusion",
                "kreciprocal", "aqe", "dba", "dba+aqe")
OPTION_METRICS = ("mAP", "NDCG", *PRECISION_KEYS, "N-S")
OPTIONS_NOTE = (
    "Each second-stage option of each method, run from the same first stage with the params' other settings and"
    " without query expansion (but aqe and dba+aqe, which have it). Bags of words: each aggregation's first "
    "stage (bow = tf-idf bag of words, asmk = ASMK*; first_stage is the one search.aggregation picks), then "
    "+window = best sliding window of the box's words, +sv = spatial verification (RANSAC over the matches "
    "whose residual bits agree, scored by how far the inliers exceed chance); regions = best proposal (frcnn), "
    "diffusion = the database's k-NN graph (gem), kreciprocal = k-reciprocal re-ranking (gem), aqe = alpha-"
    "weighted query expansion (gem), dba = database-side augmentation, a search of its own (gem). mP@k: "
    "revisitop's mean precision at k. N-S: positives in the top 4 (UKBench's score; defined for every dataset). "
    "best: the highest, ties to the left."
)


def _option_rows(path, similarity: str) -> list[dict]:
    m = read_json(path)
    if m.get("evaluated") is False:
        return []
    try:
        if m["similarity"] != similarity:
            raise InstanceSearchError(f"{path}: options of the {m['similarity']} similarity, not {similarity}")
        runs = {"first_stage": m["first_stage"], **m["options"]}
        if "protocols" in m["first_stage"]:
            cases = [(_protocol_row(m["dataset"], p), {k: r["protocols"][p] for k, r in runs.items()})
                     for p in _protocol_order(m["first_stage"]["protocols"])]
        else:
            cases = [(m["dataset"], runs)]
        return [{"dataset": name, "method": m["method"], **{k: m.get(k) for k in LABELS}, "metric": metric,
                 **{k: r[metric] for k, r in case.items()}}
                for name, case in cases for metric in OPTION_METRICS]
    except (KeyError, TypeError, AttributeError) as exc:
        raise InstanceSearchError(f"{path}: malformed options file (missing {exc}); re-run the options step") from None


def build_options_table(paths, similarity: str) -> pd.DataFrame:
    """One row per dataset (per protocol), method and metric; a column per option, in
    :data:`OPTION_ORDER`, beside the first stage, and the best of them."""
    rows = [row for p in paths for row in _option_rows(p, similarity)]
    found = {k for r in rows for k in r} - {"dataset", "method", "metric", "first_stage", *LABELS}
    options = [o for o in OPTION_ORDER if o in found] + sorted(found - set(OPTION_ORDER))
    runs = ["first_stage", *options]
    for r in rows:
        values = [(r.get(k, np.nan), k) for k in runs]
        best = max((v for v in values if not pd.isna(v[0])), key=lambda v: v[0], default=(np.nan, ""))
        r["best"] = best[1]
    columns = ["dataset", "method", *[k for k in LABELS if any(r.get(k) for r in rows)], "metric", *runs, "best"]
    return pd.DataFrame(rows, columns=columns)


def write_options_table(paths, similarity: str, md_path, csv_path) -> pd.DataFrame:
    """The options table of one similarity as Markdown (3 decimals) and CSV (6 decimals)."""
    table = build_options_table(paths, similarity)
    write_text(csv_path, table.to_csv(index=False, float_format="%.6f", lineterminator="\n", na_rep=""))
    write_text(md_path, _markdown(table, "second-stage options", similarity, notes=[OPTIONS_NOTE]))
    return table


# --------------------------------------------------------------------------------------------- figures

THUMB_HEIGHT = 180
BORDER = 8
LABEL_HEIGHT = 26
GAP = 6
# BGR colours.
GREEN, RED, GREY = (40, 170, 40), (40, 40, 220), (160, 160, 160)
NEUTRAL = (200, 200, 200)  # a result of a query without ground truth: neither right nor wrong
QUERY_COLOUR, WINDOW_COLOUR, WHITE, BLACK = (220, 120, 0), (0, 220, 255), (255, 255, 255), (0, 0, 0)


def thumbnail(image: np.ndarray, box, box_colour, frame_colour, label: str) -> np.ndarray:
    """Resize to THUMB_HEIGHT, draw ``box`` (original pixels; None or NaN: none), frame it, label below."""
    scale = THUMB_HEIGHT / image.shape[0]
    width = max(1, round(image.shape[1] * scale))
    thumb = cv2.resize(image, (width, THUMB_HEIGHT), interpolation=cv2.INTER_AREA)
    if box is not None and np.all(np.isfinite(box)):
        x1, y1, x2, y2 = (int(round(float(v) * scale)) for v in box)
        cv2.rectangle(thumb, (x1, y1), (x2 - 1, y2 - 1), box_colour, 3)
    framed = cv2.copyMakeBorder(thumb, BORDER, BORDER, BORDER, BORDER, cv2.BORDER_CONSTANT, value=frame_colour)
    strip = np.full((LABEL_HEIGHT, framed.shape[1], 3), 255, np.uint8)
    font_scale = _fitting_font_scale(label, framed.shape[1] - 8)
    cv2.putText(strip, label, (4, LABEL_HEIGHT - 8), cv2.FONT_HERSHEY_SIMPLEX, font_scale, BLACK, 1, cv2.LINE_AA)
    return np.vstack([framed, strip])


def _fitting_font_scale(label: str, width: int, largest: float = 0.5, smallest: float = 0.3) -> float:
    """The largest font scale (down to ``smallest``) at which ``label`` fits a narrow (portrait) tile."""
    (text_width, _), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, largest, 1)
    return max(smallest, min(largest, largest * width / text_width)) if text_width else largest


def _result_colour(q: groundtruth.Query, index: int, labelled: bool = True):
    if not labelled:
        return NEUTRAL
    if index in q.positives:
        return GREEN
    return GREY if index in q.junk else RED


def hstack(tiles: list[np.ndarray]) -> np.ndarray:
    gap = np.full((tiles[0].shape[0], GAP, 3), 255, np.uint8)
    parts = [p for t in tiles for p in (t, gap)][:-1]
    return np.hstack(parts)


def pad_right(row: np.ndarray, width: int) -> np.ndarray:
    return cv2.copyMakeBorder(row, 0, GAP, 0, width - row.shape[1], cv2.BORDER_CONSTANT, value=WHITE)


def _query_row(gnd: GroundTruth, qi: int, ranks: np.ndarray, scores: np.ndarray, boxes: np.ndarray, results: int):
    q = gnd.queries[qi]
    tiles = [thumbnail(read_image(gnd.image_path(q.image)), q.box, QUERY_COLOUR, QUERY_COLOUR, f"query {q.name}")]
    for j in range(min(results, ranks.shape[1])):
        index = int(ranks[qi, j])
        box = boxes[qi, j] if j < boxes.shape[1] else None
        tiles.append(thumbnail(read_image(gnd.image_path(index)), box, WINDOW_COLOUR, _result_colour(q, index, gnd.labelled),
                                f"#{j + 1}  {float(scores[qi, j]):.3f}"))
    return hstack(tiles)


def write_figure(gnd: GroundTruth | str | os.PathLike, rerank_npz: str | os.PathLike, out_png: str | os.PathLike,
                 n_queries: int, results: int) -> None:
    """A PNG grid: per query (first ``n_queries`` in ground-truth order), the query image with its box,
    then its first ``results`` re-ranked results, framed green (good/ok), red (negative) or grey (junk),
    with the best-matching window drawn where the re-ranking found one and a "#rank score" label.
    """
    if not isinstance(gnd, GroundTruth):
        gnd = groundtruth.load(gnd)
    arrays = load_ranking(rerank_npz, gnd, required=("ranks", "scores", "boxes"))
    ranks, scores, boxes = arrays["ranks"], arrays["scores"], arrays["boxes"]
    rows = [_query_row(gnd, qi, ranks, scores, boxes, results) for qi in range(min(n_queries, len(gnd.queries)))]
    if not rows:  # a photo folder without queries: a figure that says so
        rows = [np.full((LABEL_HEIGHT * 2, 360, 3), 255, np.uint8)]
        cv2.putText(rows[0], f"{gnd.dataset}: no queries", (8, LABEL_HEIGHT + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.6,
                    BLACK, 1, cv2.LINE_AA)
    width = max(r.shape[1] for r in rows)
    grid = cv2.copyMakeBorder(np.vstack([pad_right(r, width) for r in rows]), GAP, 0, GAP, GAP,
                              cv2.BORDER_CONSTANT, value=WHITE)
    ok, encoded = cv2.imencode(".png", grid)
    if not ok:
        raise InstanceSearchError(f"{out_png}: PNG encoding failed; check the images of {gnd.dataset}")
    write_bytes(Path(out_png), encoded.tobytes())


# ------------------------------------------------------------------------------------ precision-recall

PR_STAGES = {"first_stage": "first stage", "rerank": "re-ranked", "expand": "expanded"}


def write_pr_figure(pr_csv: str | os.PathLike, out_png: str | os.PathLike, title: str) -> None:
    """The evaluate step's 11-point interpolated precision-recall curves, one per stage (first stage,
    re-ranked, expanded), on one plot; a dataset without ground truth gets a plot that says so."""
    import matplotlib

    matplotlib.use("Agg")  # no display; the same pixels everywhere
    import matplotlib.pyplot as plt

    try:
        pr = pd.read_csv(pr_csv)
    except (OSError, ValueError) as e:
        raise InstanceSearchError(f"{pr_csv}: not a precision-recall CSV ({e}); re-run the evaluate step") from e
    if not {"stage", "recall", "precision"} <= set(pr.columns):
        raise InstanceSearchError(f"{pr_csv}: needs the columns stage, recall, precision; re-run the evaluate step")
    fig, ax = plt.subplots(figsize=(4.0, 3.2))
    for stage, label in PR_STAGES.items():
        curve = pr[pr["stage"] == stage]
        if len(curve):
            ax.plot(curve["recall"], curve["precision"], marker=".", linewidth=1.2, label=label)
    if pr.empty:
        ax.text(0.5, 0.5, "not evaluated (no ground truth)", ha="center", va="center", fontsize=8, transform=ax.transAxes)
    else:
        ax.legend(fontsize=8, loc="lower left")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="interpolated precision")
    ax.set_title(title, fontsize=9)
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    write_bytes(Path(out_png), buf.getvalue())
