"""One query image (and box) against a loaded :class:`~instance_search.index.Index`.

The query goes through the pipeline's own path (:func:`instance_search.engine.retrieve`): the index's
method extracts and encodes the image as the database was (a box that holds no feature falls back as
the pipeline's queries do), ranks the database (first stage: the box, or the whole image as
``search.query: gs`` says), re-scores the top candidates locally and expands the query, as params
say. Without a box the whole image is the query. Each stage is timed (``Answer.timings``).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from .engine import retrieve
from .errors import InstanceSearchError
from .index import Index
from .io import read_image, write_bytes
from .retrieval.similarity import SIMILARITIES

Box = tuple[float, float, float, float]


def parse_box(text: str) -> Box:
    """``"x1,y1,x2,y2"`` (pixels) -> floats; the order and finiteness are checked here, the image bounds later."""
    parts = [p.strip() for p in str(text).split(",")]
    try:
        if len(parts) != 4:
            raise ValueError
        box = tuple(float(p) for p in parts)
    except ValueError:
        raise InstanceSearchError(f"box {text!r}: expected four numbers x1,y1,x2,y2 in pixels, e.g. 40,30,300,220") from None
    return check_box_order(box)


def check_box_order(box) -> Box:
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        raise InstanceSearchError(f"box {box!r}: expected four numbers x1,y1,x2,y2 in pixels") from None
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise InstanceSearchError(f"box {[x1, y1, x2, y2]}: coordinates must be finite numbers")
    if not (x1 < x2 and y1 < y2):
        raise InstanceSearchError(f"box {[x1, y1, x2, y2]}: needs x1 < x2 and y1 < y2 (top-left, then bottom-right corner)")
    return x1, y1, x2, y2


def check_box_inside(box: Box, width: int, height: int, image: str) -> None:
    x1, y1, x2, y2 = box
    if not (0 <= x1 and 0 <= y1 and x2 <= width and y2 <= height):
        raise InstanceSearchError(
            f"box {[x1, y1, x2, y2]} is not inside {image} ({width}x{height} pixels); draw it inside the image")


@dataclass
class Hit:
    rank: int
    image: int                      # database index
    name: str
    path: str
    score: float
    window: list[float] | None      # best-matching region (x1, y1, x2, y2) when re-ranked, else None
    reranked: bool                  # scored locally; False: first-stage order, score shifted below


@dataclass
class Answer:
    index: str
    dataset: str
    method: str
    similarity: str
    image: str
    width: int
    height: int
    box: list[float] | None
    first_stage: str                # "ls" (the box) or "gs" (the whole image)
    n_features: int | None          # local features (bags of words) or proposals (regions) of the image
    n_box_features: int | None      # of which inside the box (bags of words)
    box_fallback: bool              # the box held no feature: the method's fallback was used instead
    reranked: int                   # how many first-stage results were re-scored locally (0: none)
    expanded: bool                  # the query was expanded (expand.mode) before the final re-scoring
    params_source: str
    hits: list[Hit] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: extract, rank, rerank, expand, total

    def to_dict(self) -> dict:
        return asdict(self)


def run_query(index: Index, image: str | os.PathLike, box: Box | None = None, *, params: dict,
              params_source: str = "params.yaml", similarity: str = "cosine", results: int = 20,
              rerank: bool = True) -> Answer:
    """Rank the index's database for ``image`` (and ``box`` in its pixels; None: the whole image).

    rerank: False stops after the first stage; True runs re-ranking and query expansion as params say.
    """
    if similarity not in SIMILARITIES:
        raise InstanceSearchError(f"similarity {similarity!r}: expected one of {', '.join(SIMILARITIES)}")
    if results < 1:
        raise InstanceSearchError(f"results must be at least 1, got {results}")
    start = time.perf_counter()
    image = str(image)
    try:
        height, width = read_image(image, cv2.IMREAD_GRAYSCALE).shape[:2]
    except InstanceSearchError as exc:  # the reader's advice is for dataset files; this is the user's own image
        raise InstanceSearchError(f"query image {str(exc).split(';')[0]}; pass a readable JPEG or PNG file") from None
    if box is not None:
        box = check_box_order(box)
        check_box_inside(box, width, height, image)
    first_stage = params[index.method.name]["search"]["query"] if box is not None else "gs"
    if index.method.extraction.uses_gpu and "OMP_NUM_THREADS" not in os.environ:
        # a CNN: one torch thread on 2 cores, as blcf's and xfeat's encoders set it, before the network
        # is built; gem's 3 passes took 7 s at torch's default 2 threads beside other work, 0.5 s at 1
        # (docs/benchmarks.md)
        from .methods.local_features import share_cores
        share_cores()
    queries = index.image_query(image, width, height, box, searched=first_stage)  # only what the search reads
    timings = {"extract": time.perf_counter() - start}

    stages = ["first_stage", "rerank", "expand"] if rerank else ["first_stage"]
    got, previous = {}, None
    for stage in stages:
        t = time.perf_counter()
        got.update(retrieve(index, queries, params, similarity, until=stage, start=previous))
        previous = (stage, got[stage])
        timings["rank" if stage == "first_stage" else stage] = time.perf_counter() - t
    final = got[stages[-1]]
    timings["total"] = time.perf_counter() - start

    ranks, scores, boxes = final.ranks, final.scores, final.boxes
    n_local = final.reranked
    hits = []
    for j in range(min(results, ranks.shape[1])):
        i = int(ranks[0, j])
        window = boxes[0, j] if j < n_local and np.all(np.isfinite(boxes[0, j])) else None
        hits.append(Hit(rank=j + 1, image=i, name=index.gnd.images[i].name, path=str(index.image_path(i)),
                        score=round(float(scores[0, j]), 6),
                        window=None if window is None else [float(v) for v in window], reranked=j < n_local))
    info = queries.info[0]
    p = params[index.method.name]
    return Answer(
        index=str(index.path), dataset=index.dataset, method=index.method.name, similarity=similarity, image=image,
        width=int(width), height=int(height), box=None if box is None else list(box),
        first_stage=first_stage,
        n_features=info.get("features"), n_box_features=info.get("box_features"),
        box_fallback=bool(info.get("box_fallback", False)), reranked=n_local,
        expanded=rerank and p["expand"]["mode"] != "none" and n_local > 0,
        params_source=params_source, hits=hits, timings=timings)


def _fmt_box(box) -> str:
    return ",".join(f"{v:g}" for v in box) if box is not None else "-"


def format_text(answer: Answer) -> str:
    """The plain-text answer: a header, one line per result, the timings."""
    rr = f"re-ranked top {answer.reranked}" if answer.reranked else "not re-ranked"
    if answer.expanded:
        rr += ", query expanded"
    found = ("" if answer.n_features is None else f": {answer.n_features} features"
             + ("" if answer.n_box_features is None else f", {answer.n_box_features} in the box"))
    lines = [
        f"query {answer.image} ({answer.width}x{answer.height}), box {_fmt_box(answer.box)}{found}",
        f"index {answer.index} ({answer.dataset}/{answer.method}), {answer.similarity}, first stage "
        f"{answer.first_stage.upper()}, {rr} (params {answer.params_source})",
        f"{'rank':>4}  {'score':>7}  {'image':<24}  window x1,y1,x2,y2",
    ]
    if answer.box_fallback:
        lines.insert(1, "note: no feature inside the box; the query uses "
                        + ("the whole image" if answer.n_box_features == answer.n_features else "the nearest feature"))
    lines += [f"{h.rank:>4}  {h.score:>7.4f}  {h.name:<24}  {_fmt_box(h.window)}" for h in answer.hits]
    t = answer.timings
    parts = [f"{k} {t[k]:.3f} s" for k in ("extract", "rank", "rerank", "expand", "total") if k in t]
    lines.append("time: " + ", ".join(parts))
    return "\n".join(lines)


def montage(answer: Answer, columns: int = 6) -> np.ndarray:
    """BGR image: the query with its box, then each result with its best window, ``columns`` tiles a row."""
    from . import report  # pandas and matplotlib: only for a montage, not on every query's start

    tiles = [report.thumbnail(read_image(answer.image), answer.box, report.QUERY_COLOUR, report.QUERY_COLOUR,
                               f"query {Path(answer.image).name}")]
    tiles += [report.thumbnail(read_image(h.path), h.window, report.WINDOW_COLOUR, report.NEUTRAL,
                                f"#{h.rank} {h.score:.3f} {h.name}") for h in answer.hits]
    rows = [report.hstack(tiles[i:i + columns]) for i in range(0, len(tiles), columns)]
    width = max(r.shape[1] for r in rows)
    grid = np.vstack([report.pad_right(r, width) for r in rows])
    return cv2.copyMakeBorder(grid, report.GAP, 0, report.GAP, report.GAP, cv2.BORDER_CONSTANT, value=report.WHITE)


def write_montage(answer: Answer, out: str | os.PathLike, columns: int = 6) -> None:
    out = Path(out)
    if out.suffix.lower() not in (".png", ".jpg", ".jpeg"):
        raise InstanceSearchError(f"{out}: the montage is written as .png or .jpg; change the file name")
    ok, encoded = cv2.imencode(out.suffix.lower(), montage(answer, columns))
    if not ok:
        raise InstanceSearchError(f"{out}: image encoding failed")
    write_bytes(out, encoded.tobytes())
