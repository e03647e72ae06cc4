"""The pipeline's steps for the frcnn method (Salvador et al. 2016), same files as the BoW methods.

What each step writes for frcnn:

- extract -> ``features/``: ``regions.npz`` (every image's pooled vector, its P proposals' boxes and
  region vectors: :class:`regions.RegionFeatures`), ``queries.npz`` (each query's box-pooled ``ls``
  and whole-image ``gs`` vectors), ``manifest.json`` (the settings, the proposal source);
- codebook -> ``codebook.npz``: the PCA-whitening of the image-wise vectors, or nothing (``pca_dim: 0``);
- encode -> ``bow.npz``: the database's image-wise vectors as the filter compares them (whitened if
  asked, L2); ``assign.npz``: the proposals (boxes, L2-normalised region vectors) re-ranking reads;
- rank / rerank / expand: filtering by image-wise vectors, re-ranking by best proposal, query
  expansion with the best regions; the same ranking files as the other methods.

The network runs once, in extract; everything after it reads stored vectors.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from tqdm import tqdm

from . import groundtruth, regions
from .errors import InstanceSearchError
from .features import frcnn
from .io import load_npz, read_json, replace_dir, save_npz, write_json
from .search import load_ranking

log = logging.getLogger(__name__)


def extract(p: dict, gnd: groundtruth.GroundTruth, out_dir) -> None:
    ex = frcnn.RegionExtractor(
        p["source"], detector=p["detector"], level=p["level"] or None, backbone=p["backbone"],
        layer=p["layer"] or None, proposals=p["proposals"], scales=p["scales"], aspect_ratios=p["aspect_ratios"],
        stride=p["stride"], pooling=p["pooling"], roi=p["roi"], roi_size=p["roi_size"], device=p["device"],
        half=p["half"])
    n = len(gnd.images)
    # each query image also pools its query boxes: [box, whole image] per query (LS and GS)
    boxes: dict[int, list] = {}
    for q in gnd.queries:
        im = gnd.images[q.image]
        boxes.setdefault(q.image, []).extend([q.box, (0.0, 0.0, float(im.width), float(im.height))])
    paths = [str(gnd.image_path(i)) for i in range(n)]
    dims = [(im.width, im.height) for im in gnd.images]
    got, fallbacks = [], 0
    with tqdm(total=n, desc=f"{gnd.dataset} frcnn {ex.source_name} ({ex.device})", unit="img", mininterval=5) as bar:
        for lo in range(0, n, p["shard_size"]):
            hi = min(n, lo + p["shard_size"])
            extra = [np.array(boxes[i], np.float32) if i in boxes else None for i in range(lo, hi)]
            part, fb = frcnn.extract_images(ex, paths[lo:hi], dims[lo:hi], max_side=p["max_side"],
                                            batch_size=p["batch_size"], workers=p["workers"], extra=extra)
            got += part
            fallbacks += fb
            bar.update(hi - lo)
    seen: dict[int, int] = {}
    ls, gs = [], []
    for q in gnd.queries:
        k = seen.get(q.image, 0)
        seen[q.image] = k + 1
        ls.append(got[q.image].extra[2 * k])
        gs.append(got[q.image].extra[2 * k + 1])
    out_dir = Path(out_dir)
    tmp = out_dir.with_name(out_dir.name + ".partial")
    tmp.mkdir(parents=True, exist_ok=True)
    regions.RegionFeatures.from_images(got).save(tmp / "regions.npz")
    dim = got[0].vector.shape[0]
    save_npz(tmp / "queries.npz", ls=np.array(ls, np.float32).reshape(-1, dim), gs=np.array(gs, np.float32).reshape(-1, dim))
    config = {"method": "frcnn", **p, "proposal_source": ex.source_name, "images": [im.path for im in gnd.images],
              "root": gnd.root}
    write_json(tmp / "manifest.json", {"n_images": n, "dim": dim, "fallbacks": fallbacks, "config": config})
    replace_dir(tmp, out_dir)
    log.info("%s: %d images, %d proposals, %d fell back to the whole image (%s source)", out_dir, n,
             sum(len(r.boxes) for r in got), fallbacks, ex.source_name)


def _features(features_dir) -> tuple[dict, regions.RegionFeatures, dict]:
    d = Path(features_dir)
    if not (d / "manifest.json").is_file():
        raise InstanceSearchError(f"{d}: not a finished frcnn feature folder (no manifest.json); re-run the extract step")
    return read_json(d / "manifest.json"), regions.RegionFeatures.load(d / "regions.npz"), load_npz(d / "queries.npz")


def train_codebook(p: dict, gnd: groundtruth.GroundTruth, features: str, out: str) -> None:
    _, feats, _ = _features(features)
    if p["pca_dim"]:
        model = regions.fit_whitening(feats.vectors[:gnd.n_database], p["pca_dim"], key="frcnn.codebook.pca_dim")
        save_npz(out, pca_mean=model["mean"], pca_projection=model["projection"])
    else:
        save_npz(out, none=np.zeros(0, np.float32))


def _whitening(codebook_path) -> dict | None:
    a = load_npz(codebook_path)
    return {"mean": a["pca_mean"], "projection": a["pca_projection"]} if "pca_mean" in a else None


def encode(gnd: groundtruth.GroundTruth, features: str, codebook_path: str, bow_out: str, assign_out: str) -> None:
    manifest, feats, q = _features(features)
    if manifest["n_images"] != len(gnd.images):
        raise InstanceSearchError(f"{features}: {manifest['n_images']} images but the ground truth lists "
                                  f"{len(gnd.images)}; re-run extract")
    white = _whitening(codebook_path)
    save_npz(bow_out, vectors=regions.prepare(feats.vectors[:gnd.n_database], white).astype(np.float32),
             ls=regions.prepare(q["ls"], white).astype(np.float32), gs=regions.prepare(q["gs"], white).astype(np.float32),
             ls_region=regions.l2(q["ls"]).astype(np.float32), proposal_source=np.array(manifest["config"]["proposal_source"]))
    save_npz(assign_out, boxes=feats.boxes, regions=regions.l2(feats.regions.astype(np.float32)).astype(np.float16),
             offsets=feats.offsets, vectors=np.zeros((len(feats.vectors), 0), np.float32))


def _index(gnd, bow_path, assign_path):
    b = load_npz(bow_path)
    a = load_npz(assign_path)
    feats = regions.RegionFeatures(a["vectors"], a["regions"], a["boxes"], a["offsets"])
    if len(b["vectors"]) != gnd.n_database or len(b["ls"]) != len(gnd.queries):
        raise InstanceSearchError(f"{bow_path}: built for another image list; re-run encode")
    return b, feats


def rank(p: dict, similarity: str, gnd, bow_path, assign_path, out) -> None:
    b, _ = _index(gnd, bow_path, assign_path)
    ranks, scores = regions.filter_rank(b[p["search"]["query"]], b["vectors"], similarity, p["search"]["weight_absent"])
    save_npz(out, ranks=ranks, scores=scores)
    log.info("filtered %d queries over %d images by image-wise vectors (%s)", len(gnd.queries), gnd.n_database, similarity)


def rerank(p: dict, similarity: str, gnd, bow_path, assign_path, rank_path, out) -> None:
    b, feats = _index(gnd, bow_path, assign_path)
    first = load_ranking(rank_path, gnd, required=("ranks", "scores"))
    top = p["rerank"]["top"]
    if top == 0:
        save_npz(out, ranks=first["ranks"], scores=first["scores"], boxes=np.zeros((len(gnd.queries), 0, 4), np.float32))
        return
    ranks, scores, boxes = regions.rerank(first["ranks"], first["scores"], b["ls_region"], feats.image, top=top,
                                          similarity=similarity, alpha=p["search"]["weight_absent"])
    save_npz(out, ranks=ranks.astype(np.int32), scores=scores.astype(np.float32), boxes=boxes)
    log.info("re-ranked the top %d of %d queries by their best proposal (%s)", boxes.shape[1], len(gnd.queries), similarity)


def expand(p: dict, similarity: str, gnd, bow_path, assign_path, rerank_path, out) -> None:
    b, feats = _index(gnd, bow_path, assign_path)
    prev = load_ranking(rerank_path, gnd, required=("ranks", "scores", "boxes"))
    e, top = p["expand"], p["rerank"]["top"]
    if e["mode"] == "none":
        save_npz(out, ranks=prev["ranks"], scores=prev["scores"], boxes=prev["boxes"])
        return
    if e["mode"] != "lqe" or top == 0:
        raise InstanceSearchError(f"frcnn.expand.mode={e['mode']}: frcnn expands with each result's best region "
                                  "(lqe, after re-ranking: rerank.top > 0), or none")
    alpha = p["search"]["weight_absent"]
    q = regions.expand(b["ls_region"], prev["ranks"], feats.image, k=e["top"], similarity=similarity, alpha=alpha)
    ranks, scores, boxes = regions.rerank(prev["ranks"], prev["scores"], q, feats.image, top=top,
                                          similarity=similarity, alpha=alpha)
    save_npz(out, ranks=ranks.astype(np.int32), scores=scores.astype(np.float32), boxes=boxes)
    log.info("expanded %d queries with the best regions of their top %d (%s)", len(gnd.queries), e["top"], similarity)
