"""Adapter for the revisited Oxford and Paris benchmarks, ROxford5k and RParis6k (Radenovic et al.,
"Revisiting Oxford and Paris: Large-Scale Image Retrieval Benchmarking", CVPR 2018).

Ground truth: one pickle per dataset, ``gnd_roxford5k.pkl`` / ``gnd_rparis6k.pkl``, a dict::

    imlist   [4,993 | 6,322 names]   database images, names without ".jpg"
    qimlist  [70 names]              query images: Oxford / Paris images NOT in the database
    gnd      [70 dicts]              per query: bbx  [x1, y1, x2, y2] in its image
                                                easy, hard, junk: 0-based indices into imlist

The images are Oxford's and Paris' own: a flat folder (Oxford) or one folder per landmark (Paris) both
work, names are looked up at any depth. The query images follow the database in the normalised
file (``n_database``).

Protocols, evaluated separately (reference.md, section 3)::

    easy:    positives easy          junk = junk + hard
    medium:  positives easy + hard   junk = junk
    hard:    positives hard          junk = junk + easy

Each query also keeps good = easy, ok = hard, junk = junk as its own labels, which is the Medium
protocol (NDCG grades easy above hard). A query with no easy image has no positive under Easy; its AP
is undefined and left out of that protocol's mean, as revisitop's evaluation does.
"""

from __future__ import annotations

import io
import logging
import os
import pickle
from pathlib import Path
from typing import Mapping

import numpy as np

from ..errors import InstanceSearchError
from ..groundtruth import GroundTruth, Labels, Query, check_expected
from .oxford import (check_counts_before, clip_box, describe_images, index_images, resolve_unreadable,
                     strip_image_suffix)

log = logging.getLogger(__name__)

PROTOCOLS = ("easy", "medium", "hard")

# The pickle holds only builtins and numpy arrays; anything else would be code run on load, so the
# unpickler refuses it (a pickle from the internet is otherwise an arbitrary program).
_ALLOWED = {
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5 arrays
    ("_codecs", "encode"), ("builtins", "bytes"), ("__builtin__", "bytes"),  # bytes under protocols 0-2
}


class _DataOnlyUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _read_pickle(path: Path) -> dict:
    if not path.is_file():
        raise InstanceSearchError(f"{path}: ground-truth file not found; download the revisitop gnd_*.pkl to this path")
    try:
        data = _DataOnlyUnpickler(io.BytesIO(path.read_bytes()), encoding="latin1").load()
    except Exception as exc:  # truncated, not a pickle, or a pickle of something else
        raise InstanceSearchError(f"{path}: not a readable revisitop pickle ({exc}); download it again") from None
    if not isinstance(data, dict) or not {"imlist", "qimlist", "gnd"} <= set(data):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise InstanceSearchError(f"{path}: expected a dict with imlist, qimlist, gnd; found {keys}")
    return data


def _names(data: dict, key: str, path: Path) -> list[str]:
    names = list(data[key]) if isinstance(data[key], (list, tuple, np.ndarray)) else None
    if not names or not all(isinstance(n, str) and n for n in names):
        raise InstanceSearchError(f"{path}: {key} must be a non-empty list of image names")
    names = [strip_image_suffix(n) for n in names]
    seen = set()
    for n in names:
        if n in seen:
            raise InstanceSearchError(f"{path}: {key} lists {n} twice; download the file again")
        seen.add(n)
    return names


def _ids(query: dict, key: str, n: int, path: Path, where: str) -> tuple[int, ...]:
    try:
        ids = np.asarray(query[key], dtype=np.float64).reshape(-1)
    except KeyError:
        raise InstanceSearchError(f"{path}: {where}: key {key} missing; expected bbx, easy, hard, junk") from None
    except (TypeError, ValueError):
        raise InstanceSearchError(f"{path}: {where}: {key} must be a list of image indices") from None
    if ids.size and (np.any(ids != np.round(ids)) or ids.min() < 0 or ids.max() >= n):
        bad = ids[(ids != np.round(ids)) | (ids < 0) | (ids >= n)][0]
        raise InstanceSearchError(f"{path}: {where}: {key} index {bad:g} is not an imlist entry (0..{n - 1})")
    return tuple(sorted(set(int(i) for i in ids)))


def _protocols(easy, hard, junk) -> tuple[tuple[str, Labels], ...]:
    def union(*parts):
        return tuple(sorted(set().union(*parts)))

    return (("easy", Labels(good=easy, junk=union(junk, hard))),
            ("medium", Labels(good=easy, ok=hard, junk=junk)),
            ("hard", Labels(good=hard, junk=union(junk, easy))))


def load_revisited(name: str, images_dir: str | os.PathLike, gnd_pkl: str | os.PathLike, *,
                   expect: Mapping[str, int] | None = None, skip_unreadable: bool = False) -> GroundTruth:
    """ROxford5k / RParis6k into the normalised ground truth with its three protocols.

    ``skip_unreadable``: leave out unreadable database images that are no query's easy or hard image
    (junk ones are dropped from the junk lists); query images are never left out.
    """
    path = Path(gnd_pkl)
    data = _read_pickle(path)
    imlist, qimlist = _names(data, "imlist", path), _names(data, "qimlist", path)
    gnd = data["gnd"]
    if not isinstance(gnd, (list, tuple)) or len(gnd) != len(qimlist) or not all(isinstance(g, dict) for g in gnd):
        raise InstanceSearchError(f"{path}: gnd must be a list of {len(qimlist)} dicts (one per qimlist entry)")
    n = len(imlist)
    labels = []
    for i, g in enumerate(gnd):
        where = f"query {i} ({qimlist[i]})"
        lists = {k: _ids(g, k, n, path, where) for k in ("easy", "hard", "junk")}
        for a, b in (("easy", "hard"), ("easy", "junk"), ("hard", "junk")):
            both = set(lists[a]) & set(lists[b])
            if both:  # the protocols move hard/easy into junk: the three lists must be disjoint
                raise InstanceSearchError(f"{path}: {where}: image {min(both)} is both {a} and {b}")
        labels.append((lists["easy"], lists["hard"], lists["junk"]))
    # A query image that is also a database image (not so in the official files) is not duplicated.
    in_database = set(imlist)
    query_only = [q for q in dict.fromkeys(qimlist) if q not in in_database]
    check_expected({"images": n + len(query_only), "database": n, "queries": len(qimlist)}, expect, str(path), name)

    found = index_images(images_dir)
    missing = [im for im in (*imlist, *query_only) if im not in found]
    if missing:
        raise InstanceSearchError(
            f"{path}: image {missing[0]} not found under {images_dir} ({len(missing)} missing); unpack the images there")
    bad: dict = {}
    images = describe_images(images_dir, ((im, found[im]) for im in (*imlist, *query_only)), unreadable=bad,
                             source=path)
    protected = set(qimlist) | {imlist[j] for easy, hard, _ in labels for j in (*easy, *hard)}
    dropped = resolve_unreadable(bad, protected, skip_unreadable, images_dir, name)
    if dropped:  # database indices move up past the images left out; junk entries of those go
        new_index = {}
        for j, im in enumerate(imlist):
            if im not in dropped:
                new_index[j] = len(new_index)
        labels = [tuple(tuple(new_index[j] for j in ids if j in new_index) for ids in lists) for lists in labels]
        n = len(new_index)
    index = {im.name: k for k, im in enumerate(images)}
    queries = []
    for i, (qname, g, (easy, hard, junk)) in enumerate(zip(qimlist, gnd, labels)):
        where = f"query {i} ({qname})"
        if "bbx" not in g:
            raise InstanceSearchError(f"{path}: {where}: key bbx missing; expected bbx, easy, hard, junk")
        bbx = np.asarray(g["bbx"], dtype=np.float64).reshape(-1)
        if bbx.size != 4:
            raise InstanceSearchError(f"{path}: {where}: bbx has {bbx.size} numbers, expected x1 y1 x2 y2")
        image = index[qname]
        try:
            box = clip_box(path, bbx, images[image])
        except InstanceSearchError as exc:
            raise InstanceSearchError(f"{exc} ({where})") from None
        queries.append(Query(name=qname, image=image, box=box, good=easy, ok=hard, junk=junk,
                             protocols=_protocols(easy, hard, junk)))
    result = GroundTruth(dataset=name, root=Path(images_dir).as_posix(), images=images, n_database=n, queries=queries)
    result.validate(str(path))
    check_counts_before(result, expect, str(path), dropped)
    log.info("%s: %d database images, %d query-only images, %d queries (protocols %s)",
             name, n, len(query_only), len(queries), "/".join(PROTOCOLS))
    return result
