"""frcnn's region pooling: torchvision's RoIAlign kernel against the library's matrix-product RoIAlign
(features/frcnn.py ``_align_vectors``), side by side in one run, at compute.threads 1.

On N ukbench-500 photos (640x480 JPEGs) at a params file's frcnn settings (params.yaml: the grid source,
mobilenet_v2 features.18, 1280 channels, max_side 512, ~190 windows an image, 7x7 bins, max):

* pooling: each photo's map computed once (the library's network call), then its windows (and, with
  ``--rpn-like``, 300 random boxes on a 256-channel map, the RPN source's shape) pooled by both paths,
  ms an image;
* step: ``pipeline.steps.extract`` (the whole frcnn extract step: decoding in its DataLoader workers,
  the network, pooling, writing the store) with the old path patched in, against the step as it is.

Interleaved rounds (the order reversed every other round), medians; "x" is the median of the per-round
ratios old / new. The features of the two paths are compared (max |new - old| over max |old|). The
load average (1, 5, 15 minutes) is printed with each part: other jobs share the machine. Run from the
repository root::

    python benchmarks/roi_speed.py                    # 16 photos, 5 rounds of pooling, 3 of the step
    python benchmarks/roi_speed.py --parts pooling --rounds 7
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from machine import hardware, interleaved  # benchmarks/machine.py, beside this script

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "ukbench-500" / "jpg"


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def torchvision_vectors(fmaps, rois, pooling: str, roi_size: int):
    """The previous path: torchvision's roi_align bins (aligned, the same sampling ratio), then max or sum."""
    from torchvision.ops import roi_align

    from instance_search.features import frcnn

    bins = roi_align(fmaps, rois, roi_size, spatial_scale=1.0, sampling_ratio=frcnn.SAMPLING_RATIO, aligned=True)
    return frcnn._reduce(bins, pooling, (2, 3))


@contextlib.contextmanager
def old_path():
    from instance_search.features import frcnn

    saved = frcnn._align_vectors
    frcnn._align_vectors = torchvision_vectors
    try:
        yield
    finally:
        frcnn._align_vectors = saved


def relative(new, old) -> float:
    new, old = np.asarray(new, np.float64), np.asarray(old, np.float64)
    return float(np.abs(new - old).max() / np.abs(old).max())


def pooling_part(p: dict, paths: list[str], rounds: int, rpn_like: bool) -> list[tuple]:
    import cv2
    import torch

    from instance_search.features import cnn, frcnn
    from instance_search.io import read_image

    ex = frcnn.RegionExtractor(p["source"], backbone=p["backbone"], layer=p["layer"] or None, device="cpu",
                               proposals=p["proposals"], scales=p["scales"], aspect_ratios=p["aspect_ratios"],
                               stride=p["stride"])
    pre = cnn.Preprocess(ex.mean, ex.std)
    cases, windows = [], []
    for path in paths:
        bgr = read_image(path, cv2.IMREAD_COLOR)
        h, w = bgr.shape[:2]
        size = cnn.resized_size(w, h, p["max_side"], ex.min_side)
        with torch.no_grad():
            fm = cnn.layer_map(ex.source.net, torch.from_numpy(pre(bgr, size))[None])
        boxes = ex.source.proposals((w, h), p["proposals"])
        mapped = frcnn._map_boxes(boxes, (w, h), (fm.shape[-1], fm.shape[-2]))
        cases.append((fm, torch.from_numpy(np.hstack([np.zeros((len(mapped), 1)), mapped])).float()))
        windows.append(len(boxes))
    shape = tuple(cases[0][0].shape[1:])
    sets = {f"grid windows ({statistics.median(windows):.0f} an image, map {shape[0]}x{shape[1]}x{shape[2]})": cases}
    if rpn_like:
        rng = np.random.default_rng(0)
        boxes = []
        for _ in paths:  # RPN-like: 300 distinct boxes, anywhere, of any size, on a 256-channel map
            xy = rng.uniform(0, [shape[2], shape[1]], (300, 2))
            wh = rng.uniform(0.3, 1, (300, 2)) ** 2 * [shape[2], shape[1]]
            boxes.append(torch.from_numpy(np.hstack([np.zeros((300, 1)), xy, xy + wh])).float())
        sets["RPN-like (300 random boxes, map 256 channels)"] = [
            (torch.rand(1, 256, *shape[1:]), b) for b in boxes]
    rows = []
    for name, cs in sets.items():
        for pooling in ("max", "sum"):
            def old(cs=cs, pooling=pooling):
                return [torchvision_vectors(fm, r, pooling, p["roi_size"]) for fm, r in cs]

            def new(cs=cs, pooling=pooling):
                return [frcnn._roi_vectors(fm, r, pooling, "align", p["roi_size"]) for fm, r in cs]

            a, b = old(), new()
            t = interleaved({"old": old, "new": new}, rounds)
            n = len(cs)
            rows.append((f"{name}, {pooling}", t["old"][0] / n * 1000, t["new"][0] / n * 1000, t["new"][1],
                         relative(torch.cat(b), torch.cat(a)), load()))
    return rows


def step_part(base: dict, photos, rounds: int, tmp: Path) -> list[tuple]:
    from extract_gap import ground_truth, run_step  # benchmarks/extract_gap.py, beside this script

    from instance_search import threads

    params = copy.deepcopy(base)
    params["frcnn"]["extract"]["device"] = "cpu"
    gnd_json = ground_truth(tmp, "roi-step", photos)
    warm_json = ground_truth(tmp, "roi-warm", photos[:2])
    threads.apply(params["compute"]["threads"])
    run_step(params, "frcnn", warm_json, tmp / "warm")

    def old():
        threads.apply(params["compute"]["threads"])
        with old_path():
            run_step(params, "frcnn", gnd_json, tmp / "old")

    def new():
        threads.apply(params["compute"]["threads"])
        run_step(params, "frcnn", gnd_json, tmp / "new")

    t = interleaved({"old": old, "new": new}, rounds)
    stored = [sorted((tmp / k).rglob("*.npz")) for k in ("old", "new")]
    worst = 0.0
    for a, b in zip(*stored):
        with np.load(a) as x, np.load(b) as y:
            for key in x.files:
                if x[key].dtype.kind == "f" and x[key].size:
                    worst = max(worst, relative(y[key], x[key]))
    n = len(photos)
    return [("frcnn extract step (images/s)", n / t["old"][0], n / t["new"][0], t["new"][1], worst, load())]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5, help="rounds of the pooling part")
    ap.add_argument("--step-rounds", type=int, default=3)
    ap.add_argument("--parts", nargs="+", default=["pooling", "step"], choices=["pooling", "step"])
    ap.add_argument("--rpn-like", action="store_true", help="also 300 random boxes on a 256-channel map")
    args = ap.parse_args()

    import logging

    import torch

    from instance_search import threads
    from instance_search.config import load_params, schema_path
    from instance_search.datasets.folder import readable_images

    logging.basicConfig(level=logging.WARNING)
    base = load_params(REPO / args.params, schema_path(REPO / args.params))
    p = base["frcnn"]["extract"]
    if p["source"] != "grid" or p["roi"] != "align":
        print("error: this benchmark measures the grid source's RoIAlign (frcnn.extract.source grid, roi align)",
              file=sys.stderr)
        return 1
    photos = readable_images(PHOTOS)[2:2 + args.images]
    paths = [str(PHOTOS / im.path) for im in photos]
    threads.apply(base["compute"]["threads"])
    torch.set_num_threads(threads.resolve(base["compute"]["threads"]))
    print(f"{hardware()}; torch {torch.__version__}; {args.params}; {args.images} photos; torch threads "
          f"{torch.get_num_threads()}; load before {load()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if "pooling" in args.parts:
            rows += pooling_part(p, paths, args.rounds, args.rpn_like)
            print(f"  pooling done ({args.rounds} rounds, load {load()})", flush=True)
        if "step" in args.parts:
            rows += step_part(base, photos, args.step_rounds, Path(tmp))
            print(f"  step done ({args.step_rounds} rounds, load {load()})", flush=True)
    print("\n| what | torchvision's RoIAlign | matrix products | x | max difference / max value | load after |\n"
          "|---|---:|---:|---:|---:|---|")
    for name, old, new, ratio, rel, ld in rows:
        unit = "" if "images/s" in name else " ms"
        print(f"| {name} | {old:.2f}{unit} | {new:.2f}{unit} | {ratio:.2f} | {rel:.1e} | {ld} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
