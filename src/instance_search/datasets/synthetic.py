"""The embedded benchmark: a small instance-retrieval dataset in the Oxford on-disk format.

Objects are crops of real photographs shipped inside scikit-image and scikit-learn, so the benchmark
needs no download. Each object is pasted into cluttered backgrounds (other photographs and textures,
cropped, mirrored, tinted, blurred) under a random perspective warp, scale, rotation and lighting
change, then the whole picture is blurred, noised and JPEG-compressed. Some views are deliberately
occluded so that the Oxford categories all occur; the labels are *measured* on the rendered pixels:

- good: at least 60% of the object visible;
- ok: 25% to 60% visible;
- junk: under 25% visible.

Each object's good views (the first ``queries`` of them, in view order; view 0 is planned as one) are its
queries, as Oxford has five a landmark, all with the object's positives and junk: a mean over one query
an object moves with the smallest change of the pixels (README, Embedded benchmark).

Layout written (``out_dir``): ``jpg/obj01_v0.jpg ... distractor_000.jpg ...``, ``gt/obj01_K_query.txt``
(``oxc1_obj01_vN x1 y1 x2 y2``: query K is the object's K-th good view), ``gt/obj01_K_{good,ok,junk}.txt``
(the same lists for every K) and ``README.txt``. Everything comes from one seeded ``numpy`` Generator,
so a seed gives the same bytes.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .. import io
from ..errors import InstanceSearchError

log = logging.getLogger(__name__)

GOOD_MIN = 0.60  # Oxford: "a clear picture of the object"
OK_MIN = 0.25    # Oxford: "more than 25% of the object is visible"

# Photographs cut into tiles: the most textured tiles become objects, the rest background material.
OBJECT_SOURCES = (
    "skimage/astronaut.png", "skimage/camera.png", "skimage/chelsea.png", "skimage/coffee.png",
    "skimage/motorcycle_left.png", "skimage/rocket.jpg", "sklearn/china.jpg", "sklearn/flower.jpg",
    "skimage/coins.png", "skimage/ihc.png", "skimage/page.png", "skimage/text.png",
)
# Used only as background and occluder material, never as objects.
BACKGROUND_SOURCES = (
    "skimage/brick.png", "skimage/grass.png", "skimage/gravel.png", "skimage/moon.png",
    "skimage/hubble_deep_field.jpg", "skimage/retina.jpg",
)
TILE_SIDE = 220          # objects are tiles of about this size
MAX_ROTATION_DEG = 30
MAX_PERSPECTIVE = 0.15   # corner jitter as a fraction of the object's side


@dataclass(frozen=True)
class View:
    name: str
    label: str            # good | ok | junk
    visibility: float     # visible fraction of the object's area
    box: tuple[int, int, int, int]  # bounding box of the visible object pixels, x2/y2 exclusive


# ---------------------------------------------------------------- source images

def _source_path(ref: str) -> Path:
    package, name = ref.split("/")
    spec = importlib.util.find_spec(package)  # locates the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise InstanceSearchError(f"{package} is not installed; the synthetic benchmark needs its sample image {name}")
    folder = "data" if package == "skimage" else "datasets/images"
    return Path(list(spec.submodule_search_locations)[0]) / folder / name


def _load_source(ref: str) -> np.ndarray:
    """Read a sample image as BGR uint8 (Pillow: OpenCV's libpng warns about one of these PNGs)."""
    from PIL import Image

    path = _source_path(ref)
    if not path.is_file():
        raise InstanceSearchError(f"{path}: sample image missing; reinstall {ref.split('/')[0]} (the synthetic benchmark needs it)")
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"))
    if ref.endswith("retina.jpg"):  # the fundus sits in a black disc: keep its centre
        h, w = rgb.shape[:2]
        rgb = rgb[h // 4: 3 * h // 4, w // 4: 3 * w // 4]
    return np.ascontiguousarray(rgb[:, :, ::-1])


def _tiles(image: np.ndarray) -> list[np.ndarray]:
    h, w = image.shape[:2]
    ys = np.linspace(0, h, max(1, round(h / TILE_SIDE)) + 1).astype(int)
    xs = np.linspace(0, w, max(1, round(w / TILE_SIDE)) + 1).astype(int)
    return [image[y0:y1, x0:x1] for y0, y1 in zip(ys, ys[1:]) for x0, x1 in zip(xs, xs[1:])]


def _texture(tile: np.ndarray) -> float:
    """Mean absolute Laplacian: flat tiles (sky, blur) make poor objects for local features."""
    gray = cv2.cvtColor(tile, cv2.COLOR_BGR2GRAY)
    return float(np.abs(cv2.Laplacian(gray, cv2.CV_32F)).mean())


def _split_tiles(rng: np.random.Generator, photos: list[np.ndarray], n_objects: int):
    """Pick objects round-robin over the photographs (most textured tile first) for variety."""
    ranked = [sorted(_tiles(p), key=_texture, reverse=True) for p in photos]
    available = sum(len(r) for r in ranked)
    if n_objects > available:
        raise InstanceSearchError(
            f"datasets.synthetic.generator.objects={n_objects}: the embedded photographs give at most "
            f"{available} objects; lower it")
    objects, leftovers = [], []
    order = rng.permutation(len(ranked))
    for depth in range(max(len(r) for r in ranked)):
        for s in order:
            if depth < len(ranked[s]):
                (objects if len(objects) < n_objects else leftovers).append(ranked[s][depth])
    return objects, leftovers


# ---------------------------------------------------------------- drawing

def _fill(rng: np.random.Generator, material: np.ndarray, h: int, w: int) -> np.ndarray:
    """A h x w crop of rescaled, flipped, tinted material, mirror-tiled where it is too small."""
    s = rng.uniform(0.6, 1.6)
    # crop before resizing: the large sources would otherwise be resized whole
    ch, cw = min(material.shape[0], math.ceil(h / s)), min(material.shape[1], math.ceil(w / s))
    y0, x0 = int(rng.integers(material.shape[0] - ch + 1)), int(rng.integers(material.shape[1] - cw + 1))
    patch = cv2.resize(material[y0:y0 + ch, x0:x0 + cw], (max(1, round(cw * s)), max(1, round(ch * s))),
                       interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        patch = cv2.flip(patch, int(rng.integers(-1, 2)))
    py, px = max(0, h - patch.shape[0]), max(0, w - patch.shape[1])
    if py or px:
        top, left = int(rng.integers(py + 1)), int(rng.integers(px + 1))
        patch = np.pad(patch, ((top, py - top), (left, px - left), (0, 0)), mode="symmetric")
    tint = (rng.uniform(0.7, 1.2) * rng.uniform(0.85, 1.15, 3)).astype(np.float32)  # also colours grey textures
    return patch[:h, :w].astype(np.float32) * tint


def _background(rng: np.random.Generator, material: list[np.ndarray], width: int, height: int) -> np.ndarray:
    """A canvas split into 1-4 cells, each filled with different material; sometimes defocused."""
    rows, cols = [(1, 1), (1, 2), (2, 1), (2, 2)][int(rng.integers(4))]
    ys = [0, *sorted(int(rng.uniform(0.3, 0.7) * height) for _ in range(rows - 1)), height]
    xs = [0, *sorted(int(rng.uniform(0.3, 0.7) * width) for _ in range(cols - 1)), width]
    canvas = np.empty((height, width, 3), np.float32)
    for y0, y1 in zip(ys, ys[1:]):
        for x0, x1 in zip(xs, xs[1:]):
            canvas[y0:y1, x0:x1] = _fill(rng, material[int(rng.integers(len(material)))], y1 - y0, x1 - x0)
    if rng.random() < 0.5:
        canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.6, 2.0))
    return canvas


def _relight(rng: np.random.Generator, patch: np.ndarray) -> np.ndarray:
    """Gain, gamma and a slight colour cast, as a per-channel lookup table."""
    gamma = rng.uniform(0.7, 1.4)
    gain = rng.uniform(0.7, 1.3) * rng.uniform(0.92, 1.08, 3)
    levels = (np.arange(256) / 255.0) ** gamma
    table = np.clip(levels[:, None] * gain * 255, 0, 255).astype(np.uint8).reshape(256, 1, 3)
    return cv2.LUT(patch, table)


def _area(quad: np.ndarray) -> float:
    x, y = quad[:, 0], quad[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _quad(rng: np.random.Generator, w0: int, h0: int, width: int, height: int, area_frac: float) -> np.ndarray:
    """Corners of the object after rotation, perspective jitter and scaling, placed in the image."""
    corners = np.array([[0, 0], [w0, 0], [w0, h0], [0, h0]], float) - [w0 / 2, h0 / 2]
    t = math.radians(rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG))
    quad = corners @ np.array([[math.cos(t), math.sin(t)], [-math.sin(t), math.cos(t)]])
    quad += rng.uniform(-MAX_PERSPECTIVE, MAX_PERSPECTIVE, (4, 2)) * [w0, h0]
    quad *= math.sqrt(area_frac * width * height / _area(quad))
    lo, hi = quad.min(0), quad.max(0)
    offset = [rng.uniform(-lo[i], size - hi[i]) if hi[i] - lo[i] <= size else (size - hi[i] - lo[i]) / 2
              for i, size in enumerate((width, height))]
    return quad + offset


def _paste(canvas: np.ndarray, patch: np.ndarray, quad: np.ndarray) -> np.ndarray:
    """Warp ``patch`` onto ``quad`` in place; return the coverage (alpha) map."""
    height, width = canvas.shape[:2]
    alpha = np.zeros((height, width), np.float32)
    x0, y0 = np.clip(np.floor(quad.min(0)).astype(int), 0, [width, height])
    x1, y1 = np.clip(np.ceil(quad.max(0)).astype(int) + 1, 0, [width, height])
    if x1 <= x0 or y1 <= y0:
        return alpha
    scale = math.sqrt(_area(quad) / (patch.shape[0] * patch.shape[1]))
    if scale < 0.8:  # shrink first: warpPerspective would alias
        patch = cv2.resize(patch, (max(2, round(patch.shape[1] * scale)), max(2, round(patch.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
    h0, w0 = patch.shape[:2]
    src = np.float32([[0, 0], [w0, 0], [w0, h0], [0, h0]])
    hom = cv2.getPerspectiveTransform(src, (quad - [x0, y0]).astype(np.float32))  # warp only the quad's box
    size = (int(x1 - x0), int(y1 - y0))
    warped = cv2.warpPerspective(patch, hom, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    a = cv2.warpPerspective(np.ones((h0, w0), np.float32), hom, size, flags=cv2.INTER_LINEAR)
    alpha[y0:y1, x0:x1] = a
    roi = canvas[y0:y1, x0:x1]
    roi *= (1 - a)[:, :, None]
    roi += warped.astype(np.float32) * a[:, :, None]
    return alpha


def _clutter(rng: np.random.Generator, canvas: np.ndarray, material: list[np.ndarray], count: int) -> None:
    """Paste warped pieces of background material, so that a pasted quad alone is no cue."""
    height, width = canvas.shape[:2]
    for _ in range(count):
        src = material[int(rng.integers(len(material)))]
        h, w = (min(s, int(rng.integers(120, 260))) for s in src.shape[:2])
        y0, x0 = int(rng.integers(src.shape[0] - h + 1)), int(rng.integers(src.shape[1] - w + 1))
        piece = _relight(rng, np.ascontiguousarray(src[y0:y0 + h, x0:x0 + w]))
        _paste(canvas, piece, _quad(rng, w, h, width, height, rng.uniform(0.03, 0.15)))


def _occluder(rng: np.random.Generator, visible: np.ndarray, keep: float) -> np.ndarray:
    """A board (half-plane cut by the object's grown box) leaving ``keep`` of the visible pixels."""
    ys, xs = np.nonzero(visible)
    t = rng.uniform(0, 2 * math.pi)
    dx, dy = math.cos(t), math.sin(t)
    threshold = np.quantile(xs * dx + ys * dy, keep)
    height, width = visible.shape
    gy, gx = np.ogrid[:height, :width]
    m = int(rng.integers(5, 60))
    box = (gx >= xs.min() - m) & (gx <= xs.max() + m) & (gy >= ys.min() - m) & (gy <= ys.max() + m)
    return (gx * dx + gy * dy > threshold) & box


def _degrade(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Camera blur, sensor noise and an earlier lossy compression."""
    if rng.random() < 0.4:
        canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.4, 1.3))
    k = int(rng.integers(0, 5))  # uniform noise in [-k, k]: much cheaper to draw than Gaussian noise
    if k:
        canvas = canvas + rng.integers(-k, k + 1, canvas.shape, dtype=np.int8)
    image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    if rng.random() < 0.4:
        image = cv2.imdecode(_jpeg(image, int(rng.integers(35, 90))), cv2.IMREAD_COLOR)
    return image


def _jpeg(image: np.ndarray, quality: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise InstanceSearchError("OpenCV could not encode a JPEG; check the opencv-python installation")
    return buf


# ---------------------------------------------------------------- views

def _plan(rng: np.random.Generator, views: int) -> list[str]:
    """Intended category of each view: view 0 is the query; about 1/8 junk and 1/4 ok when possible."""
    rest = views - 1
    n_junk = min(max(1, views // 8), rest - 1) if rest >= 2 else 0
    n_ok = min(max(1, views // 4), rest - 1 - n_junk) if rest - n_junk >= 2 else 0
    labels = ["junk"] * n_junk + ["ok"] * n_ok + ["good"] * (rest - n_junk - n_ok)
    return ["query"] + [labels[i] for i in rng.permutation(rest)]


def _target_visibility(rng: np.random.Generator, plan: str) -> float:
    """Visible fraction to occlude down to, inside its category with margins (1 = no occlusion)."""
    if plan == "ok":
        return rng.uniform(0.33, 0.52)
    if plan == "junk":
        return rng.uniform(0.06, 0.18)
    if plan == "good" and rng.random() < 0.5:
        return rng.uniform(0.7, 0.92)
    return 1.0


def _label(visibility: float) -> str:
    return "good" if visibility >= GOOD_MIN else "ok" if visibility >= OK_MIN else "junk"


def _render_view(rng: np.random.Generator, obj: np.ndarray, material: list[np.ndarray], plan: str,
                 width: int, height: int) -> tuple[np.ndarray, np.ndarray, float]:
    """One view of ``obj``: returns the image and the visible object mask and fraction."""
    canvas = _background(rng, material, width, height)
    _clutter(rng, canvas, material, int(rng.integers(0, 3)))
    h0, w0 = obj.shape[:2]
    lo, hi, min_in_frame = (0.2, 0.5, 0.95) if plan == "query" else (0.10, 0.60, 0.85)
    for attempt in range(20):  # a large, rotated object may not fit: retry, then fall back to the smallest
        quad = _quad(rng, w0, h0, width, height, rng.uniform(lo, hi) if attempt < 19 else lo)
        full_area = _area(quad)
        if _in_frame(quad, width, height) >= min_in_frame:
            break
    alpha = _paste(canvas, _relight(rng, obj), quad)
    visible = alpha > 0.5
    target = _target_visibility(rng, plan)
    if target < visible.sum() / full_area:
        board = _occluder(rng, visible, target * full_area / visible.sum())
        cover = _background(rng, material, width, height)
        canvas[board] = cover[board]
        visible &= ~board
    return _degrade(rng, canvas), visible, float(visible.sum() / full_area)


def _in_frame(quad: np.ndarray, width: int, height: int) -> float:
    """Fraction of the quad's area inside the image (exact polygon clipping)."""
    inside, _ = cv2.intersectConvexConvex(quad.astype(np.float32),
                                          np.float32([[0, 0], [width, 0], [width, height], [0, height]]))
    return inside / _area(quad)


def _box(visible: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(visible)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


# ---------------------------------------------------------------- the dataset

def generate(out_dir: str | os.PathLike, *, seed: int, objects: int, views: int, distractors: int,
             width: int, height: int, jpeg_quality: int, queries: int = 1) -> dict[str, int]:
    """Write the benchmark into ``out_dir`` (replaced atomically); return the count of each category
    and of the queries."""
    if objects < 1 or views < 2 or distractors < 0 or min(width, height) < 64 or queries < 1:
        raise InstanceSearchError("datasets.synthetic.generator: need objects >= 1, views >= 2, distractors >= 0, "
                                  "width/height >= 64, queries >= 1")
    rng = np.random.default_rng(seed)
    tiles, leftovers = _split_tiles(rng, [_load_source(r) for r in OBJECT_SOURCES], objects)
    material = leftovers + [_load_source(r) for r in BACKGROUND_SOURCES]
    object_rngs, distractor_rngs = rng.spawn(objects), rng.spawn(distractors)

    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.parent.glob(f".{io.glob_escape(out_dir.name)}.*.tmp"):  # left by a killed run
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
    tmp = io.make_temp_dir(out_dir)  # registered (removed on SIGTERM), the umask's mode (not mkdtemp's 0700)
    try:
        (tmp / "jpg").mkdir()
        (tmp / "gt").mkdir()
        counts = {"good": 0, "ok": 0, "junk": 0, "queries": 0}
        digits = max(2, len(str(objects)))
        for i, (obj, obj_rng) in enumerate(zip(tiles, object_rngs), start=1):
            name = f"obj{i:0{digits}d}"
            plans = _plan(obj_rng, views)
            rendered = []
            for v, (plan, view_rng) in enumerate(zip(plans, obj_rng.spawn(views))):
                image, visible, visibility = _render_view(view_rng, obj, material, plan, width, height)
                (tmp / "jpg" / f"{name}_v{v}.jpg").write_bytes(_jpeg(image, jpeg_quality).tobytes())
                rendered.append(View(f"{name}_v{v}", _label(visibility), visibility, _box(visible)))
            counts["queries"] += _write_gt(tmp / "gt", name, rendered, queries)
            for view in rendered:
                counts[view.label] += 1
        digits = max(3, len(str(distractors - 1)))
        for d, d_rng in enumerate(distractor_rngs):
            canvas = _background(d_rng, material, width, height)
            _clutter(d_rng, canvas, material, int(d_rng.integers(1, 4)))
            (tmp / "jpg" / f"distractor_{d:0{digits}d}.jpg").write_bytes(
                _jpeg(_degrade(d_rng, canvas), jpeg_quality).tobytes())
        (tmp / "README.txt").write_text(_readme(seed, objects, views, distractors, width, height, jpeg_quality,
                                                queries, counts), encoding="utf-8")
        io.replace_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        io.unregister_temporary(tmp)
        raise
    log.info("%s: %d objects x %d views (%s) + %d distractors", out_dir, objects, views,
             ", ".join(f"{k} {v}" for k, v in counts.items()), distractors)
    return counts


def _write_gt(gt_dir: Path, name: str, views: list[View], queries: int) -> int:
    """Oxford's files, a set per query (its first good views; view 0, planned as a query, when none is
    good): the query line names the image with the ``oxc1_`` prefix, lists do not. Returns the count."""
    chosen = [v for v in views if v.label == "good"][:queries] or views[:1]
    lists = {label: "".join(n + "\n" for n in sorted(v.name for v in views if v.label == label))
             for label in ("good", "ok", "junk")}
    for k, query in enumerate(chosen, start=1):
        (gt_dir / f"{name}_{k}_query.txt").write_text(
            f"oxc1_{query.name} " + " ".join(f"{c:.1f}" for c in query.box) + "\n", encoding="utf-8")
        for label, text in lists.items():
            (gt_dir / f"{name}_{k}_{label}.txt").write_text(text, encoding="utf-8")
    return len(chosen)


def _readme(seed: int, objects: int, views: int, distractors: int, width: int, height: int, jpeg_quality: int,
            queries: int, counts: dict[str, int]) -> str:
    return f"""Embedded instance-retrieval benchmark (generated by instance_search.datasets.synthetic).

Parameters: seed={seed} objects={objects} views={views} distractors={distractors} size={width}x{height} jpeg_quality={jpeg_quality} queries={queries}
The same parameters and package versions give byte-identical files.

jpg/objNN_vK.jpg      view K of object NN
jpg/distractor_N.jpg  images that contain none of the objects
gt/objNN_Q_query.txt  "oxc1_<image> x1 y1 x2 y2": query Q of object NN, its Q-th good view (at most
                      {queries} an object), and the box of the visible object in it
gt/objNN_Q_good.txt   views with >= {GOOD_MIN:.0%} of the object visible (the query images included)
gt/objNN_Q_ok.txt     views with {OK_MIN:.0%}-{GOOD_MIN:.0%} visible (occluded on purpose)
gt/objNN_Q_junk.txt   views with < {OK_MIN:.0%} visible (ignored by the Oxford protocol)

Views: good {counts['good']}, ok {counts['ok']}, junk {counts['junk']}; queries {counts['queries']}.
Objects are tiles of the sample photographs shipped with scikit-image (skimage/data) and scikit-learn
(china.jpg, flower.jpg), under a random perspective warp (corners moved up to {MAX_PERSPECTIVE:.0%} of the side),
rotation (up to {MAX_ROTATION_DEG} degrees), scale (10%-60% of the image), gain/gamma, blur, noise and JPEG
compression, over backgrounds made of the remaining tiles and scikit-image's textures (brick, grass,
gravel, moon, hubble_deep_field, retina). Occluders are boards of background material.
"""
