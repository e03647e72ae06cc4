"""INSTRE's downloads over FTP, against a local FTP server (pyftpdlib) on 127.0.0.1: complete and
checksummed, resumed with REST after a short transfer, restarted when the server refuses REST, a
missing file (550) passed to the next address, and gnd_instre.mat's other release (the protocol
author's test_script.zip) served by the local HTTP server of tests/helpers.py. No other network.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest
from pyftpdlib.authorizers import DummyAuthorizer  # a dev dependency: imported, never skipped
from pyftpdlib.servers import FTPServer

from instance_search import download as dl
from instance_search.datasets import sources
from instance_search.datasets.sources import DATASETS, fetch_dataset
from instance_search.errors import InstanceSearchError
from helpers import FAST, RecordingFTPHandler, random_jpeg, sha256_hex, tgz_bytes, zip_bytes


INSTRE_TGZ = tgz_bytes({"INSTRE-S1/01a_canada_book/001.jpg": random_jpeg(1, 96),
                        "INSTRE-S1/01a_canada_book/013.jpg": random_jpeg(2, 96),
                        "INSTRE-M/01/001.jpg": random_jpeg(3, 96)})
GND_MAT = b"MATLAB 5.0 MAT-file, placeholder bytes for the download test" * 50


@pytest.fixture
def ftp(tmp_path):
    root = tmp_path / "ftproot" / "instre"
    root.mkdir(parents=True)
    (root / "instre.tar.gz").write_bytes(INSTRE_TGZ)
    (root / "gnd_instre.mat").write_bytes(GND_MAT)
    authorizer = DummyAuthorizer()
    authorizer.add_anonymous(str(tmp_path / "ftproot"))
    handler = type("Handler", (RecordingFTPHandler,), {"authorizer": authorizer, "truncate_once": {}, "seen": [],
                                                       "refuse_rest": False})
    srv = FTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, kwargs={"timeout": 0.05}, daemon=True)
    thread.start()
    handler.base = f"ftp://127.0.0.1:{srv.address[1]}"
    handler.root = root
    yield handler
    srv.close_all()


def _registry(ftp_handler, http=None) -> dict[str, sources.Dataset]:
    """The real INSTRE entry, its ftp addresses moved to the local FTP server (the https ones and the
    authors' rar to the local HTTP server when given, else to a closed port)."""
    def move(a: sources.Archive | None) -> sources.Archive | None:
        if a is None:
            return None
        urls = tuple(f"{ftp_handler.base}/instre/{a.filename}" if u.startswith("ftp://")
                     else f"{http.base if http else 'http://127.0.0.1:9'}/official/{a.filename}" for u in a.urls)
        return dataclasses.replace(a, urls=urls, est_bytes=1000, fallback=move(a.fallback))

    ds = DATASETS["instre"]
    return {"instre": dataclasses.replace(ds, archives=tuple(move(a) for a in ds.archives))}


def test_the_registry_publishes_instre_over_ftp_with_its_mirrors():
    tar, mat = DATASETS["instre"].archives
    assert tar.urls[0] == "ftp://ftp.irisa.fr/local/texmex/corpus/instre/instre.tar.gz"
    assert mat.urls[0] == "ftp://ftp.irisa.fr/local/texmex/corpus/instre/gnd_instre.mat"
    assert (mat.fallback.filename, mat.fallback.urls, mat.fallback.member) == (
        "test_script.zip", ("https://cmp.felk.cvut.cz/~iscenahm/files/test_script.zip",), "gnd_instre.mat")
    for ds in ("roxford5k", "rparis6k"):
        assert DATASETS[ds].archives[0].urls == (
            f"https://cmp.felk.cvut.cz/revisitop/data/datasets/{ds}/gnd_{ds}.pkl",
            f"https://cmp.felk.cvut.cz/cnnimageretrieval/data/test/{ds}/gnd_{ds}.pkl")


def test_ftp_download_unpacks_records_and_second_run_is_offline(ftp, tmp_path):
    raw, lock = tmp_path / "raw", tmp_path / "lock.json"
    manifest = fetch_dataset("instre", raw, lock, registry=_registry(ftp), **FAST)
    assert (raw / "instre/instre/INSTRE-M/01/001.jpg").read_bytes() == random_jpeg(3, 96)
    assert (raw / "instre/gnd_instre.mat").read_bytes() == GND_MAT
    assert dl.read_lock(lock) == {"instre/instre.tar.gz": {"sha256": sha256_hex(INSTRE_TGZ), "bytes": len(INSTRE_TGZ)},
                                  "instre/gnd_instre.mat": {"sha256": sha256_hex(GND_MAT), "bytes": len(GND_MAT)}}
    assert [a["filename"] for a in manifest["archives"]] == ["instre.tar.gz", "gnd_instre.mat"]
    assert not list((raw / "instre").glob("*.part*"))
    seen = len(ftp.seen)
    fetch_dataset("instre", raw, lock, registry=_registry(ftp), **FAST)
    assert len(ftp.seen) == seen  # present and verified: no connection at all


def test_a_short_transfer_is_resumed_with_rest(ftp, tmp_path):
    half = tmp_path / "half.tar.gz"
    half.write_bytes(INSTRE_TGZ[: len(INSTRE_TGZ) // 2])
    ftp.truncate_once["instre.tar.gz"] = half
    dest = tmp_path / "raw" / "instre.tar.gz"
    sha = dl.download([f"{ftp.base}/instre/instre.tar.gz"], dest, **FAST)
    assert dest.read_bytes() == INSTRE_TGZ and sha == sha256_hex(INSTRE_TGZ)
    assert f"REST {len(INSTRE_TGZ) // 2}" in ftp.seen  # the second attempt asked for the rest only
    assert sum(line.startswith("RETR") for line in ftp.seen) == 2


def test_a_part_is_restarted_when_the_server_refuses_rest(ftp, tmp_path):
    ftp.refuse_rest = True
    dest = tmp_path / "raw" / "instre.tar.gz"
    dest.parent.mkdir()
    url = f"{ftp.base}/instre/instre.tar.gz"
    Path(f"{dest}.part").write_bytes(b"X" * 100)  # not the file's bytes: a resume would corrupt it
    Path(f"{dest}.part.json").write_text(json.dumps({"url": url, "validator": None, "total": len(INSTRE_TGZ)}))
    assert dl.download([url], dest, expected_sha256=sha256_hex(INSTRE_TGZ), **FAST) == sha256_hex(INSTRE_TGZ)
    assert dest.read_bytes() == INSTRE_TGZ and "REST 100" in ftp.seen


def test_wrong_checksum_over_ftp_is_one_line_and_leaves_nothing(ftp, tmp_path):
    dest = tmp_path / "raw" / "gnd_instre.mat"
    with pytest.raises(InstanceSearchError) as exc:
        dl.download([f"{ftp.base}/instre/gnd_instre.mat"], dest, expected_sha256="0" * 64, lock_key="instre/gnd_instre.mat",
                    lock_path="lock.json", **FAST)
    msg = str(exc.value)
    assert "\n" not in msg and f"sha256 {sha256_hex(GND_MAT)} does not match {'0' * 64}" in msg
    assert not dest.exists() and not Path(f"{dest}.part").exists()


def test_missing_on_ftp_goes_to_the_next_address(ftp, server, tmp_path):
    (ftp.root / "gnd_instre.mat").unlink()
    server.serve("gnd_instre.mat", GND_MAT)
    raw, lock = tmp_path / "raw", tmp_path / "lock.json"
    manifest = fetch_dataset("instre", raw, lock, registry=_registry(ftp, server), **FAST)
    assert (raw / "instre/gnd_instre.mat").read_bytes() == GND_MAT
    assert manifest["archives"][1]["filename"] == "gnd_instre.mat"
    assert ("/official/gnd_instre.mat", None) in server.requests  # after the ftp address's 550
    assert any(line == "SIZE /instre/gnd_instre.mat" for line in ftp.seen), ftp.seen


def test_gnd_from_the_authors_test_script_zip_lands_where_the_params_expect_it(ftp, server, tmp_path):
    (ftp.root / "gnd_instre.mat").unlink()
    server.serve("gnd_instre.mat", b"", official={"404"})
    zipped = zip_bytes({"test_script/gnd_instre.mat": GND_MAT, "test_script/compute_map.m": b"% evaluation\n"})
    server.serve("test_script.zip", zipped)
    raw, lock = tmp_path / "raw", tmp_path / "lock.json"
    manifest = fetch_dataset("instre", raw, lock, registry=_registry(ftp, server), **FAST)
    # the same path and manifest as a direct download: params-full.yaml's groundtruth path holds
    assert (raw / "instre/gnd_instre.mat").read_bytes() == GND_MAT
    assert manifest["archives"][1] == {"filename": "gnd_instre.mat", "kind": "groundtruth", "sha256": sha256_hex(GND_MAT),
                                       "folder": None}
    assert set(dl.read_lock(lock)) == {"instre/instre.tar.gz", "instre/test_script.zip", "instre/gnd_instre.mat"}
    seen = len(server.requests)
    assert fetch_dataset("instre", raw, lock, registry=_registry(ftp, server), **FAST) == manifest
    assert len(server.requests) == seen

    # a zip without the member: one line naming the zip and where to put the file by hand
    (raw / "instre/gnd_instre.mat").unlink()
    (raw / "instre/test_script.zip").unlink()
    raw2 = tmp_path / "raw2"
    server.serve("test_script.zip", zip_bytes({"test_script/readme.txt": b"no mat here\n"}))
    with pytest.raises(InstanceSearchError) as exc:
        fetch_dataset("instre", raw2, tmp_path / "lock2.json", registry=_registry(ftp, server), **FAST)
    msg = str(exc.value)
    assert "\n" not in msg and "test_script.zip: holds no gnd_instre.mat" in msg
    assert str(raw2 / "instre/gnd_instre.mat") in msg
