"""Local web page over loaded indexes: pick or upload an image, draw a box, see the ranked results.

Flask serves one static page (``static/``: no asset from the internet) and a small JSON API; the
indexes are loaded once, before the app is made, and only read afterwards. The server binds
127.0.0.1 only. Uploads are written into one temporary folder (made by the app, removed at exit),
under random names, and nowhere else; at most ``MAX_UPLOADS`` are kept.

API (JSON; errors are ``{"error": "<one line>"}`` with status 400, 404 or 413)::

    GET  /api/indexes                                  the indexes, similarities, upload limit
    GET  /api/indexes/<i>/images?offset=&limit=&filter=  database images (id, name, size)
    GET  /api/indexes/<i>/images/<id>/thumb|view       JPEG: thumbnail / display-size image
    POST /api/uploads  (multipart field "image")       -> {"upload": id, "name", "width", "height"}
    GET  /api/uploads/<id>/view                        JPEG of an uploaded image
    POST /api/query  {"index": i, "image": {"index": i, "id": n} | {"upload": id},
                      "box": [x1, y1, x2, y2] | null, "similarity", "top", "rerank"}
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
from flask import Flask, Response, jsonify, request, send_from_directory
from werkzeug.exceptions import HTTPException

from ..errors import InstanceSearchError
from ..index import Index
from ..io import read_image
from ..query import check_box_inside, check_box_order, run_query
from ..search import SIMILARITIES

STATIC = Path(__file__).parent / "static"
THUMB_HEIGHT = 160
VIEW_SIDE = 1024            # images on the drawing canvas: big enough for a precise box, small to send
MAX_UPLOADS = 50            # older uploads are deleted: the temporary folder stays bounded
MAX_PIXELS = 40_000_000     # checked from the header before decoding (a small file can be a huge image)
MAX_TOP = 200
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
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
            raise ApiError(400, f"{filename}: not a readable image; upload a JPEG, PNG, BMP, WebP or TIFF file") from None
        if fmt not in UPLOAD_FORMATS:
            raise ApiError(400, f"{filename}: {fmt} images are not supported; upload a JPEG, PNG, BMP, WebP or TIFF file")
        if width * height > MAX_PIXELS:
            raise ApiError(400, f"{filename}: {width}x{height} pixels is over the {MAX_PIXELS // 1_000_000} megapixel "
                                "limit; upload a smaller image")
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


def create_app(indexes: list[Index], *, upload_dir: str | Path | None = None,
               max_upload_bytes: int = 20 * 1024 * 1024) -> Flask:
    """The Flask app over ``indexes`` (loaded already). ``upload_dir``: None makes a temporary folder
    that is removed at exit; a given folder (tests) is used as it is."""
    if not indexes:
        raise InstanceSearchError("no index given; pass --index results/<dataset>/<method>")
    if upload_dir is None:
        upload_dir = Path(tempfile.mkdtemp(prefix="instance-search-uploads-"))
        atexit.register(shutil.rmtree, upload_dir, True)
    uploads = _Uploads(Path(upload_dir))
    app = Flask(__name__, static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = max_upload_bytes
    limit_mb = f"{max_upload_bytes / 1024 / 1024:.3g}"

    def get_index(i) -> Index:
        if not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < len(indexes):
            raise ApiError(404, f"unknown index {i!r}; there are {len(indexes)} (0..{len(indexes) - 1})")
        return indexes[i]

    def get_image(index: Index, n) -> int:
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n < index.n_database:
            raise ApiError(404, f"unknown image {n!r} in {index.name}; it has images 0..{index.n_database - 1}")
        return n

    @lru_cache(maxsize=4096)  # the picker and the results show the same thumbnails again and again (~10 kB each)
    def thumbnail(i: int, n: int) -> bytes:
        return _jpeg(read_image(indexes[i].image_path(n)), None, THUMB_HEIGHT)

    @lru_cache(maxsize=16)  # canvas-size images (~100 kB each): only the last few
    def view(i: int, n: int) -> bytes:
        return _jpeg(read_image(indexes[i].image_path(n)), VIEW_SIDE, VIEW_SIDE)

    @app.errorhandler(ApiError)
    def api_error(exc: ApiError):
        return jsonify(error=str(exc)), exc.status

    @app.errorhandler(InstanceSearchError)
    def user_error(exc: InstanceSearchError):
        return jsonify(error=str(exc).splitlines()[0]), 400

    @app.errorhandler(413)
    def too_large(exc):
        return jsonify(error=f"upload too large: the limit is {limit_mb} MB (instance-search serve --max-upload-mb)"), 413

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException):
        return jsonify(error=f"{exc.code} {exc.name}: {exc.description}"), exc.code

    @app.get("/")
    def page():
        return send_from_directory(STATIC, "index.html")

    @app.get("/static/<path:name>")
    def static_file(name: str):
        return send_from_directory(STATIC, name)  # refuses paths outside STATIC

    @app.get("/api/indexes")
    def list_indexes():
        return jsonify(
            indexes=[{"id": i, "name": ix.name, "path": str(ix.path), "n_database": ix.n_database,
                      "first_query_image": _first_query_image(ix),
                      "rerank_top": ix.params["rerank"]["top"], "params_source": ix.params_source}
                     for i, ix in enumerate(indexes)],
            similarities=list(SIMILARITIES), max_upload_bytes=max_upload_bytes, max_top=MAX_TOP)

    @app.get("/api/indexes/<int:i>/images")
    def list_images(i: int):
        index = get_index(i)
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

    @app.get("/api/indexes/<int:i>/images/<int:n>/<kind>")
    def database_image(i: int, n: int, kind: str):
        if kind not in ("thumb", "view"):
            raise ApiError(404, f"unknown image kind {kind!r}: thumb or view")
        n = get_image(get_index(i), n)
        return _image_response(thumbnail(i, n) if kind == "thumb" else view(i, n))

    @app.post("/api/uploads")
    def upload():
        f = request.files.get("image")  # a body over MAX_CONTENT_LENGTH raises 413 here
        if f is None or not f.filename:
            raise ApiError(400, "no file: send the image in the multipart field 'image'")
        item = uploads.add(f.read(), f.filename)
        return jsonify({k: v for k, v in item.items() if k != "path"})

    @app.get("/api/uploads/<uid>/view")
    def upload_view(uid: str):
        return _image_response(_jpeg(read_image(uploads.get(uid)["path"]), VIEW_SIDE, VIEW_SIDE))

    @app.post("/api/query")
    def query():
        start = time.perf_counter()
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ApiError(400, "send a JSON object: {index, image, box, similarity, top, rerank}")
        i = body.get("index", 0)
        index = get_index(i)
        source = body.get("image")
        if isinstance(source, dict) and "upload" in source:
            item = uploads.get(source["upload"])
            path, name, width, height = item["path"], item["name"], item["width"], item["height"]
        elif isinstance(source, dict) and "id" in source:
            src_index = get_index(source.get("index", i))
            n = get_image(src_index, source["id"])
            im = src_index.gnd.images[n]
            path, name, width, height = src_index.image_path(n), im.name, im.width, im.height
        else:
            raise ApiError(400, 'image: expected {"index": i, "id": n} (a database image) or {"upload": id}')
        box = body.get("box")
        if box is not None:
            if not isinstance(box, list) or len(box) != 4:
                raise ApiError(400, f"box {box!r}: expected [x1, y1, x2, y2] in pixels, or null for the whole image")
            box = check_box_order(box)
            check_box_inside(box, width, height, name)
        similarity = body.get("similarity", "cosine")
        if similarity not in SIMILARITIES:
            raise ApiError(400, f"similarity {similarity!r}: expected one of {', '.join(SIMILARITIES)}")
        top = body.get("top", 20)
        if not isinstance(top, int) or isinstance(top, bool) or not 1 <= top <= MAX_TOP:
            raise ApiError(400, f"top {top!r}: expected an integer from 1 to {MAX_TOP}")
        answer = run_query(index, path, box, similarity=similarity, top=top, rerank=bool(body.get("rerank", True)))
        out = answer.to_dict()
        out["image"] = name
        for hit in out["hits"]:
            del hit["path"]  # the server's file system stays private; the page loads thumbnails by id
            im = index.gnd.images[hit["image"]]
            hit.update(width=im.width, height=im.height, thumb=f"/api/indexes/{i}/images/{hit['image']}/thumb")
        out["timings"]["server"] = time.perf_counter() - start
        return jsonify(out)

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


def serve(indexes: list[Index], port: int = 8000, max_upload_bytes: int = 20 * 1024 * 1024) -> None:
    server = make_server(indexes, port, max_upload_bytes=max_upload_bytes)
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
