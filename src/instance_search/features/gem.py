"""Global descriptors: one GeM-pooled vector per image (Radenovic, Tolias, Chum, TPAMI 2018).

Generalised-mean pooling of a backbone's map x (C channels over the cells Omega)::

    f_c = ( 1/|Omega| sum_{u in Omega} max(x_cu, eps)^p )^(1/p)

p = 1 is average pooling, p -> infinity max pooling (p = 3: the paper's fixed value). Multi-scale:
the image is fed at each scale s (longer side ``max_side * s``), each scale's vector L2-normalised,
their sum L2-normalised again. A query with a box is the image cropped to its box (the revisited
protocol), fed the same way. Images are decoded and resized in DataLoader workers; the network runs
one image and scale at a time (sizes differ), on the GPU when there is one.
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from ..errors import InstanceSearchError
from ..io import read_image
from ..retrieval.geometry import Box
from ..retrieval.linalg import l2
from .cnn import Extractor, Preprocess, layer_map, resized_size

log = logging.getLogger(__name__)

EPS = 1e-6


def gem(maps: np.ndarray, p: float) -> np.ndarray:
    """(..., gh, gw, C) maps -> (..., C) GeM vectors (float64), the formula above."""
    if p <= 0:
        raise InstanceSearchError(f"gem.extract.p={p}: must be > 0")
    x = np.maximum(np.asarray(maps, np.float64), EPS)
    return np.mean(x ** p, axis=(-3, -2)) ** (1.0 / p)


def crop(bgr: np.ndarray, box: Box | None) -> np.ndarray:
    """The pixels inside ``box`` (x1, y1, x2, y2, original pixels; at least one pixel), or the image."""
    if box is None:
        return bgr
    h, w = bgr.shape[:2]
    x1, y1 = int(np.clip(np.floor(box[0]), 0, w - 1)), int(np.clip(np.floor(box[1]), 0, h - 1))
    x2, y2 = int(np.clip(np.ceil(box[2]), x1 + 1, w)), int(np.clip(np.ceil(box[3]), y1 + 1, h))
    return bgr[y1:y2, x1:x2]


class ScaledImages:
    """torch Dataset: item k is (k, [the image, cropped to its box if any, preprocessed at each scale])."""

    def __init__(self, paths, boxes, scales, max_side: int, min_side: int, pre: Preprocess):
        self.paths, self.boxes, self.scales = paths, boxes, scales
        self.max_side, self.min_side, self.pre = max_side, min_side, pre

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, k):
        bgr = crop(read_image(self.paths[k], cv2.IMREAD_COLOR), self.boxes[k])
        h, w = bgr.shape[:2]
        side = self.max_side or max(w, h)
        return k, [self.pre(bgr, resized_size(w, h, max(1, round(side * s)), self.min_side)) for s in self.scales]


def describe(extractor: Extractor, paths: list[str], boxes: list[Box | None], *, scales, p: float, max_side: int,
             workers: int) -> np.ndarray:
    """(n, C) float32 multi-scale GeM vectors of the images (each cropped to its box, if any), in order."""
    import torch
    from torch.utils.data import DataLoader

    if not scales:
        raise InstanceSearchError("gem.extract.scales: give at least one scale")
    loader = DataLoader(ScaledImages(paths, boxes, scales, max_side, extractor.stride,
                                     Preprocess(extractor.mean, extractor.std)),
                        batch_size=None, num_workers=workers, pin_memory=extractor.device == "cuda")
    out = np.zeros((len(paths), extractor.dim), np.float64)
    for k, images in loader:
        total = np.zeros(extractor.dim)
        for x in images:
            x = torch.as_tensor(x)[None].to(extractor.device, non_blocking=True)
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=extractor.half):
                m = layer_map(extractor.net, x)
                v = m.clamp(min=EPS).pow(p).mean(dim=(2, 3)).pow(1.0 / p)[0]
            total += l2(v.cpu().numpy().astype(np.float64))
        out[k] = l2(total)
    return out.astype(np.float32)
