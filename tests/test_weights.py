"""The weights step against a local HTTP server on 127.0.0.1: a fake weights file whose name carries
its real sha256 prefix, downloaded into torchvision's cache (TORCH_HOME in a temporary folder), found
there the next time without a request, refused when its bytes do not fit its name or the lock,
fetched from the second mirror when the first has none; offline, a missing file is the extraction's
one-line message. Also: which files the committed params need. No network beyond 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from conftest import require_weights

from instance_search import download as dl
from instance_search import weights
from instance_search.errors import InstanceSearchError
from instance_search.features import backbones, frcnn

REPO = Path(__file__).resolve().parents[1]
FAST = {"attempts": 2, "base_delay": 0.01, "timeout": 5.0}
CONTENT = b"not really a state dict, but bytes with a known sha256\n" * 100
PREFIX = hashlib.sha256(CONTENT).hexdigest()[:8]
FILE = f"fakenet-{PREFIX}.pth"


# --- a local HTTP server that counts its requests -----------------------------------------------

class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_GET(self):
        state = self.server.state
        with state.lock:
            state.requests.append(self.path)
            body = state.files.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.state = SimpleNamespace(files={}, requests=[], lock=threading.Lock(),
                                  base=f"http://127.0.0.1:{httpd.server_address[1]}")
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield httpd.state
    httpd.shutdown()
    httpd.server_close()


def _closed_port() -> str:
    """An address where nothing listens: the machine is offline as far as the step can tell."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """torchvision's cache in tmp_path, and a backbone "fakenet" whose official address the test sets."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(dl.FROZEN_ENV, raising=False)
    address = {"url": f"{_closed_port()}/models/{FILE}"}
    real = backbones._weights
    monkeypatch.setitem(backbones.BACKBONES, "fakenet", backbones.Backbone("fakenet", "Fake.V1", "features"))
    monkeypatch.setattr(backbones, "_weights",
                        lambda b: SimpleNamespace(url=address["url"]) if b == "fakenet" else real(b))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    return SimpleNamespace(folder=folder, path=folder / FILE, address=address, lock=tmp_path / "weights.lock.json",
                           manifest=tmp_path / "results" / "weights" / "blcf.json")


def _params(mirrors=()) -> dict:
    return {"fetch": {"frozen": False}, "weights": {"mirrors": list(mirrors)},
            "blcf": {"extract": {"backbone": "fakenet", "layer": ""}}}


def _fetch(cache, params=None, **kw):
    return weights.fetch_weights(params or _params(), "blcf", cache.manifest, cache.lock, **{**FAST, **kw})


def _one_line(exc) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


# --- tests --------------------------------------------------------------------------------------

def test_downloaded_into_the_cache_then_found_without_a_request(server, cache):
    server.files[f"/models/{FILE}"] = CONTENT
    cache.address["url"] = f"{server.base}/models/{FILE}"
    out = _fetch(cache)
    assert cache.path.read_bytes() == CONTENT
    assert sorted(p.name for p in cache.folder.iterdir()) == [FILE]  # no staging or .part left
    sha = hashlib.sha256(CONTENT).hexdigest()
    assert out["weights"] == [{"file": FILE, "key": "blcf.extract.backbone", "name": "fakenet", "sha256": sha,
                               "bytes": len(CONTENT)}]
    assert json.loads(cache.manifest.read_text()) == out
    assert dl.read_lock(cache.lock) == {f"torchvision/{FILE}": {"sha256": sha, "bytes": len(CONTENT)}}
    assert backbones.check_weights("fakenet") == cache.path  # what the extraction checks is satisfied
    stamp, asked = cache.manifest.stat().st_mtime_ns, len(server.requests)
    assert _fetch(cache) == out
    assert len(server.requests) == asked == 1  # the second run found it
    assert cache.manifest.stat().st_mtime_ns == stamp  # unchanged: not rewritten


def test_a_file_that_does_not_fit_its_name_is_refused_and_not_installed(server, cache):
    server.files[f"/models/{FILE}"] = CONTENT[:-10]  # truncated at the source
    cache.address["url"] = f"{server.base}/models/{FILE}"
    with pytest.raises(InstanceSearchError) as exc:
        _fetch(cache)
    msg = _one_line(exc)
    assert FILE in msg and f"does not start with {PREFIX}" in msg and "nothing was put" in msg
    assert list(cache.folder.iterdir()) == []  # no bad file for torchvision to load, no leftovers
    assert not cache.lock.exists() and not cache.manifest.exists()


def test_the_second_mirror_serves_when_the_first_has_nothing(server, cache):
    server.files[f"/second/{FILE}"] = CONTENT
    cache.address["url"] = f"{server.base}/official/{FILE}"  # not served either
    params = _params([f"{server.base}/first", f"{server.base}/second/"])
    _fetch(cache, params)
    assert cache.path.read_bytes() == CONTENT
    assert server.requests == [f"/first/{FILE}", f"/second/{FILE}"]  # in order; torchvision's never asked


def test_offline_and_missing_is_the_extractions_one_line_message(cache):
    with pytest.raises(InstanceSearchError) as exc:
        _fetch(cache, _params([_closed_port()]))
    msg = _one_line(exc)
    with pytest.raises(InstanceSearchError) as today:
        backbones.check_weights("fakenet")
    assert msg.startswith(str(today.value) + "; the download failed: ")
    assert str(cache.path) in msg and PREFIX in msg and cache.address["url"] in msg
    assert not cache.path.exists() and not cache.manifest.exists()


def test_present_without_network_is_kept_and_recorded(cache):
    cache.folder.mkdir(parents=True)
    cache.path.write_bytes(CONTENT)  # e.g. copied by hand on an offline machine; nothing listens anywhere
    out = _fetch(cache)
    assert out["weights"][0]["sha256"] == hashlib.sha256(CONTENT).hexdigest()
    assert f"torchvision/{FILE}" in dl.read_lock(cache.lock)


def test_a_present_file_that_does_not_fit_its_name_is_named(cache):
    cache.folder.mkdir(parents=True)
    cache.path.write_bytes(CONTENT[:100])
    with pytest.raises(InstanceSearchError) as exc:
        _fetch(cache)
    msg = _one_line(exc)
    assert str(cache.path) in msg and f"does not start with {PREFIX}" in msg
    assert not cache.lock.exists()


def test_the_lock_is_checked_for_present_and_downloaded_files(server, cache):
    dl.record_lock(cache.lock, f"torchvision/{FILE}", "0" * 64, len(CONTENT))
    server.files[f"/models/{FILE}"] = CONTENT
    cache.address["url"] = f"{server.base}/models/{FILE}"
    with pytest.raises(InstanceSearchError) as exc:
        _fetch(cache)
    assert f"torchvision/{FILE}" in _one_line(exc) and str(cache.lock) in str(exc.value)
    assert list(cache.folder.iterdir()) == []  # downloaded, refused, not installed
    cache.path.write_bytes(CONTENT)
    with pytest.raises(InstanceSearchError) as exc:
        _fetch(cache)
    assert f"torchvision/{FILE}" in _one_line(exc) and "0" * 64 in str(exc.value)


def test_frozen_lock_refuses_what_it_has_no_sha256_for_before_any_request(server, cache, monkeypatch):
    server.files[f"/models/{FILE}"] = CONTENT
    cache.address["url"] = f"{server.base}/models/{FILE}"
    monkeypatch.setenv(dl.FROZEN_ENV, "1")
    with pytest.raises(InstanceSearchError) as exc:
        _fetch(cache)
    assert "frozen" in _one_line(exc) and server.requests == [] and not cache.path.exists()
    monkeypatch.delenv(dl.FROZEN_ENV)
    _fetch(cache)  # recorded on a trusted machine ...
    monkeypatch.setenv(dl.FROZEN_ENV, "1")
    _fetch(cache)  # ... then accepted frozen


def test_the_rpn_source_fetches_the_detector_not_the_backbone(server, cache, monkeypatch):
    monkeypatch.setitem(frcnn.DETECTORS, "fakercnn", "Fake.COCO")
    real = frcnn._detector_weights
    monkeypatch.setattr(frcnn, "_detector_weights",
                        lambda d: SimpleNamespace(url=f"{server.base}/models/{FILE}") if d == "fakercnn" else real(d))
    server.files[f"/models/{FILE}"] = CONTENT
    params = {"fetch": {"frozen": False}, "frcnn": {"extract": {"source": "rpn", "detector": "fakercnn",
                                                                "backbone": "vgg16"}}}
    out = weights.fetch_weights(params, "frcnn", cache.manifest, cache.lock, **FAST)
    assert [(w["key"], w["name"]) for w in out["weights"]] == [("frcnn.extract.detector", "fakercnn")]
    assert frcnn.check_detector_weights("fakercnn") == cache.path


def _names(params: dict) -> dict[str, list[str]]:
    return {m: [(w.key, w.name, w.path.name) for w in weights.needed(params, m)] for m in params["run"]["methods"]}


def test_the_demo_needs_only_mobilenet_v2():
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    needed = _names(params)
    assert needed.pop("sift") == []
    assert needed.pop("xfeat") == []  # its weights come inside its package, checked by weights.packaged
    assert [w["file"] for w in weights.packaged(params, "xfeat")] == ["xfeat.pt"]
    assert needed and all(files == [(f"{m}.extract.backbone", "mobilenet_v2", backbones.OFFLINE_FILE)]
                          for m, files in needed.items()), needed
    locked = dl.read_lock(REPO / "workflow" / "weights.lock.json")  # so a frozen CI run accepts the offline file
    assert locked[f"torchvision/{backbones.OFFLINE_FILE}"]["sha256"].startswith("b0353104")


def test_the_full_profile_needs_vgg16_the_coco_detector_and_mobilenet_v2():
    params = yaml.safe_load((REPO / "params-full.yaml").read_text(encoding="utf-8"))
    assert _names(params) == {
        "sift": [],
        "blcf": [("blcf.extract.backbone", "vgg16", "vgg16-397923af.pth")],
        "frcnn": [("frcnn.extract.detector", "fasterrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn_coco-258fb6c6.pth")],
        "gem": [("gem.extract.backbone", "mobilenet_v2", "mobilenet_v2-b0353104.pth")],
        "xfeat": [],  # in its package (weights.packaged), nothing to download
    }
    assert all(w.url.startswith("https://download.pytorch.org/models/")
               for m in params["run"]["methods"] for w in weights.needed(params, m))


def test_the_script_writes_the_manifest_of_a_file_already_there(tmp_path):
    """The step as the workflow runs it, offline: the demo's file is in the cache, nothing is fetched."""
    source = require_weights()  # the demo's file in this machine's cache (make install)
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    shutil.copyfile(source, folder / backbones.OFFLINE_FILE)
    manifest = tmp_path / "gem.json"
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "INSTANCE_SEARCH_FROZEN_LOCK": "1"}
    proc = subprocess.run([sys.executable, "workflow/scripts/step.py", "weights", "--params", "params.yaml", "--method", "gem",
                           "--manifest", str(manifest), "--log", str(tmp_path / "weights.log")],
                          check=False, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [w["file"] for w in json.loads(manifest.read_text())["weights"]] == [backbones.OFFLINE_FILE]
