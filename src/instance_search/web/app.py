"""Local web page over loaded indexes: pick or upload an image, draw a box, see the ranked results.

Flask serves one static page (``static/``: no asset from the internet) and a small JSON API; the
indexes are loaded once, before the app is made, and only read afterwards. The server binds
127.0.0.1 only. Uploads are written into one temporary folder (made by the app, removed at exit),
under random names, and nowhere else; at most ``MAX_UPLOADS`` are kept.

Only this machine may use it: requests whose ``Host`` is not 127.0.0.1, localhost or [::1] at the
server's port are answered 421 (a DNS-rebinding page in the user's browser cannot read the results),
POSTs from another origin 403. At most ``MAX_CONCURRENT_QUERIES`` queries run at once (503 beyond).

API (JSON; errors are ``{"error": "<one line>"}`` with status 400, 403, 404, 413, 421, 500 or 503)::

    GET  /api/indexes                                  the indexes, similarities, upload limit
    GET  /api/indexes/<i>/images?offset=&limit=&filter=  database images (id, name, size)
    GET  /api/indexes/<i>/images/<id>/thumb|view       JPEG: thumbnail / display-size image
    POST /api/uploads  (multipart field "image")       -> {"upload": id, "name", "width", "height"}
    GET  /api/uploads/<id>/view                        JPEG of an uploaded image
    POST /api/query  {"index": i, "image": {"index": i, "id": n} | {"upload": id},
                      "box": [x1, y1, x2, y2] | null, "similarity", "results", "rerank": true|false}
"""

from __future__ import annotations

import atexit
import io
import logging
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
import uuid
from collections import OrderedDict
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from flask import Flask, Response, current_app, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException

from ..api import SearchIndex
from ..errors import InstanceSearchError
from ..index import Index
from ..io import read_image
from ..query import check_box_inside, check_box_order
from ..retrieval.similarity import SIMILARITIES

STATIC = Path(__file__).parent / "static"
THUMB_HEIGHT = 160
VIEW_SIDE = 1024            # images on the drawing canvas: big enough for a precise box, small to send
MAX_UPLOADS = 50            # older uploads are deleted: the temporary folder stays bounded
MAX_PIXELS = 40_000_000     # checked from the header before decoding (a small file can be a huge image)
MAX_RESULTS = 200
MAX_CONCURRENT_QUERIES = 4  # queries are CPU-bound: more at once only slows each one down
LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")
UPLOAD_FORMATS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "WEBP": ".webp", "TIFF": ".tif"}
_UPLOAD_ID = re.compile(r"^[0-9a-f]{32}$")


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _jpeg(image: np.ndarray, max_width: int | None, max_height: int) -> bytes:
    h, w = image.shape[:2]
    scale = min(1.0, max_height / h, (max_width or w) / w)
    if scale < 1.0:
        image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 85])
    if not ok:
        raise ApiError(500, "image encoding failed")
    return data.tobytes()


def _image_response(data: bytes) -> Response:
    return Response(data, mimetype="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


class _Uploads:
    """The uploaded images: random names in one temporary folder, the newest ``MAX_UPLOADS`` kept."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._items: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, data: bytes, filename: str) -> dict:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(data)) as im:  # header only: format and size before any decoding
                fmt, (width, height) = im.format, im.size
        except Image.DecompressionBombError:
            raise ApiError(400, f"{filename}: too many pixels (limit {MAX_PIXELS // 1_000_000} megapixels); "
                                "upload a smaller image") from None
        except (UnidentifiedImageError, OSError):
            raise ApiError(400, f"{filename}: not a readable image; upload a JPEG, PNG, BMP, WebP or TIFF file") from None
        if fmt not in UPLOAD_FORMATS:
            raise ApiError(400, f"{filename}: {fmt} images are not supported; upload a JPEG, PNG, BMP, WebP or TIFF file")
        if width * height > MAX_PIXELS:
            raise ApiError(400, f"{filename}: too many pixels ({width}x{height}; limit {MAX_PIXELS // 1_000_000} "
                                "megapixels); upload a smaller image")
        uid = uuid.uuid4().hex
        path = self.folder / f"{uid}{UPLOAD_FORMATS[fmt]}"
        path.write_bytes(data)
        try:
            read_image(path)  # the same check as the pipeline's (truncated JPEGs included)
        except InstanceSearchError:
            path.unlink(missing_ok=True)
            raise ApiError(400, f"{filename}: not a readable image (corrupt or truncated); upload another file") from None
        item = {"upload": uid, "name": Path(filename).name or "upload", "width": width, "height": height, "path": path}
        with self._lock:
            self._items[uid] = item
            while len(self._items) > MAX_UPLOADS:
                _, old = self._items.popitem(last=False)
                old["path"].unlink(missing_ok=True)
        return item

    def get(self, uid) -> dict:
        with self._lock:
            item = self._items.get(uid) if isinstance(uid, str) and _UPLOAD_ID.match(uid) else None
        if item is None:
            raise ApiError(404, f"unknown upload {uid!r}; upload the image again")
        return item


def _first_query_image(index: Index) -> int:
    """Where the page starts: the first benchmark query's image, when it is a database image."""
    images = [q.image for q in index.gnd.queries if q.image < index.n_database]
    return images[0] if images else 0


def _local(host: str, port: str) -> bool:
    """Whether a Host (or Origin's host) names this machine at the server's port."""
    name, _, given = host.rpartition(":") if not host.endswith("]") else (host, "", "")
    if not name:  # no port given: the scheme's default
        name, given = host, ""
    return name in LOCAL_HOSTS and given in ("", port)


def _strict_bool(body: dict, key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"{key} {value!r}: expected true or false (a JSON boolean)")
    return value


def _strict_box(box) -> tuple | None:
    if box is None:
        return None
    if (not isinstance(box, list) or len(box) != 4
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
        raise ApiError(400, f"box {box!r}: expected [x1, y1, x2, y2], four numbers in pixels, or null for the whole "
                            "image")
    return check_box_order(box)


def _only_this_machine():
    """Before every request: refuse other hosts' names (DNS rebinding) and cross-origin POSTs."""
    port = str(request.environ.get("SERVER_PORT", ""))
    if not _local(request.host, port):
        raise ApiError(421, f"host {request.host!r} is not served here; open http://127.0.0.1:{port}/")
    origin = request.headers.get("Origin")
    if request.method == "POST" and origin is not None:
        scheme, _, host = origin.partition("://")
        if scheme not in ("http", "https") or not _local(host, port):
            raise ApiError(403, f"cross-origin request from {origin!r} refused")


def _api_error(exc: ApiError):
    return jsonify(error=str(exc)), exc.status


def _user_error(exc: InstanceSearchError):
    return jsonify(error=str(exc).splitlines()[0]), 400


def _http_error(exc: HTTPException):
    return jsonify(error=f"{exc.code} {exc.name}: {exc.description}"), exc.code


def _internal_error(exc: Exception):  # a bug: one JSON line for the page, the traceback in the server log
    current_app.logger.exception("unexpected error")
    return jsonify(error=f"internal error ({type(exc).__name__}); the server log has the details"), 500


def _page():
    return send_from_directory(STATIC, "index.html")


def _static_file(name: str):
    return send_from_directory(STATIC, name)  # refuses paths outside STATIC


def _query_options(body: dict) -> tuple[str, int, bool]:
    """A query's similarity, number of results and re-ranking switch, checked."""
    similarity = body.get("similarity", "cosine")
    if similarity not in SIMILARITIES:
        raise ApiError(400, f"similarity {similarity!r}: expected one of {', '.join(SIMILARITIES)}")
    results = body.get("results", 20)
    if not isinstance(results, int) or isinstance(results, bool) or not 1 <= results <= MAX_RESULTS:
        raise ApiError(400, f"results {results!r}: expected an integer from 1 to {MAX_RESULTS}")
    return similarity, results, _strict_bool(body, "rerank", True)


def _public_answer(answer, index: Index, i: int, name: str) -> dict:
    """The answer as the page gets it: the query image by the name the user knows, hits without paths."""
    out = answer.to_dict()
    out["image"] = name
    for hit in out["hits"]:
        del hit["path"]  # the server's file system stays private; the page loads thumbnails by id
        im = index.gnd.images[hit["image"]]
        hit.update(width=im.width, height=im.height, thumb=f"/api/indexes/{i}/images/{hit['image']}/thumb")
    return out


class _Site:
    """What the routes share, and one method per route that needs it.

    The indexes are only read, except that one changed on disk is loaded again in place (under a lock).
    Flask calls these methods from several threads at once: the shared state is the index list, the
    image caches, the uploads and the query semaphore, each safe for that.
    """

    def __init__(self, indexes: list[Index], *, params: dict, params_source: str, uploads: _Uploads,
                 max_upload_bytes: int):
        # each reloaded in place when its index changes on disk; the queries go through them (the API)
        self.searchers = [SearchIndex(ix, params, params_source) for ix in indexes]
        self.params = params
        self.params_source = params_source
        self.uploads = uploads
        self.max_upload_bytes = max_upload_bytes
        self._running = threading.BoundedSemaphore(MAX_CONCURRENT_QUERIES)
        # one cache per app, cleared when an index is reloaded (lru_cache on the methods would serve every app)
        # thumbnails: the picker and the results show the same ones again and again (~10 kB each)
        self.thumbnail = lru_cache(maxsize=4096)(self._thumbnail)
        self.view = lru_cache(maxsize=16)(self._view)  # canvas-size images (~100 kB each): only the last few

    # -- lookups

    @property
    def indexes(self) -> list[Index]:
        return [s.index for s in self.searchers]

    def get_index(self, i) -> Index:
        n = len(self.searchers)
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n:
            raise ApiError(404, f"unknown index {i!r}; there are {n} (0..{n - 1})")
        if self.searchers[i].reload_if_changed():  # images were added (instance-search index --add)
            self.thumbnail.cache_clear()
            self.view.cache_clear()
        return self.searchers[i].index

    @staticmethod
    def get_image(index: Index, n) -> int:
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < index.n_database:
            raise ApiError(404, f"unknown image {n!r} in {index.name}; it has images 0..{index.n_database - 1}")
        return n

    def _thumbnail(self, i: int, n: int) -> bytes:
        return _jpeg(read_image(self.searchers[i].index.image_path(n)), None, THUMB_HEIGHT)

    def _view(self, i: int, n: int) -> bytes:
        return _jpeg(read_image(self.searchers[i].index.image_path(n)), VIEW_SIDE, VIEW_SIDE)

    # -- errors

    def too_large(self, exc):
        limit_mb = f"{self.max_upload_bytes / 1024 / 1024:.3g}"
        return jsonify(error=f"upload too large: the limit is {limit_mb} MB (instance-search serve --max-upload-mb)"), 413

    # -- routes

    def list_indexes(self):
        for i in range(len(self.searchers)):
            self.get_index(i)  # loads again what changed on disk
        return jsonify(
            indexes=[{"id": i, "name": ix.name, "path": str(ix.path), "n_database": ix.n_database,
                      "first_query_image": _first_query_image(ix),
                      "second_stage": ix.method.second_stage(self.params[ix.method.name]),
                      "params_source": self.params_source}
                     for i, ix in enumerate(self.indexes)],
            similarities=list(SIMILARITIES), max_upload_bytes=self.max_upload_bytes, max_results=MAX_RESULTS)

    def list_images(self, i: int):
        index = self.get_index(i)
        text = request.args.get("filter", "").strip().lower()
        try:
            offset = max(0, int(request.args.get("offset", 0)))
            limit = min(500, max(1, int(request.args.get("limit", 60))))
        except ValueError:
            raise ApiError(400, "offset and limit must be integers") from None
        found = [n for n, im in enumerate(index.gnd.images[:index.n_database]) if text in im.name.lower()]
        return jsonify(total=len(found), images=[
            {"id": n, "name": index.gnd.images[n].name, "width": index.gnd.images[n].width,
             "height": index.gnd.images[n].height} for n in found[offset:offset + limit]])

    def database_image(self, i: int, n: int, kind: str):
        if kind not in ("thumb", "view"):
            raise ApiError(404, f"unknown image kind {kind!r}: thumb or view")
        n = self.get_image(self.get_index(i), n)
        return _image_response(self.thumbnail(i, n) if kind == "thumb" else self.view(i, n))

    def upload(self):
        f = request.files.get("image")  # a body over MAX_CONTENT_LENGTH raises 413 here
        if f is None or not f.filename:
            raise ApiError(400, "no file: send the image in the multipart field 'image'")
        item = self.uploads.add(f.read(), f.filename)
        return jsonify({k: v for k, v in item.items() if k != "path"})

    def upload_view(self, uid: str):
        return _image_response(_jpeg(read_image(self.uploads.get(uid)["path"]), VIEW_SIDE, VIEW_SIDE))

    def query(self):
        start = time.perf_counter()
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "send a JSON object: {index, image, box, similarity, results, rerank}")
        i = body.get("index", 0)
        index = self.get_index(i)
        path, name, width, height = self._query_image(body.get("image"), i)
        box = _strict_box(body.get("box"))
        if box is not None:
            check_box_inside(box, width, height, name)
        similarity, results, rerank = _query_options(body)
        if not self._running.acquire(blocking=False):
            raise ApiError(503, f"busy: {MAX_CONCURRENT_QUERIES} queries are running; try again in a moment")
        try:
            answer = self.searchers[i].query(path, box, similarity=similarity, results=results, rerank=rerank)
        except InstanceSearchError as exc:  # name the image as the user knows it, never a server path
            raise ApiError(400, str(exc).splitlines()[0].replace(str(path), name)) from None
        finally:
            self._running.release()
        out = _public_answer(answer, index, i, name)
        out["timings"]["server"] = time.perf_counter() - start
        return jsonify(out)

    def _query_image(self, source, i) -> tuple[Path, str, int, int]:
        """The query's image (an upload or a database image, of index ``i`` unless it names another):
        its path, the name the user knows it by, and its size."""
        if isinstance(source, dict) and "upload" in source:
            item = self.uploads.get(source["upload"])
            return item["path"], item["name"], item["width"], item["height"]
        if isinstance(source, dict) and "id" in source:
            src_index = self.get_index(source.get("index", i))
            n = self.get_image(src_index, source["id"])
            im = src_index.gnd.images[n]
            return src_index.image_path(n), im.name, im.width, im.height
        raise ApiError(400, 'image: expected {"index": i, "id": n} (a database image) or {"upload": id}')


def create_app(indexes: list[Index], *, params: dict, params_source: str = "params.yaml",
               upload_dir: str | Path | None = None, max_upload_bytes: int = 20 * 1024 * 1024) -> Flask:
    """The Flask app over ``indexes`` (loaded already), answering with ``params`` (a validated params
    file's content). ``upload_dir``: None makes a temporary folder that is removed at exit; a given
    folder (tests) is used as it is."""
    if not indexes:
        raise InstanceSearchError("no index given; pass --index results/<dataset>/<method>")
    if upload_dir is None:
        upload_dir = Path(tempfile.mkdtemp(prefix="instance-search-uploads-"))
        atexit.register(shutil.rmtree, upload_dir, True)
    site = _Site(indexes, params=params, params_source=params_source, uploads=_Uploads(Path(upload_dir)),
                 max_upload_bytes=max_upload_bytes)
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes
    app.before_request(_only_this_machine)
    # Flask looks a handler up by status code first, then by the most specific class: order does not matter
    app.register_error_handler(ApiError, _api_error)
    app.register_error_handler(InstanceSearchError, _user_error)
    app.register_error_handler(413, site.too_large)
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(Exception, _internal_error)
    for rule, endpoint, view, method in [
            ("/", "page", _page, "GET"),
            ("/static/<path:name>", "static_file", _static_file, "GET"),
            ("/api/indexes", "list_indexes", site.list_indexes, "GET"),
            ("/api/indexes/<int:i>/images", "list_images", site.list_images, "GET"),
            ("/api/indexes/<int:i>/images/<int:n>/<kind>", "database_image", site.database_image, "GET"),
            ("/api/uploads", "upload", site.upload, "POST"),
            ("/api/uploads/<uid>/view", "upload_view", site.upload_view, "GET"),
            ("/api/query", "query", site.query, "POST")]:
        app.add_url_rule(rule, endpoint, view, methods=[method])
    return app


def make_server(indexes: list[Index], port: int = 8000, **app_options):
    """A threaded WSGI server on 127.0.0.1 (never another interface: the page has no authentication)."""
    from werkzeug.serving import make_server as werkzeug_server

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # errors only, not a line per thumbnail
    # werkzeug answers a busy port with two lines and exit(1); check first, for our one-line error
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server does
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            raise InstanceSearchError(f"127.0.0.1:{port}: cannot listen ({exc.strerror}); "
                                      "pass another --port (0: any free one)") from None
    return werkzeug_server("127.0.0.1", port, create_app(indexes, **app_options), threaded=True)


def serve(indexes: list[Index], port: int = 8000, max_upload_bytes: int = 20 * 1024 * 1024, *, params: dict,
          params_source: str = "params.yaml") -> None:
    server = make_server(indexes, port, max_upload_bytes=max_upload_bytes, params=params, params_source=params_source)
    # SIGTERM (kill, service managers) ends like Ctrl+C, so that the uploads folder is removed at exit
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    names = ", ".join(ix.name for ix in indexes)
    print(f"instance-search: {names} on http://127.0.0.1:{server.server_port}/  (Ctrl+C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
