"""The download layer against a local HTTP server on 127.0.0.1 serving archives built here in each
dataset's real layout: complete, resumed, mirrored, 404, wrong checksum, corrupt, full disk, rar.

Every failure must be one line naming the file or address and what to do, and leave earlier data
as it was. No network beyond 127.0.0.1.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import errno
import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import zlib
from pathlib import Path

import pytest

from instance_search import download as dl
from instance_search.datasets.sources import DATASETS, fetch_dataset
from instance_search.errors import InstanceSearchError
from helpers import FAST, local_registry, random_jpeg, sha256_hex, tgz_bytes, zip_bytes

REPO = Path(__file__).resolve().parents[1]


# --- archives in each dataset's real layout -----------------------------------------------------

def _rar4(members: dict[str, bytes], method: int = 0x30) -> bytes:
    """A RAR 4 archive of stored members (method 0x30), written out by the format's block layout."""
    def block(htype: int, flags: int, body: bytes) -> bytes:
        head = struct.pack("<BHH", htype, flags, 7 + len(body)) + body
        return struct.pack("<H", zlib.crc32(head) & 0xFFFF) + head

    out = [b"Rar!\x1a\x07\x00", block(0x73, 0, bytes(6))]
    for name, data in members.items():
        raw = name.encode()
        body = struct.pack("<IIBIIBBHI", len(data), len(data), 3, zlib.crc32(data), 0x00210000, 29, method,
                           len(raw), 0o100644) + raw
        out += [block(0x74, 0x8000, body), data]
    out.append(block(0x7B, 0x4000, b""))
    return b"".join(out)


OX_IMAGES = {f"{n}.jpg": random_jpeg(i) for i, n in enumerate(
    ["all_souls_000013", "all_souls_000026", "ashmolean_000000", "balliol_000051", "christ_church_000179"])}
OX_GT = {"all_souls_1_query.txt": b"oxc1_all_souls_000013 136.5 34.1 648.5 955.7\n",
         "all_souls_1_good.txt": b"all_souls_000026\n", "all_souls_1_ok.txt": b"", "all_souls_1_junk.txt": b""}


def _one_line(exc: pytest.ExceptionInfo) -> str:
    msg = str(exc.value)
    assert msg and "\n" not in msg
    return msg


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if p.name.endswith((".unpacking", ".old")))


@pytest.fixture
def oxford(server):
    server.serve("oxbuild_images-v1.tgz", tgz_bytes(OX_IMAGES))
    server.serve("gt_files_170407.tgz", tgz_bytes(OX_GT))
    return server


# --- complete, idempotent, resumed --------------------------------------------------------------

def test_complete_download_unpacks_records_and_second_run_is_offline(oxford, tmp_path):
    raw, lock = tmp_path / "raw", tmp_path / "datasets.lock.json"
    manifest = fetch_dataset("oxford5k", raw, lock, registry=local_registry("oxford5k", oxford), **FAST)

    assert _snapshot(raw / "oxford5k" / "oxbuild_images-v1") == {**OX_IMAGES, ".unpacked.json": (
        raw / "oxford5k/oxbuild_images-v1/.unpacked.json").read_bytes()}
    assert (raw / "oxford5k/gt_files_170407/all_souls_1_query.txt").read_bytes() == OX_GT["all_souls_1_query.txt"]
    images = oxford.files["/official/oxbuild_images-v1.tgz"]
    recorded = json.loads(lock.read_text())
    assert list(recorded) == sorted(recorded) == ["oxford5k/gt_files_170407.tgz", "oxford5k/oxbuild_images-v1.tgz"]
    assert recorded["oxford5k/oxbuild_images-v1.tgz"] == {"sha256": sha256_hex(images), "bytes": len(images)}
    assert json.loads((raw / "oxford5k/manifest.json").read_text()) == manifest
    assert [a["folder"] for a in manifest["archives"]] == ["oxbuild_images-v1", "gt_files_170407"]
    assert not list((raw / "oxford5k").glob("*.part*"))

    seen, dated = len(oxford.requests), (raw / "oxford5k/manifest.json").stat().st_mtime_ns
    fetch_dataset("oxford5k", raw, lock, registry=local_registry("oxford5k", oxford), **FAST)
    assert len(oxford.requests) == seen  # everything present and verified: no network
    assert json.loads(lock.read_text()) == recorded
    assert (raw / "oxford5k/manifest.json").stat().st_mtime_ns == dated  # nothing rewritten


def test_resume_after_the_server_drops_the_connection(server, tmp_path):
    paris = {f"paris/defense/paris_defense_{i:06d}.jpg": random_jpeg(i, 96) for i in range(6)}
    data = tgz_bytes(paris)
    server.serve("paris_1-v1.tgz", data, official={"drop_once"})
    server.serve("paris_2-v1.tgz", tgz_bytes({"paris/eiffel/paris_eiffel_000000.jpg": random_jpeg(99)}))
    server.serve("paris_120310.tgz", tgz_bytes({"defense_1_query.txt": b"paris_defense_000000 1 2 3 4\n"}))
    raw = tmp_path / "raw"
    fetch_dataset("paris6k", raw, tmp_path / "lock.json", registry=local_registry("paris6k", server), **FAST)

    ranges = [r for p, r in server.requests if p == "/official/paris_1-v1.tgz"]
    assert ranges[0] is None and ranges[1] == f"bytes={len(data) // 2}-"  # resumed where it broke off
    assert (raw / "paris6k/paris_1-v1.tgz").read_bytes() == data
    for name, content in paris.items():
        assert (raw / "paris6k/paris_1-v1" / name).read_bytes() == content


def test_server_ignoring_range_restarts_the_file(server, tmp_path):
    data = zip_bytes({f"full/ukbench{i:05d}.jpg": random_jpeg(i, 96) for i in range(8)})
    server.serve("ukbench.zip", data, official={"drop_once", "ignore_range"})
    raw = tmp_path / "raw"
    fetch_dataset("ukbench", raw, tmp_path / "lock.json", registry=local_registry("ukbench", server), **FAST)
    assert [r for p, r in server.requests][1] == f"bytes={len(data) // 2}-"
    assert (raw / "ukbench/ukbench.zip").read_bytes() == data  # not half + whole
    assert (raw / "ukbench/ukbench/full/ukbench00007.jpg").read_bytes() == random_jpeg(7, 96)


def test_a_part_from_an_earlier_run_is_resumed(oxford, tmp_path):
    data = oxford.files["/official/oxbuild_images-v1.tgz"]
    dest = tmp_path / "oxbuild_images-v1.tgz"
    (tmp_path / "oxbuild_images-v1.tgz.part").write_bytes(data[:1000])
    url = f"{oxford.base}/official/oxbuild_images-v1.tgz"
    (tmp_path / "oxbuild_images-v1.tgz.part.json").write_text(json.dumps({"url": url}))
    sha = dl.download([url], dest, **FAST)
    assert oxford.requests == [("/official/oxbuild_images-v1.tgz", "bytes=1000-")]
    assert dest.read_bytes() == data and sha == sha256_hex(data)


# --- mirrors and 404 ----------------------------------------------------------------------------

def test_404_on_the_official_address_uses_the_mirror(server, tmp_path):
    gnd = pickle.dumps({"imlist": ["all_souls_000026"], "qimlist": ["all_souls_000013"],
                        "gnd": [{"bbx": [136.5, 34.1, 648.5, 955.7], "easy": [0], "hard": [], "junk": []}]})
    server.serve("gnd_roxford5k.pkl", gnd, official={"404"}, mirror=set())
    server.serve("oxbuild_images-v1.tgz", tgz_bytes(OX_IMAGES))
    server.serve("gt_files_170407.tgz", tgz_bytes(OX_GT))
    raw = tmp_path / "raw"
    fetch_dataset("roxford5k", raw, tmp_path / "lock.json", registry=local_registry("roxford5k", server), **FAST)
    assert ("/official/gnd_roxford5k.pkl", None) in server.requests
    assert (raw / "roxford5k/gnd_roxford5k.pkl").read_bytes() == gnd  # a pickle is kept as it is
    assert (raw / "oxford5k/oxbuild_images-v1/ashmolean_000000.jpg").exists()  # its images: oxford5k's


def test_404_everywhere_names_the_addresses_and_the_manual_path(server, tmp_path):
    data = zip_bytes({"full/ukbench00000.jpg": random_jpeg(0)})
    server.serve("ukbench.zip", data, official={"404"})
    raw, lock = tmp_path / "raw", tmp_path / "lock.json"
    with pytest.raises(InstanceSearchError) as exc:
        fetch_dataset("ukbench", raw, lock, registry=local_registry("ukbench", server), **FAST)
    msg = _one_line(exc)
    for where in ("official", "mirror"):
        assert f"{server.base}/{where}/ukbench.zip: HTTP 404" in msg
    assert str(raw / "ukbench" / "ukbench.zip") in msg
    assert not (raw / "ukbench/ukbench").exists() and not lock.exists()

    (raw / "ukbench/ukbench.zip").write_bytes(data)  # a manually obtained copy, put where the message said
    seen = len(server.requests)
    fetch_dataset("ukbench", raw, lock, registry=local_registry("ukbench", server), **FAST)
    assert len(server.requests) == seen
    assert (raw / "ukbench/ukbench/full/ukbench00000.jpg").read_bytes() == random_jpeg(0)
    assert json.loads(lock.read_text())["ukbench/ukbench.zip"]["sha256"] == sha256_hex(data)


def test_a_host_that_is_down_is_retried_then_reported(tmp_path):
    with contextlib.closing(__import__("socket").socket()) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    with pytest.raises(dl.DownloadError) as exc:
        dl.download([f"http://127.0.0.1:{port}/gnd_instre.mat"], tmp_path / "gnd_instre.mat", **FAST)
    msg = _one_line(exc)
    assert f"http://127.0.0.1:{port}/gnd_instre.mat:" in msg and "gave up after 3 attempts" in msg
    assert str(tmp_path / "gnd_instre.mat") in msg


# --- checksums ----------------------------------------------------------------------------------

def test_wrong_checksum_is_an_error_and_earlier_data_stays(oxford, tmp_path):
    raw, lock = tmp_path / "raw", tmp_path / "lock.json"
    fetch_dataset("oxford5k", raw, lock, registry=local_registry("oxford5k", oxford), **FAST)
    before = _snapshot(raw / "oxford5k")
    good = json.loads(lock.read_text())["oxford5k/oxbuild_images-v1.tgz"]["sha256"]

    # The lock now names another release; the server still has the old one.
    entries = json.loads(lock.read_text())
    entries["oxford5k/oxbuild_images-v1.tgz"]["sha256"] = "0" * 64
    lock.write_text(json.dumps(entries))
    (raw / "oxford5k/oxbuild_images-v1.tgz").unlink()
    before.pop("oxbuild_images-v1.tgz")
    with pytest.raises(InstanceSearchError) as exc:
        fetch_dataset("oxford5k", raw, lock, registry=local_registry("oxford5k", oxford), **FAST)
    msg = _one_line(exc)
    assert str(raw / "oxford5k/oxbuild_images-v1.tgz") in msg and str(lock) in msg
    assert "0" * 64 in msg and good in msg and "delete" in msg
    assert _snapshot(raw / "oxford5k") == before  # no archive, no .part, the unpacked folder as it was


def test_a_present_file_that_differs_from_the_lock_is_refused_offline(oxford, tmp_path):
    raw, lock = tmp_path / "raw", tmp_path / "lock.json"
    fetch_dataset("oxford5k", raw, lock, registry=local_registry("oxford5k", oxford), **FAST)
    (raw / "oxford5k/gt_files_170407.tgz").write_bytes(tgz_bytes({"tampered.txt": b"x"}))
    before, seen = _snapshot(raw / "oxford5k"), len(oxford.requests)
    with pytest.raises(InstanceSearchError, match="does not match"):
        fetch_dataset("oxford5k", raw, lock, registry=local_registry("oxford5k", oxford), **FAST)
    assert len(oxford.requests) == seen and _snapshot(raw / "oxford5k") == before


def test_unreadable_lock_file_is_one_line(tmp_path):
    lock = tmp_path / "lock.json"
    lock.write_text("{not json")
    with pytest.raises(InstanceSearchError) as exc:
        dl.read_lock(lock)
    assert str(lock) in _one_line(exc)


# --- corrupt and unsafe archives ----------------------------------------------------------------

def test_truncated_archive_leaves_no_half_folder_and_earlier_data(oxford, tmp_path):
    raw = tmp_path / "raw"
    fetch_dataset("oxford5k", raw, tmp_path / "lock.json", registry=local_registry("oxford5k", oxford), **FAST)
    folder = raw / "oxford5k/oxbuild_images-v1"
    before = _snapshot(folder)

    # A fresh checkout (no lock entry yet) meets a server that serves a truncated archive.
    (raw / "oxford5k/oxbuild_images-v1.tgz").unlink()
    bigger = tgz_bytes({**OX_IMAGES, **{f"new_{i}.jpg": random_jpeg(100 + i) for i in range(5)}})
    oxford.serve("oxbuild_images-v1.tgz", bigger[: len(bigger) * 2 // 3])
    lock2 = tmp_path / "fresh.lock.json"
    with pytest.raises(InstanceSearchError) as exc:
        fetch_dataset("oxford5k", raw, lock2, registry=local_registry("oxford5k", oxford), **FAST)
    msg = _one_line(exc)
    assert "corrupt or truncated archive" in msg and str(raw / "oxford5k/oxbuild_images-v1.tgz") in msg
    assert f"{folder} was left as it was" in msg
    assert _snapshot(folder) == before and _leftovers(raw) == []
    assert "oxford5k/oxbuild_images-v1.tgz" not in dl.read_lock(lock2)  # a bad archive never becomes the reference


def test_archive_member_escaping_the_folder_is_refused(tmp_path):
    archive = tmp_path / "gt_files_170407.tgz"
    archive.write_bytes(tgz_bytes({"all_souls_1_good.txt": b"a\n", "../../evil.txt": b"x"}))
    with pytest.raises(InstanceSearchError) as exc:
        dl.unpack(archive, tmp_path / "out" / "gt_files_170407")
    assert "would land outside" in _one_line(exc)
    assert not (tmp_path / "evil.txt").exists() and not (tmp_path / "out" / "gt_files_170407").exists()
    assert _leftovers(tmp_path) == []


def test_archive_link_escaping_the_folder_is_refused(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        link = tarfile.TarInfo("paris/defense/paris_defense_000000.jpg")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    archive = tmp_path / "paris_1-v1.tgz"
    archive.write_bytes(buf.getvalue())
    with pytest.raises(InstanceSearchError) as exc:
        dl.unpack(archive, tmp_path / "paris_1-v1")
    assert "unsafe member" in _one_line(exc) and sorted(p.name for p in tmp_path.iterdir()) == ["paris_1-v1.tgz"]


def test_corrupt_zip_is_one_line(tmp_path):
    archive = tmp_path / "ukbench.zip"
    archive.write_bytes(zip_bytes({"full/ukbench00000.jpg": random_jpeg(0)})[:-30])
    with pytest.raises(InstanceSearchError, match="corrupt or truncated archive"):
        dl.unpack(archive, tmp_path / "ukbench")
    assert list(tmp_path.iterdir()) == [archive]


# --- rar: INSTRE's other release ----------------------------------------------------------------

INSTRE_RAR = {"INSTRE_release/INSTRE-S1/01a_canada_book/001.jpg": random_jpeg(1),
              "INSTRE_release/INSTRE-S1/01a_canada_book/001.txt": b"10 20 30 40\n",
              "INSTRE_release/INSTRE-M/01_book_and_cup/001.jpg": random_jpeg(2)}


def test_instre_falls_back_to_the_authors_rar(server, tmp_path):
    import rarfile  # noqa: F401  (a required dependency: imported, never skipped)
    server.serve("instre.tar.gz", b"", official={"404"})
    server.serve("INSTRE_release.rar", _rar4(INSTRE_RAR))
    server.serve("gnd_instre.mat", b"MATLAB 5.0 MAT-file, fake for the test")
    raw, lock = tmp_path / "raw", tmp_path / "lock.json"
    manifest = fetch_dataset("instre", raw, lock, registry=local_registry("instre", server), **FAST)
    # The rar's INSTRE_release/ is dropped so both releases give instre/INSTRE-S1/...
    assert (raw / "instre/instre/INSTRE-S1/01a_canada_book/001.jpg").read_bytes() == random_jpeg(1)
    assert (raw / "instre/instre/INSTRE-M/01_book_and_cup/001.jpg").read_bytes() == random_jpeg(2)
    assert (raw / "instre/gnd_instre.mat").exists()
    assert [a["filename"] for a in manifest["archives"]] == ["INSTRE_release.rar", "gnd_instre.mat"]
    assert set(dl.read_lock(lock)) == {"instre/INSTRE_release.rar", "instre/gnd_instre.mat"}

    seen = len(server.requests)  # the rar copy is used again without trying the tar.gz
    fetch_dataset("instre", raw, lock, registry=local_registry("instre", server), **FAST)
    assert len(server.requests) == seen


def test_instre_both_releases_missing_names_both_manual_paths(server, tmp_path):
    server.serve("instre.tar.gz", b"", official={"404"})
    server.serve("INSTRE_release.rar", b"", official={"404"})
    raw = tmp_path / "raw"
    with pytest.raises(InstanceSearchError) as exc:
        fetch_dataset("instre", raw, tmp_path / "lock.json", registry=local_registry("instre", server), **FAST)
    msg = _one_line(exc)
    assert str(raw / "instre/instre.tar.gz") in msg and str(raw / "instre/INSTRE_release.rar") in msg
    assert "/mirror/INSTRE_release.rar: HTTP 404" in msg


def test_rar_without_a_tool_names_the_tools(tmp_path, monkeypatch):
    import rarfile  # a required dependency: imported, never skipped
    archive = tmp_path / "INSTRE_release.rar"
    archive.write_bytes(_rar4({"INSTRE_release/INSTRE-S1/a.jpg": b"x"}, method=0x33))  # "compressed"
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    monkeypatch.setattr(rarfile, "CURRENT_SETUP", None)
    with pytest.raises(InstanceSearchError) as exc:
        dl.unpack(archive, tmp_path / "instre", strip=1)
    msg = _one_line(exc)
    assert "unrar, unar, 7z or bsdtar" in msg and "apt-get install unar" in msg and str(tmp_path / "instre") in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["INSTRE_release.rar", "bin"]


# --- a full disk ----------------------------------------------------------------------------------

@pytest.fixture
def tiny_disk(tmp_path):
    """A 64 KiB tmpfs: a real quota, as root. Skipped where mounting is not permitted."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mnt)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({proc.stderr.strip() or 'not root'}); the simulated tests still run")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_disk_check_before_the_first_byte(server, tiny_disk):
    big = zip_bytes({f"full/ukbench{i:05d}.jpg": os.urandom(40_000) for i in range(5)})  # ~200 KB
    server.serve("ukbench.zip", big)
    raw = tiny_disk / "raw"
    with pytest.raises(InstanceSearchError) as exc:
        fetch_dataset("ukbench", raw, tiny_disk / "lock.json", registry=local_registry("ukbench", server), **FAST)
    msg = _one_line(exc)
    assert "not enough disk space" in msg and str(raw / "ukbench") in msg
    assert server.requests == []  # refused on the estimate, before any request
    with pytest.raises(InstanceSearchError, match="not enough disk space"):  # and on Content-Length
        dl.download([f"{server.base}/official/ukbench.zip"], raw / "ukbench" / "ukbench.zip", **FAST)
    assert len(server.requests) == 1 and not (raw / "ukbench/ukbench.zip.part").exists()


def test_disk_full_while_writing_and_unpacking(server, tiny_disk):
    earlier = tiny_disk / "raw/oxford5k/gt_files_170407"
    earlier.mkdir(parents=True)
    (earlier / "all_souls_1_good.txt").write_bytes(b"all_souls_000026\n")

    # No Content-Length, so only the write itself can find the disk full.
    server.serve("paris_1-v1.tgz", os.urandom(200_000), official={"no_length"})
    with pytest.raises(InstanceSearchError) as exc:
        dl.download([f"{server.base}/official/paris_1-v1.tgz"], tiny_disk / "raw/paris6k/paris_1-v1.tgz", **FAST)
    assert "disk full while downloading" in _one_line(exc)
    (tiny_disk / "raw/paris6k/paris_1-v1.tgz.part").unlink()  # kept for a resume; make room for the next case

    # A small archive whose members do not fit once unpacked.
    zeros = tgz_bytes({f"all_souls_{i:06d}.jpg": bytes(60_000) for i in range(5)})
    archive = tiny_disk / "raw/oxford5k/gt_files_170407.tgz"
    archive.write_bytes(zeros)
    with pytest.raises(InstanceSearchError) as exc:
        dl.unpack(archive, earlier)
    msg = _one_line(exc)
    assert "disk full while unpacking" in msg and f"{earlier} was left as it was" in msg
    assert _snapshot(earlier) == {"all_souls_1_good.txt": b"all_souls_000026\n"} and _leftovers(tiny_disk) == []


def test_disk_full_simulated_on_the_write(server, tmp_path, monkeypatch):
    """The same write path as on a real full disk, without needing a mount: write() raises ENOSPC."""
    real_open = open

    class _Full:
        def __init__(self, fh):
            self.fh, self.written = fh, 0

        def write(self, b):
            if self.written + len(b) > 10_000:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            self.written += len(b)
            return self.fh.write(b)

        def close(self):
            self.fh.close()

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    monkeypatch.setattr(dl, "open", lambda p, mode="r", *a, **k: _Full(real_open(p, mode, *a, **k))
                        if str(p).endswith(".part") else real_open(p, mode, *a, **k), raising=False)
    server.serve("paris_2-v1.tgz", os.urandom(50_000))
    with pytest.raises(InstanceSearchError) as exc:
        dl.download([f"{server.base}/official/paris_2-v1.tgz"], tmp_path / "paris_2-v1.tgz", **FAST)
    assert "disk full while downloading" in _one_line(exc)
    assert not (tmp_path / "paris_2-v1.tgz").exists() and len(server.requests) == 1  # no retry, no mirror


def test_revisitop1m_is_optional_and_checked_before_the_first_byte(server, tmp_path, monkeypatch):
    r1m = DATASETS["revisitop1m"]
    assert r1m.optional and sum(a.filename.endswith(".tar.gz") for a in r1m.archives) == 100
    assert all(not d.optional for n, d in DATASETS.items() if n != "revisitop1m")
    free = 50 * 10**9
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**12, 10**12 - free, free))
    local = {"revisitop1m": dataclasses.replace(r1m, archives=tuple(
        dataclasses.replace(a, urls=(f"{server.base}/official/{a.filename}",)) for a in r1m.archives))}
    with pytest.raises(InstanceSearchError) as exc:
        fetch_dataset("revisitop1m", tmp_path / "raw", tmp_path / "lock.json", registry=local, **FAST)
    msg = _one_line(exc)
    assert "revisitop1m (101 archives, estimated)" in msg and "46.6 GiB free" in msg
    assert server.requests == []


# --- the registry and the script ----------------------------------------------------------------

def test_registry_covers_every_dataset_with_http_addresses():
    assert set(DATASETS) == {"oxford5k", "paris6k", "roxford5k", "rparis6k", "instre", "sculptures6k", "ukbench",
                             "revisitop1m"}
    for ds in DATASETS.values():
        for a in ds.archives + tuple(a.fallback for a in ds.archives if a.fallback):
            assert a.urls and all(u.startswith(("http://", "https://", "ftp://")) for u in a.urls)
            assert all(u.endswith("/" + a.filename) for u in a.urls)
            assert a.kind in ("images", "groundtruth") and a.est_bytes > 0
            assert a.unpack == a.filename.endswith((".tgz", ".tar.gz", ".zip", ".rar"))
    assert DATASETS["roxford5k"].requires == ("oxford5k",) and DATASETS["rparis6k"].requires == ("paris6k",)


def test_fetch_script_reports_one_line_and_exit_1(tmp_path):
    script = REPO / "workflow/scripts/step.py"
    proc = subprocess.run([sys.executable, str(script), "fetch", "--params", str(REPO / "params.yaml"), "--dataset", "nosuch",
                           "--manifest", str(tmp_path / "data/nosuch/manifest.json")],
                          capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "error: key datasets.nosuch is not in the params file; define it there"]
