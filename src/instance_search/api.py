"""The Python API: open an index, query it with an image (a file or an array) and a box, add photos.

::

    import instance_search

    index = instance_search.open_index("my-index")             # params: the checkout's params.yaml
    answer = index.query("query.jpg", box=(40, 30, 300, 220))  # x1, y1, x2, y2 in the image's pixels
    for hit in answer.hits:
        print(hit.rank, hit.name, hit.score, hit.window)

``instance-search query`` and the web page are thin layers over this module; every query goes
through :func:`instance_search.query.run_query`, the pipeline's own retrieval path. The index (its
files, model and network) is loaded once by :func:`open_index` and the network on the first query,
then kept: later queries of the same :class:`SearchIndex` pay only for their own image.
"""

from __future__ import annotations

import csv
import os
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np

from .errors import InstanceSearchError
from .index import Index, load_index
from .query import Answer, Box, Hit, check_box_inside, check_box_order, run_query

__all__ = ["Answer", "Box", "Hit", "Query", "SearchIndex", "load_params", "open_index", "read_queries"]

# a query image: a file (any format OpenCV reads), or the pixels, HxWx3 uint8 in OpenCV's BGR order
# (cv2.imread's) or HxW uint8 grey; an RGB array (PIL, matplotlib) is passed as ``rgb[..., ::-1]``
ImageLike = Union[str, os.PathLike, np.ndarray]
QUERY_COLUMNS = ("image", "x1", "y1", "x2", "y2")


def default_params_file() -> Path:
    """The params.yaml of the checkout this library runs from (its defaults)."""
    return Path(__file__).resolve().parents[2] / "params.yaml"


def load_params(params: str | os.PathLike | dict | None = None) -> tuple[dict, str]:
    """(validated params, where they came from): a params file, a dict (validated against the schema),
    or None for the checkout's params.yaml."""
    from .config import load_params as load_file, load_schema, schema_path, validate_params

    if params is None:
        params = default_params_file()
        if not params.is_file():
            raise InstanceSearchError(f"{params}: not found (the library is not run from its checkout); "
                                      "pass params= the path of a params.yaml")
    if isinstance(params, dict):
        validate_params(params, load_schema(schema_path(default_params_file())), source="params (dict)")
        return params, "params (dict)"
    return load_file(params, schema_path(params)), str(params)


@dataclass(frozen=True)
class Query:
    """One query of a batch: an image file and its box (None: the whole image); ``row``: its CSV line."""

    image: str
    box: Box | None = None
    row: int = 0


class SearchIndex:
    """An index opened for queries: its files and model loaded and checked, its params chosen.

    Thread-safe: the web page queries one from several threads (the network is built under a lock).
    """

    def __init__(self, index: Index, params: dict, params_source: str):
        self.index = index
        self.params = params
        self.params_source = params_source
        self._reloading = threading.Lock()

    @property
    def path(self) -> Path:
        return self.index.path

    @property
    def method(self) -> str:
        return self.index.method.name

    @property
    def name(self) -> str:
        return self.index.name

    def __len__(self) -> int:
        return self.index.n_database

    def __repr__(self) -> str:
        return f"SearchIndex({str(self.path)!r}: {self.name}, {len(self)} images)"

    def query(self, image: ImageLike, box: Box | None = None, *, results: int = 20, similarity: str = "cosine",
              rerank: bool = True) -> Answer:
        """The database ranked for ``image`` and ``box`` (x1, y1, x2, y2 in its pixels; None: the whole
        image): the top ``results`` hits, and the stages' timings in seconds.

        rerank: False stops after the first stage; True re-ranks and expands as the params say.
        """
        if isinstance(image, np.ndarray):
            return self._query_pixels(image, box, results=results, similarity=similarity, rerank=rerank)
        return run_query(self.index, image, box, params=self.params, params_source=self.params_source,
                         similarity=similarity, results=results, rerank=rerank)

    def query_many(self, queries: Iterable[Query | tuple[ImageLike, Box | None]], **options) -> Iterator[Answer]:
        """One answer per query, in order (``options``: as :meth:`query`'s)."""
        for q in queries:
            image, box = (q.image, q.box) if isinstance(q, Query) else q
            yield self.query(image, box, **options)

    def _query_pixels(self, pixels: np.ndarray, box: Box | None, **options) -> Answer:
        import cv2

        if pixels.dtype != np.uint8 or not (pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 3)):
            raise InstanceSearchError(f"query array of {pixels.dtype} {pixels.shape}: expected HxWx3 uint8 (BGR, "
                                      "as cv2.imread returns) or HxW uint8; convert it first")
        # the methods read their images from files, as the pipeline does: a lossless PNG keeps every pixel
        with tempfile.TemporaryDirectory(prefix="instance-search-query-") as folder:
            path = Path(folder) / "array.png"
            if not cv2.imwrite(str(path), pixels):
                raise InstanceSearchError(f"{path}: the query array could not be written; check free space in "
                                          f"{tempfile.gettempdir()}")
            answer = run_query(self.index, path, box, params=self.params, params_source=self.params_source,
                               **options)
        answer.image = "<array>"
        return answer

    def reload_if_changed(self) -> bool:
        """Load the index again if it was written again on disk (images added); True if it was."""
        if not self.index.changed():
            return False
        with self._reloading:
            if self.index.changed():
                self.index = load_index(self.index.path)
                return True
        return False

    def add(self, folder: str | os.PathLike) -> int:
        """Add the images under ``folder`` (those not indexed yet) to this index, a photo folder's, with
        its own extraction settings and model; the index is reloaded. Returns how many were added."""
        from . import photos, threads

        before = len(self)
        threads.apply(self.params["compute"]["threads"])  # the pipeline's compute steps: the same threads
        photos.add(folder, self.path, self.params)
        self.reload_if_changed()
        return len(self) - before


def open_index(path: str | os.PathLike, params: str | os.PathLike | dict | None = None) -> SearchIndex:
    """The index folder ``path`` (``results/<dataset>/<method>`` of a pipeline run, or one made by
    ``instance-search index``), loaded and checked, with ``params`` (a params.yaml path, a params dict,
    or None: the checkout's params.yaml) for its search, re-ranking and expansion."""
    params, source = load_params(params)
    return SearchIndex(load_index(path), params, source)


def read_queries(path: str | os.PathLike) -> list[Query]:
    """A batch's queries from a CSV file with the header ``image,x1,y1,x2,y2``: the image a path
    relative to the CSV's folder (or absolute), the box in its pixels, or the four box fields empty for
    the whole image (the box columns may be left out). Every row is checked (the image readable, the
    box inside it) before any is answered: the first bad row is an error naming the file and line."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise InstanceSearchError(f"{path}: query file not found; pass a CSV with the header image,x1,y1,x2,y2")
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = [c.strip() for c in next(reader, [])]
        if header not in (list(QUERY_COLUMNS[:1]), list(QUERY_COLUMNS)):
            raise InstanceSearchError(f"{path}: line 1: expected the header image,x1,y1,x2,y2 (or image), got "
                                      f"{','.join(header) or 'nothing'}")
        rows = [(n, row) for n, row in enumerate(reader, start=2) if any(c.strip() for c in row)]
    if not rows:
        raise InstanceSearchError(f"{path}: no query after the header; add rows image,x1,y1,x2,y2")
    out = []
    for n, row in rows:
        where = f"{path}: line {n}"
        if len(row) != len(header):
            raise InstanceSearchError(f"{where}: {len(row)} fields, expected {len(header)} ({','.join(header)})")
        image = Path(os.path.abspath(path.parent / row[0].strip()))  # as named: a link stays a link
        fields = [c.strip() for c in row[1:]]
        box = None
        if any(fields):
            try:
                box = check_box_order([float(c) for c in fields])
            except ValueError:  # a field empty or not a number
                raise InstanceSearchError(f"{where}: box {','.join(fields)}: expected four numbers x1,y1,x2,y2 in "
                                          "pixels, or all four empty for the whole image") from None
            except InstanceSearchError as exc:
                raise InstanceSearchError(f"{where}: {exc}") from None
        try:
            with Image.open(image) as im:  # the header only: the size without decoding the pixels
                width, height = im.size
        except FileNotFoundError:
            raise InstanceSearchError(f"{where}: {image}: image not found (paths are relative to {path.parent})") \
                from None
        except (UnidentifiedImageError, OSError):
            raise InstanceSearchError(f"{where}: {image}: not a readable image; give a JPEG or PNG file") from None
        if box is not None:
            try:
                check_box_inside(box, width, height, image.name)
            except InstanceSearchError as exc:
                raise InstanceSearchError(f"{where}: {exc}") from None
        out.append(Query(str(image), box, n))
    return out
