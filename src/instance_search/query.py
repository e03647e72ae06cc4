"""One box query against a loaded :class:`~instance_search.index.Index`: features, ranking, re-ranking.

The steps are the pipeline's own (``search`` for the first stage, ``rerank`` for the sliding
windows), applied to a single image the user gives:

1. extract the image's local features with the index's extraction config and assign their words
   (a box that holds no feature falls back as in the pipeline: see ``search.box_words``);
2. first stage: the words inside the box (LS; ``search.query: gs`` in the params uses the whole
   image, as the rank step does) against every database image, cosine or weighted cosine;
3. re-rank the first ``rerank.top`` results by their best window against the words in the box.

Without a box the whole image is the query. Each step is timed (``Answer.timings``).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np
import scipy.sparse as sp

from . import report, search
from . import rerank as rerank_mod
from .errors import InstanceSearchError
from .index import Index
from .io import read_image, write_bytes

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
    window: list[float] | None      # best-matching window (x1, y1, x2, y2) when re-ranked, else None
    reranked: bool                  # scored by its best window; False: first-stage order, score shifted below


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
    first_stage: str                # "ls" (box words) or "gs" (whole image)
    n_features: int
    n_box_features: int
    box_fallback: bool              # the box held no feature: the method's fallback was used instead
    reranked: int                   # how many first-stage results were re-scored by windows (0: none)
    params_source: str
    hits: list[Hit] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # seconds: extract, rank, rerank, total

    def to_dict(self) -> dict:
        return asdict(self)


def _vector(words: np.ndarray, index: Index) -> sp.csr_matrix:
    counts = sp.csr_matrix((np.ones(len(words), np.float32), (np.zeros(len(words), np.int64), words)),
                           shape=(1, index.vocabulary))
    counts.sum_duplicates()
    return search.weighted(counts, index.idf)


def run_query(index: Index, image: str | os.PathLike, box: Box | None = None, *, similarity: str = "cosine",
              top: int = 20, rerank: bool = True) -> Answer:
    """Rank the index's database for ``image`` (and ``box`` in its pixels; None: the whole image)."""
    if similarity not in search.SIMILARITIES:
        raise InstanceSearchError(f"similarity {similarity!r}: expected one of {', '.join(search.SIMILARITIES)}")
    if top < 1:
        raise InstanceSearchError(f"top must be at least 1, got {top}")
    start = time.perf_counter()
    image = str(image)
    try:
        height, width = read_image(image, cv2.IMREAD_GRAYSCALE).shape[:2]
    except InstanceSearchError as exc:  # the reader's advice is for dataset files; this is the user's own image
        raise InstanceSearchError(f"query image {str(exc).split(';')[0]}; pass a readable JPEG or PNG file") from None
    if box is not None:
        box = check_box_order(box)
        check_box_inside(box, width, height, image)
    xy, words = index.features(image, width, height)
    if len(words) == 0:
        raise InstanceSearchError(f"{image}: no local feature found in the image; use a more textured image")
    fell_back = False
    in_box = words
    if box is not None:  # an empty box falls back as the pipeline's queries do (whole image, or nearest cell)
        in_box, fell_back = search.box_words(xy, words, box, index.box_fallback)
    t_extract = time.perf_counter()

    s, r = index.params["search"], index.params["rerank"]
    first_stage = s["query"] if box is not None else "gs"
    q_first = _vector(words if first_stage == "gs" else in_box, index)
    scores = search.similarity(q_first, index.database, similarity, s["weight_absent"])
    ranks, ranked = search.rank(scores)
    t_rank = time.perf_counter()

    boxes = np.zeros((1, 0, 4), np.float32)
    if rerank and r["top"] > 0:
        ranks, ranked, boxes = rerank_mod.rerank(
            ranks, ranked, [rerank_mod.query_arrays(_vector(in_box, index))], index.maps.image, index.idf,
            top=r["top"], cell=r["cell"], scales=r["scales"], aspect_ratios=r["aspect_ratios"], stride=r["stride"],
            similarity=similarity, alpha=s["weight_absent"])
    t_rerank = time.perf_counter()

    hits = []
    for j in range(min(top, ranks.shape[1])):
        i = int(ranks[0, j])
        window = boxes[0, j] if j < boxes.shape[1] and np.all(np.isfinite(boxes[0, j])) else None
        hits.append(Hit(rank=j + 1, image=i, name=index.gnd.images[i].name, path=str(index.image_path(i)),
                        score=round(float(ranked[0, j]), 6),
                        window=None if window is None else [float(v) for v in window],
                        reranked=j < boxes.shape[1]))
    return Answer(
        index=str(index.path), dataset=index.dataset, method=index.method, similarity=similarity, image=image,
        width=int(width), height=int(height), box=None if box is None else list(box), first_stage=first_stage,
        n_features=int(len(words)), n_box_features=int(len(in_box)), box_fallback=fell_back, reranked=int(boxes.shape[1]),
        params_source=index.params_source, hits=hits,
        timings={"extract": t_extract - start, "rank": t_rank - t_extract, "rerank": t_rerank - t_rank,
                 "total": time.perf_counter() - start})


def _fmt_box(box) -> str:
    return ",".join(f"{v:g}" for v in box) if box is not None else "-"


def format_text(answer: Answer) -> str:
    """The plain-text answer: a header, one line per result, the timings."""
    rr = f"re-ranked top {answer.reranked}" if answer.reranked else "not re-ranked"
    lines = [
        f"query {answer.image} ({answer.width}x{answer.height}), box {_fmt_box(answer.box)}: "
        f"{answer.n_features} features, {answer.n_box_features} in the box",
        f"index {answer.index} ({answer.dataset}/{answer.method}), {answer.similarity}, first stage "
        f"{answer.first_stage.upper()}, {rr} (params {answer.params_source})",
        f"{'rank':>4}  {'score':>7}  {'image':<24}  window x1,y1,x2,y2",
    ]
    if answer.box_fallback:
        lines.insert(1, "note: no feature inside the box; the query uses "
                        + ("the whole image" if answer.n_box_features == answer.n_features else "the nearest feature"))
    lines += [f"{h.rank:>4}  {h.score:>7.4f}  {h.name:<24}  {_fmt_box(h.window)}" for h in answer.hits]
    t = answer.timings
    lines.append(f"time: extract {t['extract']:.3f} s, rank {t['rank']:.3f} s, rerank {t['rerank']:.3f} s, "
                 f"total {t['total']:.3f} s")
    return "\n".join(lines)


# A result's frame: no ground truth for a user's query, so a neutral grey instead of right/wrong colours.
NEUTRAL = (200, 200, 200)


def montage(answer: Answer, columns: int = 6) -> np.ndarray:
    """BGR image: the query with its box, then each result with its best window, ``columns`` tiles a row."""
    tiles = [report.thumbnail(read_image(answer.image), answer.box, report.QUERY_COLOUR, report.QUERY_COLOUR,
                               f"query {Path(answer.image).name}")]
    tiles += [report.thumbnail(read_image(h.path), h.window, report.WINDOW_COLOUR, NEUTRAL,
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
