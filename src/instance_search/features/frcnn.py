"""Faster R-CNN features (Salvador et al., CVPRW 2016): one conv map per image, pooled whole and per proposal.

Each image runs once, at its own aspect ratio with its longer side resized to ``max_side`` (cnn.py's
``resized_size``); images of equal resized size are batched. From the one map we keep

- the image-wise vector: the map pooled (sum or max) over the cells that cover the image;
- P proposals with boxes in ORIGINAL pixels (x1, y1, x2, y2) and their region vectors: RoIAlign (or
  RoIPool) on the same map into a roi_size x roi_size grid, then sum or max over that grid.

Proposal sources (``source``):

- ``rpn``: a torchvision Faster R-CNN with COCO weights (default fasterrcnn_resnet50_fpn, as the
  reproduced system): its normalisation and padding (to a multiple of 32), its backbone + FPN, its RPN's
  top P boxes after NMS (objectness order); the pooled map is one FPN level (default "3", the coarsest,
  256-d: ``backbone.fpn.layer_blocks[3]``). Never run with untrained weights: a missing COCO file is an
  error naming the file, its hash prefix and where it goes.
- ``grid``: no learned proposals: a deterministic multi-scale sliding-window grid (:func:`retrieval.geometry.pixel_windows`),
  the whole image first; the map comes from an ImageNet backbone (``backbones.load``).

Geometry. A map of gh x gw cells tiles an *extent* ex x ey of original pixels: the image itself for the
grid source; for the RPN the padded network input, i.e. (pw W / w, ph H / h) for an image W x H fed at
w x h and padded to pw x ph. Cell (i, j) covers [j ex/gw, (j+1) ex/gw) x [i ey/gh, (i+1) ey/gh) (as in
cnn.py), so a box in original pixels maps to map coordinates by x gw / ex, y gh / ey, and RoIAlign runs
with ``aligned=True`` (a sample at map coordinate c reads cell c - 0.5, i.e. cell centres sit at j + 0.5).
An RPN box b in network pixels maps to original pixels exactly by b_x W / w, b_y H / h.

An image for which the source proposes nothing (an RPN whose boxes were all removed) gets the
whole-image box instead; :func:`extract_images` counts and logs those images.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import threads
from ..errors import InstanceSearchError
from ..retrieval.geometry import pixel_windows
from . import backbones
from .cnn import ImageBatches, Preprocess, collate, layer_map, prepare, resized_size, size_batches

log = logging.getLogger(__name__)

SOURCES = ("rpn", "grid")
POOLINGS = ("sum", "max")
ROI_OPS = ("align", "pool")

# torchvision's Faster R-CNN variants and their COCO weights ("<Enum>.<MEMBER>").
DETECTORS = {
    "fasterrcnn_resnet50_fpn": "FasterRCNN_ResNet50_FPN_Weights.COCO_V1",
    "fasterrcnn_resnet50_fpn_v2": "FasterRCNN_ResNet50_FPN_V2_Weights.COCO_V1",
    "fasterrcnn_mobilenet_v3_large_fpn": "FasterRCNN_MobileNet_V3_Large_FPN_Weights.COCO_V1",
    "fasterrcnn_mobilenet_v3_large_320_fpn": "FasterRCNN_MobileNet_V3_Large_320_FPN_Weights.COCO_V1",
}

# RoIAlign samples per bin side (torchvision's MultiScaleRoIAlign uses 2): fixed, so a region vector
# never depends on the box size through the number of samples.
SAMPLING_RATIO = 2


# ------------------------------------------------------------------------------------------ storage

@dataclass
class ImageRegions:
    """What the extraction keeps of one image."""

    vector: np.ndarray                  # (C,) float32 image-wise pooled vector
    boxes: np.ndarray                   # (P, 4) float32 proposals, original pixels (x1, y1, x2, y2)
    regions: np.ndarray                 # (P, C) float32 region-pooled vectors of the proposals
    extra: np.ndarray                   # (m, C) float32 pooled vectors of the caller's boxes (query boxes)
    fallback: bool = False              # the source proposed nothing: boxes is the whole image
    extent: tuple[float, float] = (0.0, 0.0)   # original-pixel extent the map tiles (pool_box)
    map: np.ndarray | None = field(default=None, repr=False)  # (C, gh, gw) float32, only if asked


@dataclass
class RegionFeatures:
    """Images' region features in flat arrays (what an extraction shard holds and re-ranking reads).

    vectors (n, C) float32; regions (M, C) float16 and boxes (M, 4) float32 of all proposals, image i
    owning rows offsets[i]:offsets[i + 1]; offsets (n + 1,) int64.
    """

    vectors: np.ndarray
    regions: np.ndarray
    boxes: np.ndarray
    offsets: np.ndarray

    @classmethod
    def from_images(cls, images: Sequence[ImageRegions]) -> "RegionFeatures":
        if not images:
            raise InstanceSearchError("no images to gather region features from")
        counts = [len(r.boxes) for r in images]
        return cls(np.stack([r.vector for r in images]).astype(np.float32),
                   np.concatenate([r.regions for r in images]).astype(np.float16),
                   np.concatenate([r.boxes for r in images]).astype(np.float32),
                   np.concatenate([[0], np.cumsum(counts)]).astype(np.int64))

    def image(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """(boxes (P, 4) float32, region vectors (P, C) float16) of image i: a ``GetRegions``."""
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return self.boxes[lo:hi], self.regions[lo:hi]


# ------------------------------------------------------------------------------------------ weights

def _detector_weights(detector: str):
    import torchvision.models.detection as detection

    if detector not in DETECTORS:
        raise InstanceSearchError(f"frcnn.extract.detector={detector!r} is unknown; choose one of "
                                  f"{', '.join(sorted(DETECTORS))}")
    enum, member = DETECTORS[detector].split(".")
    return getattr(getattr(detection, enum), member)


def detector_weight_file(detector: str) -> Path:
    """Where torchvision looks for the detector's COCO weights ($TORCH_HOME/hub/checkpoints/<file>)."""
    return backbones.checkpoint_dir() / os.path.basename(_detector_weights(detector).url)


def check_detector_weights(detector: str) -> Path:
    """The weight file, present and with the sha256 its name promises (torchvision checks the hash only
    when it downloads, and a truncated copy would otherwise fail with a torch traceback)."""
    path = detector_weight_file(detector)
    url = _detector_weights(detector).url
    prefix = backbones.expected_hash_prefix(path)
    if not path.is_file():
        raise InstanceSearchError(
            f"{path}: the COCO weights of {detector} are missing (file {path.name}, sha256 starts with {prefix}); "
            f"download {url} on a connected machine and put it in {path.parent} ($TORCH_HOME/hub/checkpoints), "
            f"or set frcnn.extract.source=grid, which needs no detector weights")
    digest = backbones.sha256(path)
    if not digest.startswith(prefix):
        raise InstanceSearchError(f"{path}: sha256 {digest[:16]}... does not start with {prefix} (truncated or "
                                  f"another file); download {url} again")
    return path


def load_detector(detector: str, proposals: int):
    """The COCO-trained detector (eval mode, CPU) keeping its top ``proposals`` RPN boxes after NMS."""
    import torchvision.models.detection as detection

    threads.sync_torch()
    weights = _detector_weights(detector)
    check_detector_weights(detector)
    model = getattr(detection, detector)(weights=None, weights_backbone=None, rpn_post_nms_top_n_test=proposals,
                                         num_classes=len(weights.meta["categories"]))
    model.load_state_dict(weights.get_state_dict(progress=False, check_hash=True))
    return model.eval()


# --------------------------------------------------------------------------------------- geometry

def to_original(boxes: np.ndarray, fed: tuple[int, int], original: tuple[int, int]) -> np.ndarray:
    """Boxes in network-input pixels of an image fed at fed = (w, h) -> original (W, H) pixels, float32."""
    (w, h), (W, H) = fed, original
    scale = np.array([W / w, H / h, W / w, H / h])
    return (np.asarray(boxes, np.float64).reshape(-1, 4) * scale).astype(np.float32)


def _map_boxes(boxes: np.ndarray, extent: tuple[float, float], cells: tuple[int, int]) -> np.ndarray:
    """Original-pixel boxes -> map coordinates of a gw x gh map tiling ``extent`` (module docstring)."""
    (ex, ey), (gw, gh) = extent, cells
    return np.asarray(boxes, np.float64).reshape(-1, 4) * np.array([gw / ex, gh / ey, gw / ex, gh / ey])


# ---------------------------------------------------------------------------------------- pooling

def _check(pooling: str, roi: str) -> None:
    if pooling not in POOLINGS:
        raise InstanceSearchError(f"frcnn.extract.pooling={pooling!r}: expected one of {', '.join(POOLINGS)}")
    if roi not in ROI_OPS:
        raise InstanceSearchError(f"frcnn.extract.roi={roi!r}: expected one of {', '.join(ROI_OPS)}")


def _reduce(x, pooling: str, dims):
    return x.sum(dim=dims) if pooling == "sum" else x.amax(dim=dims)


def _roi_vectors(fmaps, rois, pooling: str, roi: str, roi_size: int):
    """(R, C) vectors of rois (R, 5) [batch index, x1, y1, x2, y2 in map coordinates] over fmaps (B, C, gh, gw)."""
    from torchvision.ops import roi_pool

    if len(rois) == 0:
        return fmaps.new_zeros((0, fmaps.shape[1]))
    if roi == "align":
        return _align_vectors(fmaps, rois, pooling, roi_size)
    # RoIPool rounds the corners to cells and its end is inclusive: [x1, x2) covers cells
    # round(x1) .. round(x2 - 1), i.e. those whose centres lie inside the box.
    rois = rois.clone()
    rois[:, 3:] -= 1
    bins = roi_pool(fmaps, rois, roi_size, spatial_scale=1.0)
    return _reduce(bins, pooling, (2, 3))


# RoIAlign by matrix products. torchvision's roi_align (aligned=True, spatial_scale 1, sampling ratio
# SAMPLING_RATIO) gives bin (p, q) of a roi the mean of SAMPLING_RATIO^2 bilinear samples; bilinear
# sampling is separable, so the bin is a_p^T M a_q for every channel's map M, a_p (over map rows) and a_q
# (over columns) that bin row's and bin column's sample weights. _axis_weights builds them with
# torchvision's float32 arithmetic and rules; products then run over all channels at once (torchvision's
# CPU kernel loops over channels one at a time): the rois that share their extent along one axis (grid
# windows repeat extents) are combined along it once, then each roi along the other axis, then the bins'
# max; rois alone in their group are done many at once. A sum of bins needs no bins: it is one bilinear
# form per roi. Equal to torchvision's within float32 rounding (tests/test_roi_pool.py); torch ops only,
# so it runs on CUDA too. The map must be finite (a zero weight times inf is nan).
_CHUNK = 1 << 22   # floats of one intermediate block (16 MiB in float32)


def _axis_weights(start, end, bins: int, cells: int):
    """(N, bins, cells) float32: the weight of each map row (or column) in each bin along one axis, for
    boxes [start, end) (N,) in map coordinates, averaged over the bin's samples: sample s of bin p sits at
    start - 0.5 + p w + (s + 0.5) w / S (w = (end - start) / bins, S = SAMPLING_RATIO); one below -1 or
    beyond ``cells`` reads nothing, one below 0 reads cell 0, one at or beyond cells - 1 the last cell,
    else its two neighbours linearly."""
    import torch

    grid = SAMPLING_RATIO
    lo, hi = start.float() - 0.5, end.float() - 0.5          # aligned=True: cell centres at j + 0.5
    size = ((hi - lo) / bins)[:, None, None]
    p = torch.arange(bins, device=start.device, dtype=torch.float32)[None, :, None]
    s = torch.arange(grid, device=start.device, dtype=torch.float32)[None, None, :] + 0.5
    pos = (lo[:, None, None] + p * size) + (s * size) / grid     # (N, bins, grid), torchvision's order
    inside = ((pos >= -1.0) & (pos <= cells)).float()
    pos = pos.clamp(min=0.0)
    low = pos.floor()
    last = low >= cells - 1
    low = torch.where(last, torch.full_like(low, cells - 1), low)
    frac = torch.where(last, torch.zeros_like(pos), pos - low)
    high = torch.where(last, low, low + 1)
    taps = torch.cat([low, high], dim=2).long()
    weights = torch.cat([(1.0 - frac) * inside, frac * inside], dim=2) / grid
    return torch.zeros(len(start), bins, cells, device=start.device).scatter_add_(2, taps, weights)


def _align_vectors(fmaps, rois, pooling: str, roi_size: int):
    """RoIAlign (torchvision's, above) into roi_size^2 bins, then their max or sum: (R, C)."""
    import torch

    m = fmaps.float()
    _, C, H, W = m.shape
    r = rois.to(m.device, torch.float32)
    k, R = roi_size, len(r)
    wy = _axis_weights(r[:, 2], r[:, 4], k, H)   # (R, k, H)
    wx = _axis_weights(r[:, 1], r[:, 3], k, W)   # (R, k, W)
    # Blocks are written into buffers allocated once: a fresh multi-MB tensor per product costs more
    # (page faults) than the product itself on the CPU.
    if pooling == "sum":
        # a sum of bins is one bilinear form: the roi's summed row weights, the map, its summed column weights
        order, _, images, ends = _runs(r[:, 0])
        u, v = wy.sum(1)[order], wx.sum(1)[order]
        got = m.new_empty((R, C))
        step = max(1, _CHUNK // (W * C))
        half = m.new_empty(min(step, R) * W * C)
        for b, lo, hi in zip(images, [0] + ends[:-1], ends):
            nhwc = m[b].permute(1, 2, 0).reshape(H, W * C)
            for at in range(lo, hi, step):
                n = min(step, hi - at)
                c = torch.mm(u[at:at + n], nhwc, out=half[:n * W * C].view(n, W * C)).view(n, W, C)
                torch.bmm(v[at:at + n, None, :], c, out=got[at:at + n].view(n, 1, C))
        return _unsort(got, order).to(fmaps.dtype)

    # max: the first axis (combined once per shared extent) is the one that costs fewer multiply-adds
    rows, cols = _runs(r[:, 0], r[:, 2], r[:, 4]), _runs(r[:, 0], r[:, 1], r[:, 3])
    if len(cols[2]) * k * H * W + R * k * k * H < len(rows[2]) * k * H * W + R * k * k * W:
        (order, member, images, ends), first, second, maps = cols, wx, wy, m.permute(0, 2, 3, 1)  # (B, H, W, C)
    else:
        (order, member, images, ends), first, second, maps = rows, wy, wx, m.permute(0, 3, 2, 1)  # (B, W, H, C)
    n1, n2 = first.shape[2], second.shape[2]
    starts = [0] + ends[:-1]
    first = first[order[starts]]            # (G, k, n1): one roi's weights per group
    second = second[order]                  # (R, k, n2) in group order
    # the cells each group reads: along the first axis its own, along the second its rois' together
    reads2 = torch.zeros(len(starts), n2, device=r.device).index_add_(0, member, (second > 0).any(1).float()) > 0
    (lo1, hi1), (lo2, hi2) = _spans((first > 0).any(1)), _spans(reads2)
    step = max(1, _CHUNK // (k * k * C))    # rois whose bins one product computes
    per = min(step, max(1, _CHUNK // (n2 * k * C)))   # lone rois combined in one product
    combined = m.new_empty(min(per, R) * n2 * k * C)
    bins = m.new_empty(min(step, R) * k * k * C)
    got = m.new_empty((R, C))
    for b in sorted(set(images)):
        mb = maps[b].contiguous()           # (n2, n1, C)
        mine = [j for j, i in enumerate(images) if i == b]
        for j in (j for j in mine if ends[j] - starts[j] > 1):
            l2 = hi2[j] - lo2[j]
            # the group's rows (or columns) combined: (l2, k, C), viewed (l2, k * C)
            block = torch.matmul(first[j, :, lo1[j]:hi1[j]], mb[lo2[j]:hi2[j], lo1[j]:hi1[j]],
                                 out=combined[:l2 * k * C].view(l2, k, C)).view(l2, k * C)
            for at in range(starts[j], ends[j], step):
                n = min(step, ends[j] - at)
                out = bins[:n * k * k * C].view(n * k, k * C)
                torch.mm(second[at:at + n, :, lo2[j]:hi2[j]].reshape(n * k, l2), block, out=out)
                torch.amax(out.view(n, k * k, C), dim=1, out=got[at:at + n])
        # rois alone in their group (RPN or query boxes): ``per`` at a time, over the whole map
        lone = [j for j in mine if ends[j] - starts[j] == 1]
        for at in range(0, len(lone), per):
            js = lone[at:at + per]
            n, where = len(js), torch.tensor([starts[j] for j in js], device=r.device)
            t = torch.matmul(first[js].reshape(n * k, n1), mb, out=combined[:n2 * n * k * C].view(n2, n * k, C))
            out = bins[:n * k * k * C].view(n, k, k * C)
            torch.bmm(second[where], t.view(n2, n, k * C).transpose(0, 1), out=out)
            got[where] = out.view(n, k * k, C).amax(dim=1)
    return _unsort(got, order).to(fmaps.dtype)


def _runs(image, lo=None, hi=None):
    """rois grouped by image, and by equal extent [lo, hi) if given (the float32 bits compared: one sort of
    int64 keys, far quicker than unique rows): (the order that sorts the rois by group, the group of each
    in that order, each group's image, each group's end in that order)."""
    import torch

    key = image.long()
    if lo is not None:
        def bits(v):
            return v.contiguous().view(torch.int32).long() & 0xFFFFFFFF
        extent = torch.unique((bits(lo) << 32) | bits(hi), return_inverse=True)[1]
        key = key * (int(extent.max()) + 1) + extent
    _, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)
    ends = torch.cumsum(counts, 0)
    images = image[order[ends - counts]].long()
    return order, inverse[order], images.tolist(), ends.tolist()


def _spans(reads):
    """(first, end) lists of the span of True in each row of reads (G, n); (0, 1) where none."""
    import torch

    n = reads.shape[1]
    first = torch.where(reads.any(1), reads.int().argmax(1), 0)
    end = torch.where(reads.any(1), n - reads.flip(1).int().argmax(1), 1)
    return first.tolist(), end.tolist()


def _unsort(values, order):
    """values whose row i belongs to roi order[i], back in the rois' order."""
    import torch

    return values.index_select(0, torch.argsort(order))


def pool_image(fmap, pooling: str = "sum", valid: tuple[int, int] | None = None) -> np.ndarray:
    """Image-wise vector (C,) float32 of a (C, gh, gw) map over its first valid = (gh, gw) cells."""
    import torch

    _check(pooling, "align")
    m = torch.as_tensor(np.asarray(fmap, np.float32) if not torch.is_tensor(fmap) else fmap).float()
    vh, vw = valid or m.shape[-2:]
    return _reduce(m[:, :vh, :vw], pooling, (1, 2)).cpu().numpy()


def pool_box(fmap, boxes, extent: tuple[float, float], *, pooling: str = "sum", roi: str = "align",
             roi_size: int = 7) -> np.ndarray:
    """Region vectors (n, C) float32 of boxes (4,) or (n, 4) in original pixels on a (C, gh, gw) map
    tiling ``extent`` original pixels (the image size for the grid source; ImageRegions.extent).

    The query side: the query box (LS) or the whole-image box (GS). The same computation as the
    extraction's for the same box on the same map (ImageRegions.map, kept with ``keep_maps``).
    """
    import torch

    _check(pooling, roi)
    m = torch.as_tensor(np.asarray(fmap, np.float32) if not torch.is_tensor(fmap) else fmap).float()
    b = _map_boxes(np.asarray(boxes, np.float32), extent, (m.shape[-1], m.shape[-2]))
    rois = torch.from_numpy(np.hstack([np.zeros((len(b), 1)), b])).to(m.device, torch.float32)
    return _roi_vectors(m[None], rois, pooling, roi, roi_size).cpu().numpy()


# -------------------------------------------------------------------------------------- sources

class _GridSource:
    """An ImageNet backbone's map; proposals from :func:`retrieval.geometry.pixel_windows` (no learned weights)."""

    def __init__(self, backbone: str, layer: str | None, device: str, half: bool, scales, aspect_ratios, stride):
        import torch

        self.net, self.layer, self.mean, self.std = backbones.load(backbone, layer or None, key="frcnn.extract")
        self.net = prepare(self.net, device)
        self.device, self.half = device, half
        self.grid = (tuple(scales), tuple(aspect_ratios), float(stride))
        pixel_windows(8, 8, *self.grid)  # check the grid parameters now, not at the first image
        with torch.no_grad():
            probe = self.net(torch.zeros(1, 3, 224, 224, device=device))
        self.min_side = 224 // probe.shape[-1]   # the layer's stride: a smaller image gives no cell
        self.dim = probe.shape[1]

    def __call__(self, x):
        """(maps (B, C, gh, gw) float32, padded input size (w, h), proposals None: made per image)."""
        import torch

        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=self.half):
            m = layer_map(self.net, x)
        return m, (x.shape[-1], x.shape[-2]), None

    def proposals(self, size: tuple[int, int], limit: int) -> np.ndarray:
        return pixel_windows(size[0], size[1], *self.grid, limit=limit)


class _RpnSource:
    """A trained Faster R-CNN: its own normalisation, padding, backbone + FPN and RPN, run once per batch."""

    def __init__(self, model, level: str | None, device: str, half: bool, name: str = "the detector"):
        import torch

        self.model = model.eval().to(device)
        for p in self.model.parameters():
            p.requires_grad_(False)
        t = self.model.transform
        self.mean, self.std, self.divisible = tuple(t.image_mean), tuple(t.image_std), t.size_divisible
        self.device, self.half = device, half
        with torch.no_grad():
            levels = list(self.model.backbone(torch.zeros(1, 3, 64, 64, device=device)))
        # default: the coarsest FPN level, not the extra max-pooled "pool" one
        self.level = level or [k for k in levels if k != "pool"][-1]
        if self.level not in levels:
            raise InstanceSearchError(f"frcnn.extract.level={level!r} is not a feature level of {name}; "
                                      f"choose one of {', '.join(levels)}")
        self.dim = self.model.backbone.out_channels
        self.min_side = self.divisible

    def __call__(self, x):
        import torch
        from torchvision.models.detection.image_list import ImageList

        h, w = x.shape[-2:]
        padded = self.model.transform.batch_images(list(x), size_divisible=self.divisible)
        with torch.no_grad():
            with torch.autocast("cuda", dtype=torch.float16, enabled=self.half):
                feats = self.model.backbone(padded)
            feats = {k: v.float() for k, v in feats.items()}  # proposals in float32 even with half
            boxes, _ = self.model.rpn(ImageList(padded, [(int(h), int(w))] * len(x)), feats)
        return feats[self.level], (padded.shape[-1], padded.shape[-2]), boxes


# ------------------------------------------------------------------------------------ extractor

class RegionExtractor:
    """One proposal source on one device; :meth:`run` turns a batch of equal-size images into ImageRegions."""

    def __init__(self, source: str = "grid", *, detector: str = "fasterrcnn_resnet50_fpn", level: str | None = None,
                 backbone: str = "mobilenet_v2", layer: str | None = None, proposals: int = 300,
                 scales: Sequence[float] = (1.0, 0.7, 0.5, 0.35), aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
                 stride: float = 0.5, pooling: str = "sum", roi: str = "align", roi_size: int = 7,
                 device: str = "auto", half: bool = False, model=None):
        """``model``: an already built torchvision detector for the rpn source (tests); the pipeline
        leaves it None and the COCO weights are loaded (or their absence is an error)."""
        import torch

        _check(pooling, roi)
        if source not in SOURCES:
            raise InstanceSearchError(f"frcnn.extract.source={source!r}: expected one of {', '.join(SOURCES)}")
        if proposals < 1:
            raise InstanceSearchError(f"frcnn.extract.proposals={proposals}: must be at least 1")
        if roi_size < 1:
            raise InstanceSearchError(f"frcnn.extract.roi_size={roi_size}: must be at least 1")
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device not in ("cpu", "cuda"):
            raise InstanceSearchError(f"frcnn.extract.device={device!r}: expected auto, cpu or cuda")
        if device == "cuda" and not torch.cuda.is_available():
            raise InstanceSearchError("frcnn.extract.device=cuda but no CUDA device is visible; use auto or cpu")
        if half and device == "cpu":
            log.info("half precision is a GPU option; running float32 on the CPU")
            half = False
        self.source_name, self.device, self.half = source, device, half
        self.proposals, self.pooling, self.roi, self.roi_size = proposals, pooling, roi, roi_size
        if source == "grid":
            self.source = _GridSource(backbone, layer, device, half, scales, aspect_ratios, stride)
        else:
            if model is None:
                model = load_detector(detector, proposals)
            self.source = _RpnSource(model, level or None, device, half, detector)
        self.mean, self.std = self.source.mean, self.source.std
        self.min_side, self.dim = self.source.min_side, self.source.dim

    def run(self, batch, dims: Sequence[tuple[int, int]], extra: Sequence[np.ndarray | None] | None = None,
            keep_maps: bool = False) -> list[ImageRegions]:
        """Regions of a batch (B, 3, h, w) of equal-size normalised images whose originals are dims (W, H).

        extra[b]: boxes (m, 4) in original pixels to pool as well (query boxes), or None.
        """
        import torch

        x = torch.as_tensor(batch).to(self.device, non_blocking=True)
        h, w = x.shape[-2:]
        fmaps, (pw, ph), rpn_boxes = self.source(x)
        gh, gw = fmaps.shape[-2:]
        valid = (math.ceil(gh * h / ph - 1e-9), math.ceil(gw * w / pw - 1e-9))  # cells covering the image
        vectors = _reduce(fmaps[:, :, :valid[0], :valid[1]], self.pooling, (2, 3))

        per_image, rois = [], []
        for b, (W, H) in enumerate(dims):
            if rpn_boxes is None:
                boxes = self.source.proposals((W, H), self.proposals)
            else:
                boxes = to_original(rpn_boxes[b][:self.proposals].cpu().numpy(), (w, h), (W, H))
            fallback = len(boxes) == 0
            if fallback:
                boxes = np.array([[0, 0, W, H]], np.float32)
            more = np.zeros((0, 4), np.float32) if extra is None or extra[b] is None else _checked_box(extra[b], W, H)
            extent = (pw * W / w, ph * H / h)
            mapped = _map_boxes(np.vstack([boxes, more]), extent, (gw, gh))
            rois.append(np.hstack([np.full((len(mapped), 1), b), mapped]))
            per_image.append((boxes, len(boxes), fallback, extent))
        rois_t = torch.from_numpy(np.vstack(rois)).to(self.device, torch.float32)
        pooled = _roi_vectors(fmaps, rois_t, self.pooling, self.roi, self.roi_size).cpu().numpy()
        vectors = vectors.cpu().numpy()

        out, at = [], 0
        for b, (boxes, p, fallback, extent) in enumerate(per_image):
            n = len(rois[b])
            out.append(ImageRegions(vector=vectors[b], boxes=boxes, regions=pooled[at:at + p],
                                    extra=pooled[at + p:at + n], fallback=fallback, extent=extent,
                                    map=fmaps[b].cpu().numpy() if keep_maps else None))
            at += n
        return out


def _checked_box(boxes, width: int, height: int, where: str = "") -> np.ndarray:
    """Caller boxes clipped to the image; an empty one is an error (it would pool nothing)."""
    b = np.asarray(boxes, np.float32).reshape(-1, 4).copy()
    b[:, [0, 2]] = np.clip(b[:, [0, 2]], 0, width)
    b[:, [1, 3]] = np.clip(b[:, [1, 3]], 0, height)
    bad = (b[:, 2] <= b[:, 0]) | (b[:, 3] <= b[:, 1])
    if bad.any():
        raise InstanceSearchError(f"{where or 'image'}: box {np.asarray(boxes).reshape(-1, 4)[bad][0].tolist()} has "
                                  f"no area inside the {width}x{height} image; fix the query box")
    return b


def extract_images(extractor: RegionExtractor, paths: Sequence[str], dims: Sequence[tuple[int, int]], *,
                   max_side: int, batch_size: int = 8, workers: int = 0,
                   extra: Sequence[np.ndarray | None] | None = None) -> tuple[list[ImageRegions], int]:
    """(ImageRegions of each image in input order, number of images that fell back to the whole image).

    dims: original (width, height) of each image (from the ground truth), so that equal-size batches are
    planned before decoding; decoding and resizing run in ``workers`` DataLoader processes.
    extra[i]: boxes (m, 4) in original pixels of image i to pool too (its query boxes), or None.
    """
    from torch.utils.data import DataLoader

    if extra is not None:  # checked before any image runs, naming the image
        extra = [None if b is None else _checked_box(b, *dims[k], where=str(paths[k])) for k, b in enumerate(extra)]
    sizes = [resized_size(w, h, max_side, extractor.min_side) for w, h in dims]
    loader = DataLoader(ImageBatches(list(paths), sizes, Preprocess(extractor.mean, extractor.std)),
                        batch_sampler=size_batches(sizes, batch_size), num_workers=workers,
                        pin_memory=extractor.device == "cuda", collate_fn=collate)
    out: list = [None] * len(paths)
    for ks, batch in loader:
        got = extractor.run(batch, [dims[k] for k in ks], None if extra is None else [extra[k] for k in ks])
        for k, r in zip(ks, got):
            out[k] = r
    fallbacks = sum(r.fallback for r in out)
    if fallbacks:
        log.warning("%d of %d images got no proposal from the %s source; they use the whole-image box",
                    fallbacks, len(out), extractor.source_name)
    return out, fallbacks

