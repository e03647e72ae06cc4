"""How far each method's extract step is from its network alone, and where the step's time goes.

For each method (blcf, frcnn, gem, xfeat; sift for comparison) at a params file's settings, on N
real photos of ../shared/data/ukbench-500 (640x480 JPEGs):

* step: ``pipeline.steps.extract`` on a ground truth of the N photos (as benchmarks/gpu_check.py
  builds it): loading the network, decoding, resizing, the forward passes, pooling or keypoint
  selection, writing the store, in the step's own DataLoader workers and threads;
* network: the backbone's forward pass alone on the same images already decoded and resized (in
  memory), the same sizes, batches (gem: each scale, one image at a time) and thread count
  (compute.threads); sift: OpenCV's detectAndCompute on the decoded, resized grey images.

The two are measured side by side, interleaved round by round (the order reversed every other round),
so a drifting load hits both; each figure is the median over rounds and the ratio (step images/s over
network images/s) is the median of the per-round ratios. Then one instrumented pass of the step with
workers 0 (everything in this process) splits its time into phases: the file check (Pillow's
reduced-size decode that catches truncated files), decoding (cv2.imdecode), resizing and normalising,
the network (its top-level forward, timed by module hooks), pooling or encoding (the rest of the
library's extraction call) and the rest of the step (loading the network, writing the store).

Networks whose weights are not on this machine (params-full.yaml's vgg16 and COCO detector) are
replaced as gpu_check.py does (mobilenet_v2, frcnn's grid of windows), and the table says so.
Run from the repository root::

    python benchmarks/extract_gap.py                  # params.yaml, 24 photos, 3 rounds (a few minutes)
    python benchmarks/extract_gap.py --quick          # 8 photos, 2 rounds (about a minute)
    python benchmarks/extract_gap.py --params params-full.yaml --methods blcf frcnn
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from machine import hardware  # benchmarks/machine.py, beside this script

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "ukbench-500" / "jpg"
METHODS = ("blcf", "frcnn", "gem", "xfeat", "sift")


def offline(settings: dict) -> str:
    """gpu_check.py's substitution of the networks whose weights are absent offline (a note, or '')."""
    from instance_search.features import backbones

    changed = []
    if settings.get("source") == "rpn":
        settings["source"] = "grid"
        changed.append("grid for rpn")
    if "backbone" in settings and not backbones.weight_file(settings["backbone"]).is_file():
        changed.append(f"mobilenet_v2 for {settings['backbone']}")
        settings["backbone"] = "mobilenet_v2"
        settings["layer"] = "features.18" if settings.get("layer") else ""
    return ", ".join(changed)


def ground_truth(tmp: Path, name: str, photos: list[str]) -> Path:
    from instance_search import groundtruth
    from instance_search.groundtruth import GroundTruth

    gnd = GroundTruth(dataset=name, root=str(PHOTOS), images=photos, n_database=len(photos), labelled=False)
    groundtruth.save(gnd, tmp / f"{name}.json")
    return tmp / f"{name}.json"


def run_step(params: dict, method: str, gnd_json: Path, out: Path) -> float:
    import shutil

    from instance_search.pipeline import steps

    shutil.rmtree(out, ignore_errors=True)
    start = time.perf_counter()
    steps.extract(params, gnd_json.stem, method, gnd_json, out)
    return time.perf_counter() - start


# ------------------------------------------------------------------------------ network alone

def network_alone(method: str, p: dict, paths: list[str]):
    """A callable that runs the method's network once over all images (inputs prepared in memory)."""
    import cv2
    import torch

    from instance_search.features import cnn, frcnn, xfeat
    from instance_search.io import read_image

    images = [read_image(path, cv2.IMREAD_COLOR) for path in paths]
    if method == "sift":
        from instance_search.features.sift import make_detector

        greys = []
        for bgr in images:
            grey = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
            h, w = grey.shape
            if p["max_side"] and max(h, w) > p["max_side"]:
                s = p["max_side"] / max(h, w)
                grey = cv2.resize(grey, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
            greys.append(grey)
        from concurrent.futures import ThreadPoolExecutor

        # as the step: os.cpu_count() threads, one detector each image (OpenCV releases the GIL)
        def run():
            with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
                list(pool.map(lambda g: make_detector(p["max_features"], p["contrast_threshold"])
                              .detectAndCompute(g, None), greys))
        return run
    if method == "xfeat":
        ex = xfeat.Extractor("cpu")
        xs = []
        for bgr in images:
            h, w = bgr.shape[:2]
            nw, nh = xfeat.network_size(w, h, p["max_side"])
            rgb = cv2.cvtColor(cv2.resize(bgr, (nw, nh), interpolation=cv2.INTER_AREA if nw < w else cv2.INTER_LINEAR),
                               cv2.COLOR_BGR2RGB)
            xs.append(torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].float())
        net = ex.net
    elif method == "gem":
        ex = cnn.Extractor(p["backbone"], p["layer"] or None, "cpu", False)
        pre = cnn.Preprocess(ex.mean, ex.std)
        xs = []
        for bgr in images:
            h, w = bgr.shape[:2]
            side = p["max_side"] or max(w, h)
            for s in p["scales"]:
                size = cnn.resized_size(w, h, max(1, round(side * s)), ex.stride)
                xs.append(torch.from_numpy(pre(bgr, size))[None])
        net = ex.net
    else:
        if method == "blcf":
            ex = cnn.Extractor(p["backbone"], p["layer"] or None, "cpu", False)
            net, mean, std, min_side = ex.net, ex.mean, ex.std, ex.stride
        else:
            ex = frcnn.RegionExtractor(p["source"], backbone=p["backbone"], layer=p["layer"] or None, device="cpu")
            net, mean, std, min_side = ex.source.net, ex.mean, ex.std, ex.min_side
        pre = cnn.Preprocess(mean, std)
        sizes = [cnn.resized_size(bgr.shape[1], bgr.shape[0], p["max_side"], min_side) for bgr in images]
        xs = [torch.from_numpy(np.stack([pre(images[k], sizes[k]) for k in batch]))
              for batch in cnn.size_batches(sizes, p["batch_size"])]

    # the library's own call of its network (cnn.layer_map: the layout it runs in), xfeat's as it calls it
    call = (lambda x: net(x)) if method == "xfeat" else (lambda x: cnn.layer_map(net, x))

    def forward():
        with torch.no_grad():
            for x in xs:
                call(x)
    return forward


# ------------------------------------------------------------------------------ phases

class Phases:
    """Seconds spent in each phase of one instrumented step (patched library functions)."""

    def __init__(self):
        self.t = dict.fromkeys(("check", "decode", "resize", "network", "extract", "load", "write", "step"), 0.0)
        self.depth = 0
        self.inside = 0     # within the library's extraction call: the networks' probes at load are not counted
        self.started = 0.0

    def timed(self, key, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            self.inside += key == "extract"
            try:
                return fn(*args, **kwargs)
            finally:
                self.inside -= key == "extract"
                self.t[key] += time.perf_counter() - start
        return wrapper

    @contextlib.contextmanager
    def patched(self, method: str):
        """The library's functions wrapped with timers for the duration of one step."""
        import torch

        from instance_search import io
        from instance_search.features import cnn, frcnn, gem, sift, xfeat

        saved = []

        def patch(obj, name, key):
            saved.append((obj, name, getattr(obj, name)))
            setattr(obj, name, self.timed(key, getattr(obj, name)))

        from instance_search.features import store
        from instance_search.methods import global_features

        patch(io, "_check_with_pil", "check")
        patch(store, "save_npz", "write")
        patch(global_features, "save_npz", "write")
        patch(cnn.Extractor, "__post_init__", "load")
        patch(frcnn.RegionExtractor, "__init__", "load")
        patch(xfeat.Extractor, "__init__", "load")
        patch(io.cv2, "imdecode", "decode")
        patch(cnn.Preprocess, "__call__", "resize")
        if method == "blcf":
            patch(cnn, "extract_images", "extract")
        elif method == "frcnn":
            patch(frcnn, "extract_images", "extract")
        elif method == "gem":
            patch(gem, "describe", "extract")
        elif method == "xfeat":
            patch(xfeat.Extractor, "extract", "extract")
        elif method == "sift":
            patch(sift, "extract", "extract")
            # sift's store extracts in os.cpu_count() threads: one here, so the phases add up to the step
            saved.append((os, "cpu_count", os.cpu_count))
            os.cpu_count = lambda: 1
        if method in ("xfeat", "sift"):  # they resize with OpenCV themselves, not with Preprocess
            patch(io.cv2, "resize", "resize")
            patch(io.cv2, "cvtColor", "resize")

        # the network: the outermost module call (a forward within a forward is not counted twice)
        def pre(module, args):
            if not self.inside:
                return
            if self.depth == 0:
                self.started = time.perf_counter()
            self.depth += 1

        def post(module, args, out):
            if not self.inside:
                return
            self.depth -= 1
            if self.depth == 0:
                self.t["network"] += time.perf_counter() - self.started

        hooks = [torch.nn.modules.module.register_module_forward_pre_hook(pre),
                 torch.nn.modules.module.register_module_forward_hook(post)]
        try:
            yield self
        finally:
            for h in hooks:
                h.remove()
            for obj, name, fn in reversed(saved):
                setattr(obj, name, fn)

    def shares(self, n: int) -> dict:
        """ms an image per phase: file check, decode, resize, network, pool/encode, load, write, the rest."""
        t = self.t
        pool = t["extract"] - t["check"] - t["decode"] - t["resize"] - t["network"]
        rest = t["step"] - t["extract"] - t["load"] - t["write"]
        return {f"{k}_ms": v / n * 1000 for k, v in
                (("check", t["check"]), ("decode", t["decode"]), ("resize", t["resize"]), ("network", t["network"]),
                 ("pool", pool), ("load", t["load"]), ("write", t["write"]), ("rest", rest), ("step", t["step"]))}


def method_params(base: dict, method: str) -> tuple[dict, str]:
    params = copy.deepcopy(base)
    note = offline(params[method]["extract"])
    params[method]["extract"]["device"] = "cpu"
    return params, note


def measure(base: dict, method: str, photos: list[str], rounds: int, tmp: Path) -> dict:
    from instance_search import threads

    params, note = method_params(base, method)
    p = params[method]["extract"]
    gnd_json = ground_truth(tmp, f"gap-{method}", photos)
    warm_json = ground_truth(tmp, f"warm-{method}", photos[:2])
    run_step(params, method, warm_json, tmp / "warm")  # imports, first allocations, the file cache
    threads.apply(params["compute"]["threads"])
    forward = network_alone(method, p, [str(PHOTOS / im.path) for im in photos])
    forward()
    step_s, net_s, ratios = [], [], []
    for r in range(rounds):
        order = ("step", "net") if r % 2 == 0 else ("net", "step")
        got = {}
        for what in order:
            if what == "step":
                got[what] = run_step(params, method, gnd_json, tmp / "out")
            else:
                threads.apply(params["compute"]["threads"])
                start = time.perf_counter()
                forward()
                got[what] = time.perf_counter() - start
        step_s.append(got["step"])
        net_s.append(got["net"])
        ratios.append(got["net"] / got["step"])
    # the phases: one pass of the step with workers 0, every phase in this process
    serial = copy.deepcopy(params)
    if "workers" in serial[method]["extract"]:
        serial[method]["extract"]["workers"] = 0
    ph = Phases()
    with ph.patched(method):
        ph.t["step"] = run_step(serial, method, gnd_json, tmp / "serial")
    n = len(photos)
    return {"method": method, "note": note, "threads": params["compute"]["threads"],
            "workers": p.get("workers", "-" if method != "sift" else f"{os.cpu_count()} threads"),
            "batch": p.get("batch_size", "-"),
            "step": n / statistics.median(step_s), "net": n / statistics.median(net_s),
            "ratio": statistics.median(ratios), "phases": ph.shares(n)}


def load() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--images", type=int, default=24, help="photos a round (after 2 warm-up photos)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="8 photos, 2 rounds: about a minute")
    args = ap.parse_args()
    if args.quick:
        args.images, args.rounds = 8, 2

    import logging

    import torch

    from instance_search.config import load_params, schema_path
    from instance_search.datasets.folder import readable_images

    logging.basicConfig(level=logging.WARNING)
    base = load_params(REPO / args.params, schema_path(REPO / args.params))
    listed = readable_images(PHOTOS)
    if len(listed) < args.images + 2:
        print(f"error: {PHOTOS} holds {len(listed)} images; {args.images + 2} are needed", file=sys.stderr)
        return 1
    photos = listed[2:2 + args.images]
    print(f"{hardware()}; torch {torch.__version__}; {args.params}; {args.images} photos x {args.rounds} rounds; "
          f"load before {load()}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods:
            rows.append(measure(base, method, photos, args.rounds, Path(tmp)))
            print(f"  {method} done (load {load()})", flush=True)
    print(f"\n| method | settings | step images/s | network alone images/s | step / network |\n|---|---|---:|---:|---:|")
    for r in rows:
        settings = f"threads {r['threads']}, workers {r['workers']}, batch {r['batch']}" + \
            (f" ({r['note']}: weights absent)" if r["note"] else "")
        print(f"| {r['method']} | {settings} | {r['step']:.2f} | {r['net']:.2f} | {r['ratio']:.2f} |")
    print("\nPhases of one pass with workers 0 (ms an image, share of the step):\n")
    keys = ("check", "decode", "resize", "network", "pool", "load", "write", "rest")
    print("| method | " + " | ".join(("file check", "decode", "resize", "network", "pool/encode (sift: detect)",
                                       "load network", "write store", "the rest")) + " | step |\n|---|" + "---:|" * 9)
    for r in rows:
        ph = r["phases"]
        cells = [f"{ph[k + '_ms']:.1f} ({ph[k + '_ms'] / ph['step_ms']:.0%})" for k in keys]
        print(f"| {r['method']} | " + " | ".join(cells) + f" | {ph['step_ms']:.1f} |")
    print(f"\nload after {load()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
