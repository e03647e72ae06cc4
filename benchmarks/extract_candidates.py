"""Candidate speed-ups of CNN extraction, each measured against today's path in the same run, with
what it does to the features (byte-identical, within float16 rounding, or changed).

On N ukbench-500 photos at params.yaml's settings (mobilenet_v2 features.18, the backbone of blcf,
frcnn's grid and gem), compute.threads 1:

* network: torch.inference_mode in place of no_grad; channels-last memory format; the network frozen
  by TorchScript (optimize_for_inference: batch norm folded into the convolutions), on gem's inputs
  (3 scales, one image at a time); features compared as gem's vectors and as the raw maps;
* decode: OpenCV's reduced-size JPEG decoding (IMREAD_REDUCED_COLOR_2) for gem's half scale,
  against decoding in full and resizing (INTER_AREA, as Preprocess);
* frcnn's region pooling: RoIAlign (torchvision, 7x7 bins, 2x2 samples) then max, against the same
  bilinear samples as one sparse-weights matrix product over the map;
* the step: gem's and blcf's extract step with DataLoader workers 0 vs 2 and compute.threads 1 vs 2;
* networks (``--parts networks``): the frozen graph against the eager network for params-full.yaml's
  other backbones (vgg16, resnet50; mobilenet_v2 at 1024 px) with random weights;
* layout (``--parts layout``): blcf's, frcnn's and gem's steps with the library's frozen-graph switch
  (features/cnn.py FROZEN_ON_CPU) off (the eager network) and on.

Interleaved rounds, medians, ratios to the baseline measured in the same round. Run from the
repository root:  python benchmarks/extract_candidates.py [--images 16 --rounds 3]
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

from machine import hardware, interleaved

REPO = Path(__file__).resolve().parents[1]
PHOTOS = REPO.parent / "shared" / "data" / "ukbench-500" / "jpg"


def diff(a, b) -> str:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape == b.shape and np.array_equal(a, b):
        return "byte-identical"
    d = np.abs(a - b).max()
    return f"max |a-b| {d:.2e}, relative {d / max(np.abs(a).max(), 1e-30):.2e}"


def network_candidates(paths, rounds):
    import cv2
    import torch

    from instance_search.features import backbones, cnn
    from instance_search.io import read_image
    from instance_search.retrieval.linalg import l2

    ex = cnn.Extractor("mobilenet_v2", "features.18", "cpu", False)
    pre = cnn.Preprocess(ex.mean, ex.std)
    xs = []
    for path in paths:
        bgr = read_image(path, cv2.IMREAD_COLOR)
        h, w = bgr.shape[:2]
        for s in (1.0, 0.7071, 0.5):
            xs.append(torch.from_numpy(pre(bgr, cnn.resized_size(w, h, max(1, round(640 * s)), ex.stride)))[None])
    net = backbones.load("mobilenet_v2", "features.18")[0]  # the eager network
    frozen = cnn.prepare(net, "cpu")  # the library's path since the frozen graph
    cl = copy.deepcopy(net).eval().to(memory_format=torch.channels_last)  # a GraphModule's copy is in training mode

    def runner(ctx, model, fmt=None, key=True):
        def run():
            out = []
            with ctx():
                for x in xs:
                    if fmt is not None:
                        x = x.contiguous(memory_format=fmt)
                    m = model(x)
                    out.append((m["map"] if key else m).float().contiguous())
            return out
        return run

    variants = {"eager no_grad (before)": runner(torch.no_grad, net),
                "inference_mode": runner(torch.inference_mode, net),
                "channels_last": runner(torch.no_grad, cl, torch.channels_last),
                "TorchScript frozen": runner(torch.no_grad, frozen, key=False)}
    for v in variants.values():
        v()  # warm-up (the frozen graph's first runs optimise it)
        v()
    timing = interleaved(variants, rounds)

    def gem_vectors(maps):
        out = []
        for i in range(0, len(maps), 3):
            total = np.zeros(maps[0].shape[1])
            for m in maps[i:i + 3]:
                v = m.clamp(min=1e-6).pow(3.0).mean(dim=(2, 3)).pow(1 / 3.0)[0]
                total += l2(v.numpy().astype(np.float64))
            out.append(l2(total).astype(np.float32))
        return np.stack(out)

    base_maps = variants["eager no_grad (before)"]()
    base_vec = gem_vectors(base_maps)
    rows = []
    for k, run in variants.items():
        maps = run()
        rows.append((f"network: {k}", len(paths) / timing[k][0], timing[k][1],
                     f"maps {diff(torch.cat([m.flatten() for m in base_maps]), torch.cat([m.flatten() for m in maps]))}; "
                     f"gem {diff(base_vec, gem_vectors(maps))}"))
    return rows


def other_networks(rounds):
    """The frozen graph against the eager network for params-full.yaml's other backbones, at its sizes,
    with random weights (their files are not offline; the speed does not depend on the values)."""
    import torch
    import torchvision
    from torchvision.models.feature_extraction import create_feature_extractor

    from instance_search.features import cnn

    rows = []
    for name, layer, (h, w) in (("vgg16", "features.25", (255, 340)), ("resnet50", "layer3", (480, 640)),
                                ("mobilenet_v2", "features.18", (768, 1024))):
        net = create_feature_extractor(getattr(torchvision.models, name)(weights=None).eval(),
                                       return_nodes={layer: "map"}).eval()
        for param in net.parameters():
            param.requires_grad_(False)  # as backbones.load leaves them
        eager, frozen = cnn._Map(net), cnn.prepare(net, "cpu")
        x = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(0))

        def run(f):
            def go():
                with torch.no_grad():
                    return f(x)
            return go
        variants = {"eager": run(eager), "frozen": run(frozen)}
        for v in variants.values():
            v(), v()  # warm-up: oneDNN's first call at this size
        timing = interleaved(variants, rounds)
        rows.append((f"{name} {layer} at {w}x{h}, random weights: frozen", 1 / timing["frozen"][0],
                     timing["frozen"][1], diff(variants["eager"](), variants["frozen"]())))
    return rows


def decode_candidates(paths, rounds):
    import cv2

    from instance_search.features import cnn
    from instance_search.io import read_image

    pre = cnn.Preprocess((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    datas = [np.fromfile(p, np.uint8) for p in paths]

    def full():
        return [pre(cv2.imdecode(d, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION), (320, 240)) for d in datas]

    def reduced():
        return [pre(cv2.imdecode(d, cv2.IMREAD_REDUCED_COLOR_2 | cv2.IMREAD_IGNORE_ORIENTATION), (320, 240))
                for d in datas]

    def checked():
        return [read_image(p, cv2.IMREAD_COLOR) for p in paths]

    def unchecked():
        return [cv2.imdecode(d, cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION) for d in datas]

    t = interleaved({"full": full, "reduced": reduced}, rounds * 3)
    c = interleaved({"checked": checked, "unchecked": unchecked}, rounds * 3)
    n = len(paths)
    return [("decode + resize to gem's half scale (320x240): full decode (today)", n / t["full"][0], 1.0,
             "byte-identical"),
            ("  IMREAD_REDUCED_COLOR_2", n / t["reduced"][0], t["reduced"][1],
             f"input {diff(np.stack(full()), np.stack(reduced()))}"),
            ("read_image (Pillow's truncation check + decode, today)", n / c["checked"][0], 1.0, "byte-identical"),
            ("  cv2.imdecode alone (no check)", n / c["unchecked"][0], c["unchecked"][1],
             "pixels byte-identical; truncated files no longer refused")]


def roi_matrix(fmaps, rois, roi_size: int, sampling: int):
    """torchvision's roi_align (aligned=True, fixed sampling ratio) as one sparse matrix product:
    each bin's bilinear samples, averaged, become one row of weights over the map's cells."""
    import torch

    b_, c, h, w = fmaps.shape
    r = rois.double().numpy()
    n = len(r)
    x1, y1 = r[:, 1] - 0.5, r[:, 2] - 0.5
    bw, bh = (r[:, 3] - r[:, 1]) / roi_size, (r[:, 4] - r[:, 2]) / roi_size
    g = (np.arange(roi_size)[:, None] + (np.arange(sampling) + 0.5)[None] / sampling).ravel()  # bin + sample
    ys = y1[:, None] + g[None] * bh[:, None]   # (n, roi_size * sampling)
    xs = x1[:, None] + g[None] * bw[:, None]

    def axis(v, size):
        valid = (v >= -1.0) & (v <= size)
        v = np.maximum(v, 0.0)
        lo = np.floor(v).astype(np.int64)
        top = lo >= size - 1
        lo = np.where(top, size - 1, lo)
        hi = np.where(top, size - 1, lo + 1)
        v = np.where(top, lo, v)
        frac = v - lo
        return lo, hi, 1 - frac, frac, valid

    ylo, yhi, wy0, wy1, vy = axis(ys, h)
    xlo, xhi, wx0, wx1, vx = axis(xs, w)
    k = roi_size * sampling
    rows_, cols, vals = [], [], []
    rid = np.arange(n)[:, None, None]
    bin_ = (np.arange(k) // sampling)[:, None] * roi_size + (np.arange(k) // sampling)[None]
    row = (rid * roi_size * roi_size + bin_[None]).repeat(1, 0)
    for yi, wy in ((ylo, wy0), (yhi, wy1)):
        for xi, wx in ((xlo, wx0), (xhi, wx1)):
            cell = r[:, 0].astype(np.int64)[:, None, None] * h * w + yi[:, :, None] * w + xi[:, None, :]
            val = (wy[:, :, None] * wx[:, None, :]) * (vy[:, :, None] & vx[:, None, :]) / sampling ** 2
            rows_.append(np.broadcast_to(row, val.shape).ravel())
            cols.append(cell.ravel())
            vals.append(val.ravel())
    m = torch.sparse_coo_tensor(np.stack([np.concatenate(rows_), np.concatenate(cols)]),
                                np.concatenate(vals).astype(np.float32), (n * roi_size * roi_size, b_ * h * w))
    flat = fmaps.permute(0, 2, 3, 1).reshape(b_ * h * w, c)
    return torch.sparse.mm(m.coalesce(), flat).reshape(n, roi_size * roi_size, c)


def roi_candidates(paths, rounds):
    import cv2
    import torch

    from instance_search.features import cnn, frcnn
    from instance_search.io import read_image
    from instance_search.retrieval.geometry import pixel_windows

    ex = frcnn.RegionExtractor("grid", backbone="mobilenet_v2", layer="features.18", device="cpu")
    pre = cnn.Preprocess(ex.mean, ex.std)
    cases = []
    for path in paths:
        bgr = read_image(path, cv2.IMREAD_COLOR)
        h, w = bgr.shape[:2]
        size = cnn.resized_size(w, h, 512, ex.min_side)
        with torch.no_grad():
            fm = ex.source.net(torch.from_numpy(pre(bgr, size))[None]).float()
        boxes = pixel_windows(w, h, (1.0, 0.7, 0.5, 0.35), (0.5, 1.0, 2.0), 0.5, limit=300)
        mapped = frcnn._map_boxes(boxes, (w, h), (fm.shape[-1], fm.shape[-2]))
        cases.append((fm, torch.from_numpy(np.hstack([np.zeros((len(mapped), 1)), mapped])).float()))

    def today():
        return [frcnn._roi_vectors(fm, r, "max", "align", 7) for fm, r in cases]

    def matrix():
        return [roi_matrix(fm, r, 7, frcnn.SAMPLING_RATIO).amax(dim=1) for fm, r in cases]

    today(), matrix()
    t = interleaved({"today": today, "matrix": matrix}, rounds)
    a = torch.cat(today()).numpy()
    b = torch.cat(matrix()).numpy()
    n = len(paths)
    return [("frcnn region pooling (RoIAlign + max, ~190 windows, today)", n / t["today"][0], 1.0, "byte-identical"),
            ("  sparse-matrix RoIAlign + max", n / t["matrix"][0], t["matrix"][1], diff(a, b))]


def step_candidates(photos, rounds, tmp):
    import shutil

    from instance_search import groundtruth, threads
    from instance_search.config import load_params, schema_path
    from instance_search.groundtruth import GroundTruth
    from instance_search.io import load_npz
    from instance_search.pipeline import steps

    base = load_params(REPO / "params.yaml", schema_path(REPO / "params.yaml"))
    gnd = GroundTruth(dataset="cand", root=str(PHOTOS), images=photos, n_database=len(photos), labelled=False)
    groundtruth.save(gnd, tmp / "cand.json")
    rows = []
    for method in ("gem", "blcf"):
        variants, outs = {}, {}
        for workers, nthreads in ((2, 1), (0, 1), (0, 2), (2, 2)):
            params = copy.deepcopy(base)
            params[method]["extract"]["device"] = "cpu"
            params[method]["extract"]["workers"] = workers
            params["compute"]["threads"] = nthreads
            key = f"{method} step: workers {workers}, threads {nthreads}"
            out = tmp / key.replace(" ", "_").replace(":", "").replace(",", "")
            outs[key] = out

            def run(params=params, out=out, nthreads=nthreads):
                threads.apply(nthreads)  # as the step's runner does (steps.extract leaves the threads alone)
                shutil.rmtree(out, ignore_errors=True)
                steps.extract(params, "cand", method, tmp / "cand.json", out)
            variants[key] = run
        t = interleaved(variants, rounds)
        threads.apply(1)
        first = None
        for key, out in outs.items():
            arrays = {f"{p.relative_to(out)}:{k}": v for p in sorted(out.rglob("*.npz")) for k, v in load_npz(p).items()}
            if first is None:
                first = arrays
                effect = "byte-identical (baseline)"
            else:
                same = arrays.keys() == first.keys() and all(np.array_equal(arrays[k], first[k]) for k in first)
                effect = "byte-identical" if same else "; ".join(
                    f"{k.split(':')[-1]} {diff(first[k], arrays[k])}" for k in first
                    if arrays[k].dtype.kind == "f" and not np.array_equal(first[k], arrays[k]))[:200]
            rows.append((key, len(photos) / t[key][0], t[key][1], effect))
    return rows


def layout_candidates(photos, rounds, tmp):
    """The library's channels-last switch (features/cnn.py) on and off, each method's whole step."""
    import shutil

    from instance_search import groundtruth
    from instance_search.config import load_params, schema_path
    from instance_search.features import cnn
    from instance_search.groundtruth import GroundTruth
    from instance_search.io import load_npz
    from instance_search.pipeline import steps

    base = load_params(REPO / "params.yaml", schema_path(REPO / "params.yaml"))
    gnd = GroundTruth(dataset="layout", root=str(PHOTOS), images=photos, n_database=len(photos), labelled=False)
    groundtruth.save(gnd, tmp / "layout.json")
    rows = []
    for method in ("blcf", "frcnn", "gem"):
        params = copy.deepcopy(base)
        params[method]["extract"]["device"] = "cpu"
        variants = {}
        for on in (False, True):
            def run(on=on):
                cnn.FROZEN_ON_CPU = on
                shutil.rmtree(tmp / f"layout-{on}", ignore_errors=True)
                steps.extract(params, "layout", method, tmp / "layout.json", tmp / f"layout-{on}")
            variants[f"{method} step, channels-last {'on' if on else 'off (NCHW, before)'}"] = run
        t = interleaved(variants, rounds)
        cnn.FROZEN_ON_CPU = True
        arrays = [{f"{p.name}:{k}": v for p in sorted((tmp / f"layout-{on}").rglob("*.npz"))
                   for k, v in load_npz(p).items()} for on in (False, True)]
        same = arrays[0].keys() == arrays[1].keys() and all(np.array_equal(arrays[0][k], arrays[1][k])
                                                            for k in arrays[0])
        for key, (secs, ratio) in t.items():
            rows.append((key, len(photos) / secs, ratio, "byte-identical" if same else "bytes differ"))
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parts", nargs="+", default=["network", "decode", "roi", "step"])
    args = ap.parse_args()

    import logging

    import torch

    from instance_search import threads
    from instance_search.datasets.folder import readable_images

    logging.basicConfig(level=logging.WARNING)
    photos = readable_images(PHOTOS)[2:2 + args.images]
    paths = [str(PHOTOS / im.path) for im in photos]
    print(f"{hardware()}; torch {torch.__version__}; {args.images} photos x {args.rounds} rounds; "
          f"load before {', '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for part in args.parts:
            threads.apply(1)
            rows += {"network": lambda: network_candidates(paths, args.rounds),
                     "decode": lambda: decode_candidates(paths, args.rounds),
                     "roi": lambda: roi_candidates(paths, args.rounds),
                     "step": lambda: step_candidates(photos, args.rounds, Path(tmp)),
                     "layout": lambda: layout_candidates(photos, args.rounds, Path(tmp)),
                     "networks": lambda: other_networks(args.rounds)}[part]()
            print(f"  {part} done (load {', '.join(f'{x:.2f}' for x in os.getloadavg())})", flush=True)
    print("\n| candidate | images/s | x today | features |\n|---|---:|---:|---|")
    for name, rate, ratio, effect in rows:
        print(f"| {name} | {rate:.2f} | {ratio:.2f} | {effect} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
