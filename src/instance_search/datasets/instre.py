"""Adapter for INSTRE (Wang & Jiang 2015) under the retrieval protocol of Iscen et al. (CVPR 2017).

The protocol's ground truth is one MATLAB file, ``gnd_instre.mat``, in the revisitop style::

    imlist   1 x 27,293 cell   database image paths relative to the INSTRE folder
                                ("INSTRE-S1/01a_canada_book/001.jpg", ...)
    qimlist  1 x 1,250 cell    query image paths (images of the same tree, not in the database)
    gnd      1 x 1,250 struct  per query: ok  = its positives, 1-based indices into imlist (MATLAB)
                                             bbx = the query box [x1, y1, x2, y2]

There is no junk class. 27,293 + 1,250 = 28,543 images, all of INSTRE-S1, -S2 and -M. The database
images come first in the normalised file and the query images after them (``n_database``).

Box convention. The published ``gnd_instre.mat`` gives ``bbx`` as corners [x1, y1, x2, y2]: every
x2 > x1 and y2 > y1, maxima 999 / 995 on images of at most 1000 px; read as [x, y, w, h], 664 of
its 1,250 boxes fall outside their image (tests/test_realdata_gt.py reads the real file). The
per-image ``.txt`` files of the INSTRE release give x, y, w, h instead, which is where the other
convention comes from. ``box_format`` (params ``datasets.<name>.box_format``, default ``xyxy``)
chooses; boxes that then fall outside their images are one error that counts them and names this
key, so the wrong convention cannot pass silently on the real file.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path, PurePosixPath
from typing import Mapping

import numpy as np
import scipy.io

from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth, Query, check_expected
from .oxford import check_counts_before, clip_box, describe_images, inside_root, resolve_unreadable

log = logging.getLogger(__name__)

BOX_FORMATS = ("xyxy", "xywh")
DEFAULT_BOX_FORMAT = "xyxy"  # what the published gnd_instre.mat holds


def _read_mat(path: Path) -> dict:
    if not path.is_file():
        raise InstanceSearchError(f"{path}: ground-truth file not found; download gnd_instre.mat to this path")
    try:
        # simplify_cells: cells -> arrays/lists of str, structs -> dicts (one-element ones are squeezed).
        return scipy.io.loadmat(str(path), simplify_cells=True)
    except Exception as exc:  # scipy raises ValueError, MatReadError, TypeError... for a non-.mat file
        raise InstanceSearchError(f"{path}: not a readable MATLAB file ({type(exc).__name__}); download it again") from None


def _as_list(value) -> list:
    """A MATLAB 1 x n array/cell read with squeezing: one element comes back bare, n as array or list."""
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, np.ndarray):
        return list(value.reshape(-1)) if value.ndim else [value.item()]
    return [value]


def _paths(mat: dict, key: str, path: Path) -> list[str]:
    if key not in mat:
        raise InstanceSearchError(f"{path}: key {key} missing; expected the revisitop-style imlist, qimlist, gnd")
    items = _as_list(mat[key])
    if not items or not all(isinstance(p, str) and p for p in items):
        raise InstanceSearchError(f"{path}: {key} must be a non-empty cell array of image paths")
    return items


def _indices(value, n: int, path: Path, where: str) -> tuple[int, ...]:
    ids = np.atleast_1d(np.asarray(value, dtype=np.float64)).reshape(-1)
    if ids.size and (not np.all(np.isfinite(ids)) or np.any(ids != np.round(ids))):
        raise InstanceSearchError(f"{path}: {where}: positives must be whole numbers (1-based image indices)")
    bad = ids[(ids < 1) | (ids > n)]
    if bad.size:
        raise InstanceSearchError(
            f"{path}: {where}: index {int(bad[0])} is not an imlist entry (1..{n}; MATLAB indices are 1-based)")
    return tuple(sorted(set(int(i) - 1 for i in ids)))


def _box(value, box_format: str, path: Path, where: str) -> tuple[float, float, float, float]:
    b = np.asarray(value, dtype=np.float64).reshape(-1)
    if b.size != 4:
        raise InstanceSearchError(f"{path}: {where}: bbx has {b.size} numbers, expected 4")
    if box_format == "xywh":
        return float(b[0]), float(b[1]), float(b[0] + b[2]), float(b[1] + b[3])
    return tuple(float(v) for v in b)


def load_instre(name: str, images_dir: str | os.PathLike, gnd_mat: str | os.PathLike, *,
                box_format: str = DEFAULT_BOX_FORMAT, expect: Mapping[str, int] | None = None,
                skip_unreadable: bool = False) -> GroundTruth:
    """INSTRE into the normalised ground truth: database = imlist, then the query-only images.

    Every image path of the .mat must lie inside ``images_dir`` (no absolute path, no ``..``).
    ``skip_unreadable``: leave out unreadable database images that are no query's positive.
    """
    if box_format not in BOX_FORMATS:
        raise InstanceSearchError(f"params.yaml: key datasets.{name}.box_format: {box_format!r} is not one of {list(BOX_FORMATS)}")
    root, path = Path(images_dir), Path(gnd_mat)
    mat = _read_mat(path)
    imlist, qimlist = _paths(mat, "imlist", path), _paths(mat, "qimlist", path)
    if "gnd" not in mat:
        raise InstanceSearchError(f"{path}: key gnd missing; expected the revisitop-style imlist, qimlist, gnd")
    gnd = _as_list(mat["gnd"])
    if len(gnd) != len(qimlist) or not all(isinstance(g, dict) and {"ok", "bbx"} <= set(g) for g in gnd):
        raise InstanceSearchError(
            f"{path}: gnd must be a struct array with fields ok and bbx, one per qimlist entry ({len(qimlist)})")
    # Check the counts before decoding ~28k images: a mismatch is a wrong file, found in a second.
    check_expected({"images": len(imlist) + len(qimlist), "database": len(imlist), "queries": len(qimlist)},
                   expect, str(path), name)
    if not root.is_dir():
        raise InstanceSearchError(f"{root}: image folder not found; download and unpack INSTRE first")
    files = [inside_root(root, p, path) for p in (*imlist, *qimlist)]  # nothing outside the folder, ever
    missing = [p for p, f in zip((*imlist, *qimlist), files) if not f.is_file()]
    if missing:
        raise InstanceSearchError(
            f"{path}: image {missing[0]} not found under {root} ({len(missing)} missing); unpack INSTRE there")
    n = len(imlist)
    wheres = [f"query {i + 1} ({qpath})" for i, qpath in enumerate(qimlist)]
    positives = [_indices(g["ok"], n, path, where) for g, where in zip(gnd, wheres)]
    boxes = [_box(g["bbx"], box_format, path, where) for g, where in zip(gnd, wheres)]
    # Names keep the folder (INSTRE file names repeat across classes: 001.jpg, ...).
    names = [str(PurePosixPath(str(p).replace("\\", "/")).with_suffix("")) for p in (*imlist, *qimlist)]
    bad: dict = {}
    images = describe_images(root, zip(names, files), unreadable=bad, source=path)
    protected = set(names[n:]) | {names[j] for ids in positives for j in ids}
    dropped = resolve_unreadable(bad, protected, skip_unreadable, root, name)
    new_index = {}  # database index in imlist -> in the kept database
    for j in range(n):
        if names[j] not in dropped:
            new_index[j] = len(new_index)
    n_kept = len(new_index)
    queries, outside = [], []
    for i, (ids, box, where) in enumerate(zip(positives, boxes, wheres)):
        image = images[n_kept + i]
        try:
            box = clip_box(path, box, image)
        except InstanceSearchError as exc:
            outside.append(f"{exc} ({where})")
            continue
        queries.append(Query(name=image.name, image=n_kept + i, box=box, good=tuple(new_index[j] for j in ids)))
    if outside:  # all counted in one line: many at once means the wrong box convention, not a bad box
        other = next(f for f in BOX_FORMATS if f != box_format)
        raise InstanceSearchError(
            f"{len(outside)} of {len(boxes)} query boxes read as {box_format} are empty or outside their image, "
            f"first: {outside[0]}; if many fail, set datasets.{name}.box_format: {other} in params.yaml "
            f"(the published gnd_instre.mat holds x1,y1,x2,y2, i.e. xyxy)")
    result = GroundTruth(dataset=name, root=root.as_posix(), images=images, n_database=n_kept, queries=queries)
    result.validate(str(path))
    check_counts_before(result, expect, str(path), dropped)
    log.info("%s: %d database images, %d query images and queries", name, n_kept, len(queries))
    return result
