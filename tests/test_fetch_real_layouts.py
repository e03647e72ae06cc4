"""The full profile's fetch and prepare on archives laid out as the real releases, served from 127.0.0.1.

For every dataset of params-full.yaml's ``run.datasets``, the archives of its registry entry
(:data:`sources.DATASETS`) are built here with the member names of the real release, taken from the
published ground-truth files in ../shared/data/real-gt, and served by a local HTTP server (INSTRE's
by a local FTP server, as its registry entry publishes it over ftp; its https addresses are moved to
a path of the HTTP server that serves nothing). Then the step functions run as the full profile runs
them, with params-full.yaml's own dataset entries (format, expect, box_format, half), only ``data/``
moved into a temporary folder: ``fetch`` in frozen mode against a lock file written here for these archives (the checked-in
workflow/datasets.lock.json is neither read nor changed), then ``prepare``. Checked: the counts
against params-full.yaml's ``expect`` (the published ones), every query box inside its image (the
query images are as large as the dataset's largest, so a box read in the wrong convention leaves its
image), the manifest, the lock left as written, and that each archive came over the protocol of its
registry entry.

What each archive holds (placeholder JPEGs: 8x8 for the database, 1024 px a side for Oxford and Paris
query images, 1000 px for INSTRE's, as in test_realdata_gt):

- oxford5k: oxbuild_images-v1.tgz, flat ``<name>.jpg``: the 5,063 names are gnd_roxford5k.pkl's imlist
  (4,993) and qimlist (70); gt_files_170407.tgz: the real 220 lists, unchanged.
- roxford5k: the real gnd_roxford5k.pkl (its images: oxford5k's, fetched as it requires).
- paris6k: paris_1-v1.tgz and paris_2-v1.tgz, ``paris/<landmark>/<name>.jpg``: gnd_rparis6k.pkl's
  6,392 names plus the 20 corrupt files of paris.CORRUPT (an HTML page each, as in the release). Which
  landmarks each of the two archives holds is not known from the real files: split alphabetically
  here (the unpacked tree is the same either way). Its own lists (paris_120310.tgz) are not in
  real-gt, so that archive is served as a placeholder holding no list, for the fetch only, and
  paris6k's prepare is SKIPPED: its counts cannot be checked without faking the lists. Its images
  are checked through rparis6k (6,412 files unpacked, 6,392 usable).
- rparis6k: the real gnd_rparis6k.pkl.
- instre: instre.tar.gz, ``INSTRE-S1|S2|M/.../*.jpg`` under the archive's root as gnd_instre.mat's
  imlist and qimlist name them (28,543), over FTP; the real gnd_instre.mat, over FTP.
- sculptures6k: its real files are unknown (README of real-gt): a SMALL fixture in the single-file
  layout (sculptures6k_evaluation/sculptures6k_gt.txt, as the one public loader reads it) with
  test/ and train/ halves; its counts are the fixture's own (params-full.yaml has no ``expect`` for it).
- ukbench: ukbench.zip, ``full/ukbenchNNNNN.jpg`` for 00000-10199 (the names are the protocol:
  groups of 4 by number); ground truth ``by-name``.

Marker ``realdata`` on the datasets whose names come from ../shared/data/real-gt: skipped with a reason
when it is absent (sculptures6k and ukbench need nothing from it). The ~50,000 files are removed at the
end (docs/datasets.md: the run time).
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import json
import shutil
import threading
from pathlib import Path

import pytest
import yaml
from pyftpdlib.authorizers import DummyAuthorizer
from pyftpdlib.servers import FTPServer

from instance_search import download as dl
from instance_search.datasets import sources
from instance_search.datasets.fetch import fetch
from instance_search.datasets.paris import CORRUPT
from instance_search.datasets.prepare import prepare
from helpers import (RecordingFTPHandler, ServerState, assert_boxes_inside, black_jpeg, local_registry,
                     need_real_gt, revisited_names, serving, tgz_bytes, zip_bytes)

REPO = Path(__file__).resolve().parents[1]
FULL = yaml.safe_load((REPO / "params-full.yaml").read_text())
CHECKED_IN_LOCK = REPO / "workflow" / "datasets.lock.json"
DATASETS = list(FULL["run"]["datasets"])  # oxford5k, paris6k, roxford5k, rparis6k, instre, sculptures6k, ukbench
FTP_DATASETS = {"instre"}
NO_LISTS = {"paris6k": "paris6k's own lists (paris_120310.tgz) are not in ../shared/data/real-gt: its prepare "
                       "cannot be checked without faking them (its images are checked through rparis6k)"}
READS_REAL_GT = {"oxford5k", "paris6k", "roxford5k", "rparis6k", "instre"}  # marker realdata: names from real-gt


# --- archives in the real releases' layouts ----------------------------------------------------

@functools.cache
def _small() -> bytes:
    return black_jpeg(8)


@functools.cache
def _big(side: int) -> bytes:
    return black_jpeg(side)


def _images(names, queries: set[str], side: int) -> dict[str, bytes]:
    return {name: _big(side) if name in queries else _small() for name in names}


def _oxford5k() -> dict[str, bytes]:
    gt = need_real_gt("oxford5k")
    imlist, qimlist = revisited_names("roxford5k")
    lists = {p.name: p.read_bytes() for p in sorted(gt.glob("*.txt"))}
    queries = {data.split()[0].decode().removeprefix("oxc1_") for n, data in lists.items() if n.endswith("_query.txt")}
    names = [f"{n}.jpg" for n in imlist + qimlist]
    return {"oxbuild_images-v1.tgz": tgz_bytes(_images(names, {f"{n}.jpg" for n in queries | set(qimlist)}, 1024)),
            "gt_files_170407.tgz": tgz_bytes(lists)}


def _paris6k() -> dict[str, bytes]:
    imlist, qimlist = revisited_names("rparis6k")
    path = lambda n: f"paris/{n.split('_')[1]}/{n}.jpg"  # noqa: E731  (paris_<landmark>_NNNNNN)
    members = _images([path(n) for n in imlist + qimlist], {path(n) for n in qimlist}, 1024)
    members.update({path(n): b"<html><body>404 Not Found</body></html>\n" for n in CORRUPT})
    landmarks = sorted({m.split("/")[1] for m in members})
    first = set(landmarks[: len(landmarks) // 2])
    return {"paris_1-v1.tgz": tgz_bytes({m: d for m, d in members.items() if m.split("/")[1] in first}),
            "paris_2-v1.tgz": tgz_bytes({m: d for m, d in members.items() if m.split("/")[1] not in first}),
            "paris_120310.tgz": tgz_bytes({"PLACEHOLDER_no_real_lists.txt": b"the real lists are not available\n"})}


def _revisited(ds: str) -> dict[str, bytes]:
    return {f"gnd_{ds}.pkl": need_real_gt(ds, f"gnd_{ds}.pkl").read_bytes()}


def _instre() -> dict[str, bytes]:
    import scipy.io

    mat = need_real_gt("instre", "gnd_instre.mat")
    data = scipy.io.loadmat(str(mat), simplify_cells=True)
    images = _images(list(data["imlist"]) + list(data["qimlist"]), set(data["qimlist"]), 1000)
    return {"instre.tar.gz": tgz_bytes(images), "gnd_instre.mat": mat.read_bytes()}


SCULPTURES = {half: {"images": [f"{half}_{sculptor}_{k:04d}" for sculptor in ("moore", "rodin") for k in range(6)],
                     "queries": [(f"{half}_moore_0000", f"{half}_moore_0001 {half}_moore_0002", f"{half}_moore_0003"),
                                 (f"{half}_rodin_0000", f"{half}_rodin_0001", "")]}
              for half in ("test", "train")}


def _sculptures6k() -> dict[str, bytes]:
    queries = {q for half in SCULPTURES.values() for q, _, _ in half["queries"]}
    images = _images([f"{half}/{n}.jpg" for half, v in SCULPTURES.items() for n in v["images"]],
                     {f"{n.split('_')[0]}/{n}.jpg" for n in queries}, 1024)
    lines = ["sculptures6k ground truth (fixture: the real file is not public)"]
    for v in SCULPTURES.values():
        for q, good, junk in v["queries"]:
            lines += [f"{q}.jpg", "12 30 700 1000", good, junk]
    lines.append("")  # the file ends with a newline (the last query's ignore line is empty)
    return {"sculptures6k.tar.gz": tgz_bytes(images),
            "sculptures6k_gt.tar.gz": tgz_bytes({"sculptures6k_evaluation/sculptures6k_gt.txt":
                                                 "\n".join(lines).encode()})}


def _ukbench() -> dict[str, bytes]:
    return {"ukbench.zip": zip_bytes({f"full/ukbench{i:05d}.jpg": _small() for i in range(10200)})}


BUILDERS = {"oxford5k": _oxford5k, "paris6k": _paris6k, "roxford5k": lambda: _revisited("roxford5k"),
            "rparis6k": lambda: _revisited("rparis6k"), "instre": _instre, "sculptures6k": _sculptures6k,
            "ukbench": _ukbench}


@functools.cache
def _archives(ds: str) -> dict[str, bytes]:
    archives = BUILDERS[ds]()
    assert sorted(archives) == sorted(a.filename for a in sources.DATASETS[ds].archives), ds
    return archives


# --- the servers, the lock, the registry moved to them -----------------------------------------

@pytest.fixture(scope="module")
def http():
    with serving() as state:
        yield state


@pytest.fixture(scope="module")
def ftp(tmp_path_factory):
    root = tmp_path_factory.mktemp("ftproot")
    authorizer = DummyAuthorizer()
    authorizer.add_anonymous(str(root))
    handler = type("Handler", (RecordingFTPHandler,), {"authorizer": authorizer, "truncate_once": {}, "seen": [],
                                                         "refuse_rest": False})
    srv, stop = FTPServer(("127.0.0.1", 0), handler), threading.Event()

    def loop():  # non-blocking rounds, so that the loop ends before its sockets are closed
        while not stop.is_set():
            srv.serve_forever(timeout=0.05, blocking=False, handle_exit=False)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    handler.base, handler.root = f"ftp://127.0.0.1:{srv.address[1]}", root
    yield handler
    stop.set()
    thread.join()
    srv.close_all()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One data/ folder for the module, as the workflow shares it: roxford5k finds oxford5k fetched."""
    root = tmp_path_factory.mktemp("full")
    yield {"data": root / "data", "lock": root / "datasets.lock.json", "gnd": root / "gnd", "fetched": set()}
    shutil.rmtree(root, ignore_errors=True)  # ~50,000 files: not left for pytest to sweep at a later start


def _serve(ds: str, http: ServerState, ftp, lock: Path, monkeypatch) -> None:
    """Serve ``ds``'s archives (and those it requires), lock their sha256 and point the registry there."""
    for name in (ds, *sources.DATASETS[ds].requires):
        for filename, data in _archives(name).items():
            if name in FTP_DATASETS:
                (ftp.root / name).mkdir(exist_ok=True)
                (ftp.root / name / filename).write_bytes(data)
            else:
                http.serve(filename, data)
            dl.record_lock(lock, f"{name}/{filename}", hashlib.sha256(data).hexdigest(), len(data),
                           mutex_dir=lock.parent)
    moved = local_registry(ds, http)  # every address on the local HTTP server (official, then mirror)
    for name, entry in moved.items():
        if name in FTP_DATASETS:  # its ftp addresses on the FTP server; the https ones answer 404
            real = sources.DATASETS[name].archives
            entry = dataclasses.replace(entry, archives=tuple(
                dataclasses.replace(a, urls=tuple(f"{ftp.base}/{name}/{a.filename}" if u.startswith("ftp://")
                                                  else f"{http.base}/no-https/{a.filename}" for u in r.urls))
                for a, r in zip(entry.archives, real)))
        monkeypatch.setitem(sources.DATASETS, name, entry)


def _params(data: Path) -> dict:
    params = copy.deepcopy(FULL)
    params["fetch"]["frozen"] = True  # as CI runs it: only what the lock vouches for
    for cfg in params["datasets"].values():
        for key in ("images", "groundtruth"):
            if str(cfg.get(key, "")).startswith("data/"):
                cfg[key] = str(data / cfg[key].removeprefix("data/"))
    return params


# --- the full path ------------------------------------------------------------------------------

@pytest.mark.parametrize("ds", [pytest.param(d, marks=pytest.mark.realdata) if d in READS_REAL_GT else d
                                for d in DATASETS])
def test_full_fetch_and_prepare_on_real_layouts(ds, http, ftp, workspace, monkeypatch):
    if ds in NO_LISTS:
        pytest.skip(NO_LISTS[ds])
    checked_in = CHECKED_IN_LOCK.read_bytes()
    data, lock = workspace["data"], workspace["lock"]
    _serve(ds, http, ftp, lock, monkeypatch)
    written = lock.read_bytes()
    params = _params(data)
    http.requests.clear()
    ftp.seen.clear()

    manifest = fetch(params, ds, data, lock)

    assert [a["filename"] for a in manifest["archives"]] == [a.filename for a in sources.DATASETS[ds].archives]
    assert manifest["requires"] == list(sources.DATASETS[ds].requires)
    assert lock.read_bytes() == written and CHECKED_IN_LOCK.read_bytes() == checked_in
    assert not list(data.rglob("*.part*")) and not list(data.rglob("*.unpacking"))
    got_http = {Path(p).name for p, _ in http.requests}
    got_ftp = {line.split(" ", 1)[1].rsplit("/", 1)[-1] for line in ftp.seen if line.startswith("RETR ")}
    for name in (ds, *sources.DATASETS[ds].requires):
        for filename in _archives(name):
            if name in workspace["fetched"]:  # fetched by an earlier test: present and verified, no network
                assert filename not in got_http | got_ftp, (name, filename)
            else:  # downloaded over its registry entry's protocol
                assert filename in (got_ftp if name in FTP_DATASETS else got_http), (name, filename)
        workspace["fetched"].add(name)

    cfg = params["datasets"][ds]
    gnd = prepare(params, ds, workspace["gnd"] / f"{ds}.json")

    counts = {"images": len(gnd.images), "database": gnd.n_database, "queries": len(gnd.queries)}
    expect = cfg.get("expect")
    if ds == "sculptures6k":  # no published counts in params-full.yaml: the fixture's own test half
        assert expect is None and cfg["half"] == "test"
        half = SCULPTURES["test"]
        expect = {"images": len(half["images"]), "database": len(half["images"]), "queries": len(half["queries"])}
        assert sorted(q.name for q in gnd.queries) == sorted(q for q, _, _ in half["queries"])
    assert expect, f"params-full.yaml gives no expect for {ds}"
    assert {k: counts[k] for k in expect} == expect
    if cfg["format"] in ("oxford", "paris", "revisited", "instre", "sculptures"):
        assert all(q.box is not None for q in gnd.queries)
        assert_boxes_inside(gnd)
    assert json.loads((workspace["gnd"] / f"{ds}.json").read_text())

    if ds == "rparis6k":  # paris6k's images as its two archives unpacked: 6,412 files, the 20 corrupt among them
        files = {p.stem: p for p in (data / "paris6k").rglob("*.jpg")}
        assert len(files) == counts["images"] + len(CORRUPT)
        assert all(not files[n].read_bytes().startswith(b"\xff\xd8") for n in CORRUPT)
