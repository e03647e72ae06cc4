"""SIFT local features (OpenCV) with keypoint positions; RootSIFT as a parameter.

Raw SIFT descriptors are integers in 0..255, so the store keeps them as uint8 (exact, 4x smaller
than float32); :func:`descriptors` turns them into the float vectors the codebook sees, applying
RootSIFT (L1-normalise, square root: Hellinger kernel) when asked.
"""

from __future__ import annotations

import cv2
import numpy as np

from ..io import read_image
from ..retrieval.linalg import l2


def make_detector(max_features: int, contrast_threshold: float) -> cv2.SIFT:
    return cv2.SIFT_create(nfeatures=max_features, contrastThreshold=contrast_threshold)


def extract(path: str, detector: cv2.SIFT, max_side: int) -> tuple[np.ndarray, np.ndarray]:
    """Keypoint positions (x, y) in the original image's pixels and uint8 descriptors."""
    gray = read_image(path, cv2.IMREAD_GRAYSCALE)
    h, w = gray.shape
    scale = 1.0
    if max_side and max(h, w) > max_side:
        scale = max_side / max(h, w)
        gray = cv2.resize(gray, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    keypoints, desc = detector.detectAndCompute(gray, None)
    if not keypoints:
        return np.zeros((0, 2), np.float32), np.zeros((0, 128), np.uint8)
    xy = np.array([kp.pt for kp in keypoints], dtype=np.float32)
    # Keypoint coordinates are in resized pixels whose centres sit at +0.5; map back exactly.
    xy = (xy + 0.5) / scale - 0.5
    xy[:, 0] = np.clip(xy[:, 0], 0, w - 1e-3)
    xy[:, 1] = np.clip(xy[:, 1], 0, h - 1e-3)
    return xy, np.clip(np.rint(desc), 0, 255).astype(np.uint8)


def descriptors(raw: np.ndarray, rootsift: bool) -> np.ndarray:
    """Float32 descriptors for clustering and assignment: L2 SIFT, or RootSIFT."""
    x = raw.astype(np.float32)
    if rootsift:
        x /= np.maximum(x.sum(axis=1, keepdims=True), 1e-12)
        return np.sqrt(x)
    return l2(x, np.float32)
