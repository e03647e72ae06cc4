"""Hardening against hostile or unlucky input (issue 11): archives that try to write outside their
folder, the lock file as the only authority on checksums, images the decoder refuses (all reported
at once), a step killed mid-write, output permissions, and ground-truth paths leaving the dataset.

Archives, lock and downloads run against the local HTTP server of tests/helpers.py (127.0.0.1 only).
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import stat
import struct
import subprocess
import sys
import tarfile
import time
import zipfile
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from instance_search import download as dl
from instance_search import io as iio
from instance_search.datasets import fetch as fetch_step
from instance_search.datasets.instre import load_instre
from instance_search.datasets.oxford import load_oxford
from instance_search.datasets.prepare import prepare
from instance_search.datasets.sources import fetch_dataset
from instance_search.errors import InstanceSearchError
from instance_search.features.store import FeatureStore, build_store
from helpers import (FAST, INSTRE_IMLIST, INSTRE_QIMLIST, local_registry, sha256_hex, write_gnd_mat, write_jpeg,
                     write_oxford_gt, zip_bytes)

REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow/schemas/params.schema.json"


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def _tree(folder: Path) -> list[str]:
    """Every path under ``folder`` (links included, not followed)."""
    return sorted(os.path.relpath(os.path.join(d, n), folder) for d, dirs, files in os.walk(folder)
                  for n in dirs + files)


# --- 1. archives: no link of either kind, in tar and zip, whatever the Python ------------------

def _symlink_chain_tar(depth_up: int) -> bytes:
    """The CVE-2025-4517 shape: links to long folder names make the path os.path.realpath builds
    longer than PATH_MAX, where it stops resolving links; a last link then walks out with ``..``.
    On Pythons whose tarfile "data" filter predates the fix (3.11.7 here) this wrote beside the target."""
    comp, steps, path = "d" * 247, "abcdefghijklmnop", ""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        def add(name, kind, linkname="", data=b""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.size = kind, linkname, len(data)
            info.mode = 0o644 if kind == tarfile.REGTYPE else 0o755
            tar.addfile(info, io.BytesIO(data) if data else None)

        for s in steps:
            add(os.path.join(path, comp), tarfile.DIRTYPE)
            add(os.path.join(path, s), tarfile.SYMTYPE, comp)
            path = os.path.join(path, comp)
        linkpath = os.path.join(*steps, "l" * 254)
        add(linkpath, tarfile.SYMTYPE, "../" * len(steps))
        add("escape", tarfile.SYMTYPE, linkpath + "/.." * depth_up)
        add("escape/escaped.txt", tarfile.REGTYPE, data=b"written outside the target\n")
    return buf.getvalue()


@pytest.mark.parametrize("depth_up", [1, 2])
def test_symlink_chain_tar_is_refused_and_nothing_lands_outside(tmp_path, depth_up):
    work = tmp_path / "work"
    work.mkdir()
    archive = work / "gt_files_170407.tar"
    archive.write_bytes(_symlink_chain_tar(depth_up))
    with pytest.raises(InstanceSearchError) as exc:
        dl.unpack(archive, work / "gt_files_170407")
    msg = _one_line(exc)
    assert f"{archive}: unsafe member a: a symbolic link" in msg and "no " + str(work / "gt_files_170407") in msg
    assert _tree(tmp_path) == ["work", "work/gt_files_170407.tar"]  # nothing outside, nothing inside


def test_zip_with_a_symlink_member_is_refused(tmp_path):
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr(zipfile.ZipInfo("full/ukbench00000.jpg", date_time=(2006, 1, 1, 0, 0, 0)), b"jpeg bytes")
        link = zipfile.ZipInfo("full/ukbench00001.jpg", date_time=(2006, 1, 1, 0, 0, 0))
        link.create_system, link.external_attr = 3, (stat.S_IFLNK | 0o777) << 16  # how Info-ZIP stores links
        zf.writestr(link, "../../outside/secret")
    archive = tmp_path / "ukbench.zip"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(InstanceSearchError) as exc:
        dl.unpack(archive, tmp_path / "ukbench")
    assert "unsafe member full/ukbench00001.jpg: a symbolic link" in _one_line(exc)
    assert _tree(tmp_path) == ["ukbench.zip"]


@pytest.mark.parametrize("kind", ["symlink inside", "hard link"])
def test_any_link_member_is_refused_even_inside_the_folder(tmp_path, kind):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        data = b"x" * 10
        info = tarfile.TarInfo("jpg/a.jpg")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("jpg/b.jpg")
        link.type = tarfile.SYMTYPE if kind == "symlink inside" else tarfile.LNKTYPE
        link.linkname = "a.jpg" if kind == "symlink inside" else "jpg/a.jpg"
        tf.addfile(link)
    archive = tmp_path / "oxbuild_images-v1.tgz"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(InstanceSearchError) as exc:
        dl.unpack(archive, tmp_path / "oxbuild_images-v1")
    what = "a symbolic link" if kind == "symlink inside" else "a hard link"
    assert f"unsafe member jpg/b.jpg: {what}" in _one_line(exc)
    assert _tree(tmp_path) == ["oxbuild_images-v1.tgz"]


# --- 2. the lock file is the authority ------------------------------------------------------------

def _ukbench_zip() -> bytes:
    return zip_bytes({"full/ukbench00000.jpg": cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()})


def test_first_download_records_its_hash_and_says_to_commit_the_lock(server, tmp_path, caplog):  # noqa: F811
    data = _ukbench_zip()
    server.serve("ukbench.zip", data)
    lock = tmp_path / "datasets.lock.json"
    with caplog.at_level(logging.INFO):
        fetch_dataset("ukbench", tmp_path / "raw", lock, registry=local_registry("ukbench", server), **FAST)
    assert json.loads(lock.read_text())["ukbench/ukbench.zip"]["sha256"] == sha256_hex(data)
    said = [r.getMessage() for r in caplog.records if "commit" in r.getMessage()]
    assert len(said) == 1 and f"{lock} changed" in said[0] and "ukbench/ukbench.zip" in said[0]
    caplog.clear()
    fetch_dataset("ukbench", tmp_path / "raw", lock, registry=local_registry("ukbench", server), **FAST)
    assert not [r for r in caplog.records if "commit" in r.getMessage()]  # unchanged lock: nothing to say


def test_frozen_lock_refuses_an_archive_it_has_no_hash_for(server, tmp_path):  # noqa: F811
    data = _ukbench_zip()
    server.serve("ukbench.zip", data)
    raw, lock = tmp_path / "raw", tmp_path / "datasets.lock.json"
    with pytest.raises(InstanceSearchError) as exc:
        fetch_dataset("ukbench", raw, lock, registry=local_registry("ukbench", server), frozen=True, **FAST)
    msg = _one_line(exc)
    assert str(raw / "ukbench/ukbench.zip") in msg and "ukbench/ukbench.zip" in msg and "frozen" in msg
    assert dl.FROZEN_ENV in msg and "commit" in msg
    assert server.requests == [] and not lock.exists() and not raw.joinpath("ukbench/ukbench.zip").exists()

    (raw / "ukbench").mkdir(parents=True, exist_ok=True)
    (raw / "ukbench/ukbench.zip").write_bytes(data)  # a copy put there by hand is no more trusted
    with pytest.raises(InstanceSearchError, match="frozen"):
        fetch_dataset("ukbench", raw, lock, registry=local_registry("ukbench", server), frozen=True, **FAST)
    assert not (raw / "ukbench/ukbench").exists()

    dl.record_lock(lock, "ukbench/ukbench.zip", sha256_hex(data), len(data))  # the committed lock vouches for it
    (raw / "ukbench/ukbench.zip").unlink()
    fetch_dataset("ukbench", raw, lock, registry=local_registry("ukbench", server), frozen=True, **FAST)
    assert (raw / "ukbench/ukbench/full/ukbench00000.jpg").exists()


def _local_params(tmp_path: Path) -> dict:
    images = tmp_path / "copy" / "jpg"
    images.mkdir(parents=True)
    (images / "a.jpg").write_bytes(b"one")
    gt = tmp_path / "copy" / "groundtruth.csv"
    gt.write_text("image,object\n")
    return {"seed": 0, "fetch": {"frozen": True},
            "datasets": {"mine": {"source": "local", "format": "ukbench", "images": str(images), "groundtruth": str(gt)}}}


def test_frozen_param_refuses_a_local_copy_the_lock_does_not_know(tmp_path):
    params = _local_params(tmp_path)
    lock = tmp_path / "lock.json"
    with pytest.raises(InstanceSearchError) as exc:
        fetch_step.fetch(params, "mine", tmp_path / "data", lock)
    assert "mine/local" in _one_line(exc) and "frozen" in str(exc.value) and not lock.exists()
    params["fetch"]["frozen"] = False
    fetch_step.fetch(params, "mine", tmp_path / "data", lock)  # unfrozen: recorded on first use
    params["fetch"]["frozen"] = True
    fetch_step.fetch(params, "mine", tmp_path / "data", lock)  # now the lock knows it


def test_frozen_environment_variable_in_the_fetch_script(tmp_path):
    params = _local_params(tmp_path)
    full = yaml.safe_load((REPO / "params.yaml").read_text())
    full["fetch"] = {"frozen": False}
    full["datasets"]["mine"] = params["datasets"]["mine"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(full))
    script = REPO / "workflow/scripts/step.py"
    # Run from tmp_path: a lock path relative to the working folder is then tmp_path's, never the repository's.
    # the step names its output; the lock is workflow/datasets.lock.json of the working folder
    where = ["--manifest", str(tmp_path / "data/mine/manifest.json")]
    lock = tmp_path / "workflow/datasets.lock.json"
    cmd = [sys.executable, str(script), "fetch", "--params", str(tmp_path / "params.yaml"), "--schema", str(SCHEMA),
           "--dataset", "mine", *where]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env={**os.environ, dl.FROZEN_ENV: "1"})
    assert proc.returncode == 1, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and "mine/local" in line and "frozen" in line
    assert not lock.exists() and not (tmp_path / "data/mine/manifest.json").exists()
    assert dl.lock_frozen({}, {dl.FROZEN_ENV: "1"}) and not dl.lock_frozen({}, {dl.FROZEN_ENV: "0"})
    assert dl.lock_frozen({"fetch": {"frozen": True}}, {}) and not dl.lock_frozen({"fetch": {"frozen": False}}, {})
    with pytest.raises(InstanceSearchError, match=dl.FROZEN_ENV):
        dl.lock_frozen({}, {dl.FROZEN_ENV: "maybe"})


def test_ci_runs_frozen():
    assert f"export {dl.FROZEN_ENV}=1" in (REPO / ".ci/run").read_text()


def test_https_addresses_are_tried_before_plain_http(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: every address fails fast
    urls = [f"http://127.0.0.1:{port}/official/a.tgz", f"https://127.0.0.1:{port}/mirror/a.tgz",
            f"http://127.0.0.1:{port}/mirror2/a.tgz"]
    with pytest.raises(dl.DownloadError) as exc:
        dl.download(urls, tmp_path / "a.tgz", attempts=1, base_delay=0.01, timeout=2.0)
    assert [f.split(": ")[0] for f in exc.value.failures] == [urls[1], urls[0], urls[2]]


# --- 3. images: the decoder decides; every unreadable file in one pass --------------------------

def _jpeg_bytes(width=40, height=30, seed=0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return cv2.imencode(".jpg", pixels)[1].tobytes()


def test_jpeg_with_bytes_after_its_end_marker_is_read_and_indexed(tmp_path):
    data = _jpeg_bytes()
    root = tmp_path / "ox"
    write_jpeg(root / "jpg" / "a_000001.jpg", 40, 30, seed=1)
    (root / "jpg" / "a_000002.jpg").write_bytes(data + bytes(range(100)))  # as phones and editors leave them
    write_oxford_gt(root / "gt", "a_1", "a_000001 1 1 20 20", good=["a_000002"])
    assert iio.read_image(root / "jpg" / "a_000002.jpg").shape == (30, 40, 3)
    gnd = load_oxford("ox", root / "jpg", root / "gt")
    assert [im.name for im in gnd.images] == ["a_000001", "a_000002"] and gnd.queries[0].good == (1,)


@pytest.mark.parametrize("keep", [0.5, 0.9, -2])
def test_a_truncated_jpeg_is_refused_by_the_decoder(tmp_path, keep):
    data = _jpeg_bytes(96, 64)
    cut = data[:keep] if keep < 0 else data[: int(len(data) * keep)]
    (tmp_path / "cut.jpg").write_bytes(cut)
    with pytest.raises(InstanceSearchError) as exc:
        iio.read_image(tmp_path / "cut.jpg")
    assert "cut.jpg: truncated or corrupt JPEG" in _one_line(exc)


def _with_size(data: bytes, width: int, height: int) -> bytes:
    """The image's header rewritten to declare ``width`` x ``height`` (JPEG SOF, PNG IHDR with its CRC)."""
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        ihdr = data[12:16] + struct.pack(">II", width, height) + data[24:29]
        return data[:16] + ihdr[4:] + struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF) + data[33:]
    i = 2
    while i < len(data):
        marker, length = data[i + 1], struct.unpack(">H", data[i + 2:i + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return data[:i + 5] + struct.pack(">HH", height, width) + data[i + 9:]
        i += 2 + length
    raise AssertionError("no SOF marker")


@pytest.mark.parametrize("fmt", [".jpg", ".png"])
def test_too_many_pixels_is_said_from_the_header(tmp_path, fmt):
    small = cv2.imencode(fmt, np.zeros((30, 40, 3), np.uint8))[1].tobytes()
    path = tmp_path / f"huge{fmt}"
    path.write_bytes(_with_size(small, 30000, 30000))  # 900 megapixels declared, a few bytes of data
    with pytest.raises(InstanceSearchError) as exc:
        iio.read_image(path)
    assert f"huge{fmt}: too many pixels (limit {iio.MAX_PIXELS}): 30000x30000" in _one_line(exc)


def _dataset_with_bad_images(tmp_path: Path, n_bad: int) -> Path:
    """An Oxford-format dataset: 2 queries on 4 images, plus n_bad unreadable distractors."""
    root = tmp_path / "ox"
    for i, name in enumerate(["bridge_000001", "bridge_000002", "tower_000001", "tower_000002", "extra_000000"]):
        write_jpeg(root / "jpg" / f"{name}.jpg", 40, 30, seed=i)
    write_oxford_gt(root / "gt", "bridge_1", "bridge_000001 1 1 20 20", good=["bridge_000002"], junk=["extra_000001"])
    write_oxford_gt(root / "gt", "tower_1", "tower_000001 1 1 20 20", good=["tower_000002"])
    data = _jpeg_bytes(64, 48)
    for i in range(1, n_bad + 1):
        path = root / "jpg" / f"extra_{i:06d}.jpg"
        if i % 3 == 1:
            path.write_bytes(data[: len(data) // 2])  # truncated
        elif i % 3 == 2:
            path.write_text("<html>moved</html>")  # a saved web page
        else:
            path.write_bytes(b"")  # empty
    return root


def _params(root: Path, **extra) -> dict:
    return {"datasets": {"ox": {"format": "oxford", "images": str(root / "jpg"), "groundtruth": str(root / "gt"),
                                **extra}}}


def test_every_unreadable_file_is_reported_in_one_run(tmp_path):
    root = _dataset_with_bad_images(tmp_path, 3)
    with pytest.raises(InstanceSearchError) as exc:
        prepare(_params(root), "ox", tmp_path / "gnd.json")
    msg = _one_line(exc)
    assert "3 unreadable images" in msg
    for name in ("extra_000001.jpg (truncated or corrupt JPEG)", "extra_000002.jpg (not a readable image)",
                 "extra_000003.jpg (not a readable image)"):
        assert name in msg
    assert "datasets.ox.skip_unreadable" in msg and not (tmp_path / "gnd.json").exists()


def test_many_unreadable_files_are_counted_after_the_first_ten(tmp_path):
    root = _dataset_with_bad_images(tmp_path, 13)
    with pytest.raises(InstanceSearchError) as exc:
        prepare(_params(root), "ox", tmp_path / "gnd.json")
    msg = _one_line(exc)
    assert "13 unreadable images" in msg and "extra_000010.jpg" in msg and "and 3 more" in msg
    assert "extra_000011.jpg" not in msg


def test_skip_unreadable_drops_database_images_with_a_count(tmp_path, caplog):
    root = _dataset_with_bad_images(tmp_path, 3)
    with caplog.at_level(logging.INFO):
        gnd = prepare(_params(root, skip_unreadable=True), "ox", tmp_path / "gnd.json")
    assert [im.name for im in gnd.images] == ["bridge_000001", "bridge_000002", "extra_000000", "tower_000001",
                                              "tower_000002"]
    bridge, tower = gnd.queries
    assert (bridge.image, bridge.good, bridge.junk) == (0, (1,), ())  # the unreadable junk image is gone
    assert (tower.image, tower.good) == (3, (4,))
    assert any("left out 3 unreadable database images" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("victim", ["tower_000001", "tower_000002"])  # a query image, a positive
def test_skip_unreadable_never_drops_a_query_image_or_a_positive(tmp_path, victim):
    root = _dataset_with_bad_images(tmp_path, 1)
    (root / "jpg" / f"{victim}.jpg").write_text("<html></html>")
    with pytest.raises(InstanceSearchError) as exc:
        prepare(_params(root, skip_unreadable=True), "ox", tmp_path / "gnd.json")
    msg = _one_line(exc)
    assert "1 unreadable query or positive image" in msg and f"{victim}.jpg" in msg
    assert "extra_000001" not in msg  # a database image: that one would have been left out


def test_upper_case_extensions_are_images(tmp_path):
    root = tmp_path / "ox"
    write_jpeg(root / "jpg" / "a_000001.JPG", 40, 30, seed=1)
    write_jpeg(root / "jpg" / "a_000002.jpeg", 40, 30, seed=2)
    (root / "jpg" / "a_000003.PNG").write_bytes(cv2.imencode(".png", np.zeros((30, 40, 3), np.uint8))[1].tobytes())
    write_oxford_gt(root / "gt", "a_1", "a_000001 1 1 20 20", good=["a_000002.JPEG", "a_000003"])
    gnd = load_oxford("ox", root / "jpg", root / "gt")
    assert [im.path for im in gnd.images] == ["a_000001.JPG", "a_000002.jpeg", "a_000003.PNG"]
    assert gnd.queries[0].good == (1, 2)


# --- 4. a step killed mid-write: orderly exit, no debris; resumed extraction identical -----------

STEP = '''
import sys, time
from pathlib import Path
sys.path.insert(0, {here!r})
from instance_search import io
from instance_search.pipeline import runner

def main(args, params):
    if args.mode == "write":
        with io.atomic_path(args.out) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(b"x" * (8 << 20))
                fh.flush()
                Path(args.out + ".started").touch()
                for _ in range(3000):  # about 30 s, much longer than the test waits
                    fh.write(b"y" * 4096)
                    time.sleep(0.01)
    elif args.mode == "finalizer":  # the signal lands in a __del__, where Python drops exceptions
        class Slow:
            def __del__(self):
                Path(args.out + ".started").touch()
                time.sleep(1.5)

        with io.atomic_path(args.out) as tmp:
            tmp.write_bytes(b"half")
            Slow()
            for _ in range(3000):
                time.sleep(0.01)
    else:
        import fakeextract
        fakeextract.run(args.out, slow=True)

p = runner.parser("test step")
p.add_argument("--out", required=True)
p.add_argument("--mode", required=True)
runner.run(p, main, __file__, outputs=lambda args: [args.out])
'''

FAKE_EXTRACT = '''
import time
import numpy as np
from instance_search.features.store import build_store

N_IMAGES, SHARD = 40, 4
CALLS = []

def extract(i, slow=False):
    CALLS.append(i)
    if slow:
        time.sleep(0.03)
    rng = np.random.default_rng(i)
    n = int(rng.integers(0, 6))
    return rng.random((n, 2), dtype=np.float32) * 100, rng.random((n, 8), dtype=np.float32)

def run(out, slow=False):
    build_store(out, N_IMAGES, lambda i: extract(i, slow), shard_size=SHARD, config={"method": "fake"})
'''


def _step(tmp_path: Path, mode: str, out: Path) -> subprocess.Popen:
    (tmp_path / "step.py").write_text(STEP.format(here=str(tmp_path)))
    (tmp_path / "fakeextract.py").write_text(FAKE_EXTRACT)
    cmd = [sys.executable, str(tmp_path / "step.py"), "--params", str(REPO / "params.yaml"), "--schema", str(SCHEMA),
           "--mode", mode, "--out", str(out)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)


def _wait_for(condition, proc: subprocess.Popen, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "the step never got there"
        time.sleep(0.02)


def _temporaries(folder: Path) -> list[str]:
    return [p for p in _tree(folder) if p.endswith((".tmp", ".unpacking")) or ".tmp" in Path(p).name]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_mid_write_removes_the_temporary_and_says_one_line(tmp_path, signum):
    out = tmp_path / "results" / "big.bin"
    out.parent.mkdir()
    out.write_bytes(b"earlier result")
    proc = _step(tmp_path, "write", out)
    _wait_for(lambda: Path(str(out) + ".started").exists(), proc)
    assert [p for p in out.parent.iterdir() if p.name.endswith(".tmp")], "no temporary while writing?"
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    name = signal.Signals(signum).name
    assert proc.returncode == 128 + signum
    assert err.strip().splitlines() == [
        f"error: interrupted by {name}; the step's temporary files were removed and earlier results kept; re-run the step"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["big.bin", "big.bin.started"]
    assert out.read_bytes() == b"earlier result"


def test_a_signal_during_a_finalizer_still_stops_the_step(tmp_path):
    out = tmp_path / "results" / "rank.npz"
    proc = _step(tmp_path, "finalizer", out)
    _wait_for(lambda: Path(str(out) + ".started").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM and "Exception ignored" not in err, err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [
        "error: interrupted by SIGTERM; the step's temporary files were removed and earlier results kept; re-run the step"]
    assert sorted(p.name for p in out.parent.iterdir()) == ["rank.npz.started"]


def test_stale_temporaries_of_a_killed_run_are_swept_when_the_step_starts(tmp_path):
    out = tmp_path / "rank.npz"
    stale = tmp_path / ".rank.npz.abc123.tmp"
    stale.write_bytes(b"half")
    other = tmp_path / ".other.npz.abc123.tmp"  # another output's: not this step's to remove
    other.write_bytes(b"half")
    iio.save_npz(out, a=np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.npz.abc123.tmp", "rank.npz"]
    busy = tmp_path / ".rank.npz.busy.tmp"  # one that another process is writing (holds its lock) stays
    busy.write_bytes(b"")
    import fcntl

    with open(busy) as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        assert iio.sweep_temporaries(out) == [] and busy.exists()
    assert iio.sweep_temporaries(out) == [busy] and not busy.exists()


def test_stale_unpacking_folders_are_swept(tmp_path):
    stale = tmp_path / ".gt_files_170407.x1y2.unpacking"
    (stale / "sub").mkdir(parents=True)
    archive = tmp_path / "gt_files_170407.zip"
    archive.write_bytes(zip_bytes({"all_souls_1_good.txt": b"a\n"}))
    dl.unpack(archive, tmp_path / "gt_files_170407")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gt_files_170407", "gt_files_170407.zip"]


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_resumed_extraction_is_byte_identical_to_an_uninterrupted_one(tmp_path, monkeypatch):
    out = tmp_path / "features"
    partial = tmp_path / "features.partial"
    proc = _step(tmp_path, "extract", out)
    _wait_for(lambda: (partial / "shard-00002.npz").exists(), proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [  # the rest is the progress bar
        "error: interrupted by SIGTERM; the step's temporary files were removed and earlier results kept; re-run the step"]
    assert not out.exists() and not _temporaries(tmp_path), _tree(tmp_path)
    kept = sorted(p.name for p in partial.glob("shard-*.npz"))
    assert 3 <= len(kept) < 10

    # Debris a careless hand (or another tool) left in .partial, and a shard changed since it was written.
    (partial / "notes.txt").write_text("stray")
    (partial / "shard-00099.npz").write_bytes(b"not ours")
    with open(partial / "shard-00001.npz", "ab") as fh:
        fh.write(b"\0" * 7)

    monkeypatch.syspath_prepend(str(tmp_path))
    import fakeextract

    fakeextract.CALLS.clear()
    fakeextract.run(out)
    redone = sorted({i // fakeextract.SHARD for i in fakeextract.CALLS})
    assert 1 in redone and 0 not in redone  # shard 1 changed: extracted again; shard 0 kept
    fakeextract.run(tmp_path / "reference")
    assert _files(out) == _files(tmp_path / "reference")
    assert sorted(_files(out)) == ["manifest.json"] + [f"shard-{s:05d}.npz" for s in range(10)]
    assert not partial.exists() and FeatureStore(out).n_images == fakeextract.N_IMAGES


# --- 5. outputs follow the umask --------------------------------------------------------------------

@pytest.mark.parametrize("umask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o002, 0o664, 0o775)])
def test_outputs_follow_the_umask(tmp_path, umask, file_mode, dir_mode):
    old = os.umask(umask)
    try:
        iio.write_json(tmp_path / "metrics.json", {"map": 1.0})
        iio.save_npz(tmp_path / "rank.npz", a=np.arange(3))
        build_store(tmp_path / "features", 3, lambda i: (np.zeros((1, 2), np.float32), np.zeros((1, 4), np.float32)),
                    shard_size=2, config={})
        archive = tmp_path / "gt.zip"
        archive.write_bytes(zip_bytes({"a.txt": b"a\n"}))
        dl.unpack(archive, tmp_path / "gt")
    finally:
        os.umask(old)
    for path in (tmp_path / "metrics.json", tmp_path / "rank.npz", tmp_path / "features/manifest.json",
                 tmp_path / "features/shard-00000.npz", tmp_path / "gt/a.txt"):
        assert stat.S_IMODE(path.stat().st_mode) == file_mode, path
    for path in (tmp_path / "features", tmp_path / "gt"):
        assert stat.S_IMODE(path.stat().st_mode) == dir_mode, path


# --- 6. ground-truth image paths stay inside the dataset --------------------------------------------

@pytest.fixture
def instre(tmp_path):
    root = tmp_path / "instre"
    for i, rel in enumerate(INSTRE_IMLIST + INSTRE_QIMLIST):
        write_jpeg(root / rel, 40, 30, seed=i)
    write_jpeg(tmp_path / "outside" / "x.jpg", 40, 30, seed=9)  # a real image outside: it must still be refused
    return root


@pytest.mark.parametrize("where", ["imlist relative", "imlist absolute", "qimlist relative"])
def test_instre_paths_outside_the_dataset_are_refused(instre, tmp_path, where):
    outside = str(tmp_path / "outside" / "x.jpg") if "absolute" in where else "../outside/x.jpg"
    imlist, qimlist = list(INSTRE_IMLIST), list(INSTRE_QIMLIST)
    (imlist if where.startswith("imlist") else qimlist)[1] = outside
    write_gnd_mat(instre / "gnd_instre.mat", imlist=imlist, qimlist=qimlist)
    with pytest.raises(InstanceSearchError) as exc:
        load_instre("instre", instre, instre / "gnd_instre.mat")
    msg = _one_line(exc)
    assert msg.startswith(f"{instre / 'gnd_instre.mat'}: image path {outside} is not inside the dataset folder {instre}")
