"""Local convolutional features: a pretrained backbone's feature map, one local feature per cell.

Images are fed whole at their own aspect ratio, resized so that the longer side is ``max_side``
(no crop, no warp, no augmentation). Images of exactly the same resized size are batched together:
padding would change the features at the borders, so batching never changes a result.

Geometry. A map of gh x gw cells computed from an image of W x H pixels is taken to tile the image:
cell (i, j) covers [j W/gw, (j+1) W/gw) x [i H/gh, (i+1) H/gh) and sits at its centre. The stored
positions are those centres in original pixels, so a query box in original pixels selects exactly
the cells whose centres it contains. Upsampling the map by u (bilinear, align_corners=False) makes
an (u gh) x (u gw) map that tiles the same image with u x u smaller cells: :func:`local_features`.

The store keeps the raw map (float16, row-major cells); upsampling and L2 normalisation happen when
the features are read (:func:`local_features`), so the store stays u^2 times smaller.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import InstanceSearchError
from ..io import read_image
from ..retrieval.linalg import l2

log = logging.getLogger(__name__)

# On the CPU the network runs as a frozen TorchScript graph: batch norm folded into the convolutions and
# oneDNN's prepacked weights, about twice as fast as eager PyTorch; its maps differ from eager's by float
# rounding, well inside float16's (tests/test_extract_bytes.py; docs/benchmarks.md#extraction-against-its-network).
# On a GPU the eager network runs (half precision there is autocast's).
FROZEN_ON_CPU = True


class _Map:
    """The eager network as a callable batch -> map (its fx output's "map")."""

    def __init__(self, net):
        self.net = net

    def __call__(self, x):
        return self.net(x)["map"]


def prepare(net, device: str):
    """``net`` (backbones.load's module) on ``device`` as a callable batch (B, 3, h, w) -> map (B, C, gh, gw)."""
    import warnings

    import torch

    net = net.to(device)
    if device != "cpu" or not FROZEN_ON_CPU:
        return _Map(net)

    class Traced(torch.nn.Module):
        def __init__(self):
            super().__init__()
            # held in a list, not as a submodule: the trace then records the weights as constants instead
            # of scripting each of the ~200 submodules (0.1 s instead of 0.5 s; the same graph and bytes)
            self.hidden = [net]

        def forward(self, x):
            return self.hidden[0](x)["map"]

    # a convolutional stack: the graph traced at one size serves every size and batch
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notice: the pinned torch keeps it
        traced = torch.jit.trace(Traced().eval(), torch.zeros(1, 3, 224, 224), check_trace=False)
        return torch.jit.optimize_for_inference(torch.jit.freeze(traced))


def layer_map(net, x):
    """The map (B, C, gh, gw) float32, contiguous NCHW, of a batch already on the network's device."""
    return net(x).float().contiguous()


def resized_size(width: int, height: int, max_side: int, min_side: int) -> tuple[int, int]:
    """(w, h) fed to the network: longer side = max_side (0 = keep); shorter side >= min_side.

    An image whose shorter side would fall below ``min_side`` (the layer's stride: smaller gives no
    cell) is enlarged until it reaches it: the documented fallback for tiny or very thin images.
    """
    scale = max_side / max(width, height) if max_side else 1.0
    scale = max(scale, min_side / min(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def cell_centres(gw: int, gh: int, width: float, height: float) -> np.ndarray:
    """(gh * gw, 2) float32 centres (x, y), row-major, of a gh x gw grid tiling width x height."""
    xs = (np.arange(gw) + 0.5) * (width / gw)
    ys = (np.arange(gh) + 0.5) * (height / gh)
    return np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2).astype(np.float32)


def grid_of(xy: np.ndarray) -> tuple[int, int, float, float]:
    """(gw, gh, cell width, cell height) of a stored row-major cell grid, from its centres."""
    if len(xy) == 0:
        return 0, 0, 0.0, 0.0
    gw = int(np.count_nonzero(xy[:, 1] == xy[0, 1]))
    gh = len(xy) // gw
    if gw * gh != len(xy):
        raise InstanceSearchError(f"feature positions of {len(xy)} cells do not form a grid; re-run extract")
    return gw, gh, 2.0 * float(xy[0, 0]), 2.0 * float(xy[0, 1])


def upsample(xy: np.ndarray, desc: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """The map upsampled by ``factor`` (bilinear), with its cells' centres."""
    import torch
    import torch.nn.functional as F

    gw, gh, cw, ch = grid_of(xy)
    if factor == 1 or len(xy) == 0:
        return xy, desc.astype(np.float32)
    m = torch.from_numpy(desc.astype(np.float32).reshape(gh, gw, -1)).permute(2, 0, 1)[None]
    up = F.interpolate(m, scale_factor=factor, mode="bilinear", align_corners=False)[0]
    up = up.permute(1, 2, 0).reshape(gh * gw * factor * factor, -1).numpy()
    return cell_centres(gw * factor, gh * factor, gw * cw, gh * ch), np.ascontiguousarray(up)


def local_features(xy: np.ndarray, desc: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """Stored raw map -> (positions, L2-normalised local features) of the upsampled map."""
    xy, x = upsample(xy, desc, factor)
    return xy, l2(x, np.float32)


@dataclass
class Extractor:
    """A backbone cut at one layer, on one device; call :meth:`maps` on a batch."""

    backbone: str
    layer: str | None = None
    device: str = "auto"
    half: bool = False

    def __post_init__(self):
        import torch

        from . import backbones

        if self.device == "auto":
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if self.device == "cuda" and not torch.cuda.is_available():
            raise InstanceSearchError("blcf.extract.device=cuda but no CUDA device is visible; use auto or cpu")
        if self.half and self.device == "cpu":
            log.info("half precision is a GPU option; running float32 on the CPU")
            self.half = False
        self.net, self.layer, self.mean, self.std = backbones.load(self.backbone, self.layer)
        self.net = prepare(self.net, self.device)
        with torch.no_grad():
            probe = self.net(torch.zeros(1, 3, 224, 224, device=self.device))
        self.stride = 224 // probe.shape[-1]
        self.dim = probe.shape[1]

    def maps(self, batch) -> np.ndarray:
        """(B, 3, h, w) tensor or array -> (B, gh, gw, C) float32 feature maps on the CPU."""
        import torch

        x = torch.as_tensor(batch).to(self.device, non_blocking=True)
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16, enabled=self.half):
            m = layer_map(self.net, x)
        return m.permute(0, 2, 3, 1).cpu().numpy()


class ImageBatches:
    """torch Dataset: image k resized for the network (runs in DataLoader workers)."""

    def __init__(self, paths, sizes, extractor_pre):
        self.paths, self.sizes, self.pre = paths, sizes, extractor_pre

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, k):
        return k, self.pre(read_image(self.paths[k], cv2.IMREAD_COLOR), self.sizes[k])


class Preprocess:
    """Picklable preprocessing for DataLoader workers (holds no torch module)."""

    def __init__(self, mean, std):
        self.mean, self.std = np.array(mean, np.float32), np.array(std, np.float32)

    def __call__(self, bgr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        """BGR uint8 image -> normalised RGB float32 (3, h, w) at ``size`` = (w, h)."""
        interp = cv2.INTER_AREA if size[0] < bgr.shape[1] else cv2.INTER_LINEAR
        rgb = cv2.cvtColor(cv2.resize(bgr, size, interpolation=interp), cv2.COLOR_BGR2RGB)
        return np.ascontiguousarray(((rgb.astype(np.float32) / 255.0 - self.mean) / self.std).transpose(2, 0, 1))


def size_batches(sizes: list[tuple[int, int]], batch_size: int) -> list[list[int]]:
    """Batches of indices of exactly equal size, in a deterministic order (by size, then index)."""
    order = sorted(range(len(sizes)), key=lambda k: (sizes[k], k))
    batches, current = [], []
    for k in order:
        if current and (sizes[current[0]] != sizes[k] or len(current) == batch_size):
            batches.append(current)
            current = []
        current.append(k)
    if current:
        batches.append(current)
    return batches


def extract_images(extractor: Extractor, paths: list[str], dims: list[tuple[int, int]], *, max_side: int,
                   batch_size: int, workers: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """(cell centres in original pixels, float16 raw map (cells, C)) for each image, in input order.

    ``dims`` are the original (width, height) of the images (from the ground truth), so batches are
    planned before any image is decoded; decoding and resizing run in ``workers`` processes.
    """
    from torch.utils.data import DataLoader

    sizes = [resized_size(w, h, max_side, extractor.stride) for w, h in dims]
    enlarged = sum(1 for (w, h), s in zip(dims, sizes) if max_side and max(s) > max_side)
    if enlarged:
        log.warning("%d images were enlarged so that their shorter side reaches the layer's stride (%d px)",
                    enlarged, extractor.stride)
    loader = DataLoader(ImageBatches(paths, sizes, Preprocess(extractor.mean, extractor.std)),
                        batch_sampler=size_batches(sizes, batch_size), num_workers=workers,
                        pin_memory=extractor.device == "cuda", collate_fn=collate)
    out: list = [None] * len(paths)
    for ks, batch in loader:
        maps = extractor.maps(batch)
        for k, m in zip(ks, maps):
            gh, gw = m.shape[:2]
            w, h = dims[k]
            out[k] = (cell_centres(gw, gh, w, h), m.reshape(gh * gw, -1).astype(np.float16))
    return out


def collate(items):
    import torch

    ks, xs = zip(*items)
    return list(ks), torch.from_numpy(np.stack(xs))

