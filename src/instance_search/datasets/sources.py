"""Where every real dataset comes from, and :func:`fetch_dataset`, which makes it present on disk.

The registry is data: per dataset, its archives with their addresses (the official one first, then
mirrors; https wherever the host is known to serve it; ftp where that is how the file is published),
what they hold and whether they are unpacked. The download tries the https addresses first, then the
plain http and ftp ones, each group in this order. An archive may name another release of the same
content (``fallback``), tried when every address fails; a fallback that packs the archive's single
file (``member``) has it extracted to the archive's own path and checked there as the archive.
:func:`fetch_dataset` downloads, verifies against the lock file and unpacks them into
``<raw>/<dataset>/``:

    <raw>/<dataset>/<filename>          the archive as published (a manual copy goes here too)
    <raw>/<dataset>/<folder>/           its members, for archives that are unpacked
    <raw>/<dataset>/manifest.json       what was fetched (file, sha256, folder): the step's output

A second run with everything present and verified does no network I/O. Sizes are rough estimates
for the disk-space check that runs before the first byte is fetched.

The lock file is the authority on the bytes: a first download records the archive's sha256 there
(and says in one log line that the lock changed and should be committed); with ``frozen`` (CI) an
archive the lock has no sha256 for is refused before any byte is fetched, whatever its address.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import requests

from .. import download as dl
from .. import io
from ..errors import InstanceSearchError

log = logging.getLogger(__name__)

KB, MB, GB = 10**3, 10**6, 10**9


@dataclass(frozen=True)
class Archive:
    filename: str
    urls: tuple[str, ...]          # official address first, then mirrors
    kind: str                      # "images" | "groundtruth"
    unpack: bool                   # tar.gz/tgz/zip/rar are unpacked; .pkl/.mat are used as they are
    est_bytes: int                 # rough size, for the disk-space check before the first byte
    folder: str | None = None      # where it unpacks under <raw>/<dataset>/ (default: name less suffix)
    strip: int = 0                 # leading folders dropped when unpacking (to match another release)
    fallback: Archive | None = None  # another release of the same content, tried when all addresses fail
    member: str | None = None      # for a fallback that packs its primary's one file: that member's path
                                   # in the unpacked folder, extracted to the primary's own path

    @property
    def target(self) -> str | None:
        return (self.folder or dl.unpacked_name(self.filename)) if self.unpack else None


@dataclass(frozen=True)
class Dataset:
    name: str
    archives: tuple[Archive, ...]
    requires: tuple[str, ...] = ()  # datasets whose archives this one reads (the revisited ones)
    optional: bool = False          # off by default: fetched only when asked for by name


_OX = "https://www.robots.ox.ac.uk/~vgg/data"
_THOR = "https://thor.robots.ox.ac.uk/datasets"
# cmp.felk.cvut.cz and ftp.irisa.fr serve the same paths over https (other public download code uses
# these https addresses; not re-checked from this machine, which has no network): the lock checks the bytes.
_REVISITOP = "https://cmp.felk.cvut.cz/revisitop/data/datasets"  # revisitop's python/download.py
# The second copy of the revisited pickles, fetched by cnnimageretrieval-pytorch (cirtorch/datasets/testdataset.py).
_CIRTORCH = "https://cmp.felk.cvut.cz/cnnimageretrieval/data/test"
# https not confirmed for ptak.felk.cvut.cz: left as published (plain http; the lock checks the bytes).
_R1M = "http://ptak.felk.cvut.cz/revisitop/revisitop1m"
# INSTRE is published over FTP (every public user found fetches ftp://ftp.irisa.fr/...); the same
# server's https is tried first (not confirmed from here), then the ftp address.
_TEXMEX_FTP = "ftp://ftp.irisa.fr/local/texmex/corpus/instre"
_TEXMEX = "https://ftp.irisa.fr/local/texmex/corpus/instre"
# gnd_instre.mat's other known copy: inside test_script.zip (test_script/gnd_instre.mat) of the
# protocol's author, as one public download script takes it.
_ISCEN = "https://cmp.felk.cvut.cz/~iscenahm/files"


def _ox(name: str, thor: str, filename: str, kind: str, est: int) -> Archive:
    return Archive(filename, (f"{_OX}/{name}/{filename}", f"{_THOR}/{thor}/{filename}"), kind, True, est)


_OXFORD_IMAGES = _ox("oxbuildings", "oxford-buildings", "oxbuild_images-v1.tgz", "images", 1900 * MB)
_PARIS_IMAGES = (_ox("parisbuildings", "paris-buildings", "paris_1-v1.tgz", "images", 1300 * MB),
                 _ox("parisbuildings", "paris-buildings", "paris_2-v1.tgz", "images", 1300 * MB))

DATASETS: dict[str, Dataset] = {d.name: d for d in (
    # Flat JPEGs (faces blurred in the 2022 "-v1" release) and flat <query>_{good,ok,junk,query}.txt lists.
    Dataset("oxford5k", (
        _OXFORD_IMAGES,
        _ox("oxbuildings", "oxford-buildings", "gt_files_170407.tgz", "groundtruth", 1 * MB),
    )),
    # paris/<landmark>/paris_<landmark>_NNNNNN.jpg in two archives; 20 of them are corrupt on purpose.
    Dataset("paris6k", _PARIS_IMAGES + (
        _ox("parisbuildings", "paris-buildings", "paris_120310.tgz", "groundtruth", 1 * MB),
    )),
    # The revisited protocols: one pickle each; the images are Oxford's and Paris'.
    Dataset("roxford5k", (
        Archive("gnd_roxford5k.pkl", (f"{_REVISITOP}/roxford5k/gnd_roxford5k.pkl",
                                      f"{_CIRTORCH}/roxford5k/gnd_roxford5k.pkl"), "groundtruth", False, 1 * MB),
    ), requires=("oxford5k",)),
    Dataset("rparis6k", (
        Archive("gnd_rparis6k.pkl", (f"{_REVISITOP}/rparis6k/gnd_rparis6k.pkl",
                                     f"{_CIRTORCH}/rparis6k/gnd_rparis6k.pkl"), "groundtruth", False, 1 * MB),
    ), requires=("paris6k",)),
    # INSTRE-S1/, INSTRE-S2/, INSTRE-M/ under instre/; the authors' rar nests them in INSTRE_release/.
    Dataset("instre", (
        Archive("instre.tar.gz", (f"{_TEXMEX_FTP}/instre.tar.gz", f"{_TEXMEX}/instre.tar.gz"), "images", True,
                2300 * MB, folder="instre",
                # a bare IP address: no certificate to check, so plain http (the lock checks the bytes)
                fallback=Archive("INSTRE_release.rar", ("http://123.57.42.89/Dataset_ict/INSTRE/INSTRE_release.rar",),
                                 "images", True, 2300 * MB, folder="instre", strip=1)),
        Archive("gnd_instre.mat", (f"{_TEXMEX_FTP}/gnd_instre.mat", f"{_TEXMEX}/gnd_instre.mat"), "groundtruth", False,
                1 * MB, fallback=Archive("test_script.zip", (f"{_ISCEN}/test_script.zip",), "groundtruth", True, 1 * MB,
                                         strip=1, member="gnd_instre.mat")),
    )),
    # Archive names not confirmed (the page's download links were reported down): check them on
    # https://www.robots.ox.ac.uk/~vgg/data/sculptures6k/ and fix them here and in the lock file.
    Dataset("sculptures6k", (
        Archive("sculptures6k.tar.gz", (f"{_OX}/sculptures6k/sculptures6k.tar.gz",), "images", True, 2500 * MB),
        Archive("sculptures6k_gt.tar.gz", (f"{_OX}/sculptures6k/sculptures6k_gt.tar.gz",), "groundtruth", True, 1 * MB),
    )),
    # full/ukbenchNNNNN.jpg (and thumbnails/); the authors' page is gone, the Internet Archive keeps it
    # (https, so tried first; the official address is plain http and its https is not confirmed).
    Dataset("ukbench", (
        Archive("ukbench.zip", ("http://vis.uky.edu/~stewe/ukbench/ukbench.zip",
                                "https://archive.org/download/ukbench/ukbench.zip"), "images", True, 2100 * MB),
    )),
    # 1M distractors in 100 parts (about 2 GB each: an estimate) plus the list of their names.
    Dataset("revisitop1m", tuple(
        Archive(f"revisitop1m.{i}.tar.gz", (f"{_R1M}/jpg/revisitop1m.{i}.tar.gz",), "images", True, 2 * GB)
        for i in range(1, 101)
    ) + (Archive("revisitop1m.txt", (f"{_R1M}/revisitop1m.txt",), "groundtruth", False, 100 * MB),),
        optional=True),
)}


def _dataset(name: str, registry: Mapping[str, Dataset]) -> Dataset:
    if name not in registry:
        raise InstanceSearchError(f"dataset {name!r} has no download source; use one of {sorted(registry)}")
    return registry[name]


def _expected(lock: dict, ds: Dataset, archive: Archive) -> str | None:
    return lock.get(f"{ds.name}/{archive.filename}", {}).get("sha256")


def _done(archive: Archive, ddir: Path, expected: str | None) -> bool:
    """Unpacked earlier from the recorded archive (which may since have been removed to save space)."""
    if not (archive.unpack and expected):
        return False
    marker = dl.read_marker(ddir / archive.target) or {}
    return marker.get("sha256") == expected and marker.get("archive") == archive.filename


def _present(archive: Archive, ddir: Path, expected: str | None) -> bool:
    return (ddir / archive.filename).exists() or _done(archive, ddir, expected)


def _check_space(ds: Dataset, ddir: Path, lock: dict, keep_archives: bool) -> None:
    """Refuse to start when the archives still missing cannot fit (estimated sizes, before any byte)."""
    missing = [a for a in ds.archives if not _present(a, ddir, _expected(lock, ds, a))
               and not (a.fallback and _present(a.fallback, ddir, _expected(lock, ds, a.fallback)))]
    if not missing:
        return
    partial = sum(p.stat().st_size for a in missing for p in [ddir / f"{a.filename}.part"] if p.exists())
    if keep_archives:  # each archive stays beside its unpacked members, which are about as large
        need = sum(a.est_bytes * (2 if a.unpack else 1) for a in missing)
    else:  # one archive at a time, removed once unpacked
        need = sum(a.est_bytes for a in missing) + max(a.est_bytes for a in missing)
    dl.check_free_space(ddir, max(need - partial, 0), f"{ds.name} ({len(missing)} archives, estimated)")


def _fetch_one(ds: Dataset, archive: Archive, ddir: Path, lock_path: Path, keep_archive: bool,
               net: dict, frozen: bool = False) -> dict:
    """Make one archive present and verified (downloading it if needed), unpacked when it should be."""
    key = f"{ds.name}/{archive.filename}"
    dest = ddir / archive.filename
    locks = ddir.parent / ".locks"  # beside the datasets, so that jobs sharing a disk see each other's
    with dl.file_lock(locks / f"{ds.name}--{archive.filename}.lock"):
        expected = _expected(dl.read_lock(lock_path), ds, archive)
        if not expected and frozen:  # before any byte: the lock alone says what to trust
            raise dl.frozen_error(dest, key, lock_path)
        if dest.exists():
            sha = dl.sha256_file(dest)
            if expected and sha != expected:
                raise dl.mismatch_error(dest, key, lock_path, expected, sha)
        elif _done(archive, ddir, expected):
            sha = expected
        else:
            log.info("%s: downloading %s", ds.name, archive.filename)
            sha = dl.download(archive.urls, dest, expected_sha256=expected, lock_key=key, lock_path=lock_path,
                              reserve=archive.est_bytes if archive.unpack else 0, **net)
        if archive.unpack and not _done(archive, ddir, sha):
            log.info("%s: unpacking %s into %s", ds.name, archive.filename, ddir / archive.target)
            dl.unpack(dest, ddir / archive.target, strip=archive.strip,
                      marker={"archive": archive.filename, "sha256": sha})
        if not expected:  # first use: only now, verified and unpacked, does its hash become the reference
            dl.record_lock(lock_path, key, sha, dest.stat().st_size, mutex_dir=locks)
            dl.log_lock_changed(lock_path, key, sha)
        if archive.unpack and not keep_archive and dest.exists():
            dest.unlink()
    return {"filename": archive.filename, "kind": archive.kind, "sha256": sha, "folder": archive.target}


def _fetch_release(ds: Dataset, archive: Archive, ddir: Path, lock_path: Path, keep_archive: bool,
                   net: dict, frozen: bool = False) -> dict:
    """Fetch ``archive``'s other release; one that packs the archive's single file (``member``) has
    it copied (atomically) to the archive's own path, then checked and recorded as the archive itself,
    so that the manifest and the params' path are the same whichever release served it."""
    fb = archive.fallback
    entry = _fetch_one(ds, fb, ddir, lock_path, keep_archive, net, frozen)
    if fb.member is None:
        return entry
    src = ddir / fb.target / fb.member
    if not src.is_file():
        raise InstanceSearchError(f"{ddir / fb.filename}: holds no {fb.member} (looked in {ddir / fb.target}); "
                                  f"fetch {archive.filename} by other means and put it at {ddir / archive.filename}")
    io.write_bytes(ddir / archive.filename, src.read_bytes())
    if frozen and not _expected(dl.read_lock(lock_path), ds, archive):
        return entry  # the lock vouches for the release only: nothing new is recorded in frozen mode
    return _fetch_one(ds, archive, ddir, lock_path, keep_archive, net, frozen)


def _fetch_with_fallback(ds: Dataset, archive: Archive, ddir: Path, lock_path: Path, keep_archive: bool,
                         net: dict, frozen: bool = False) -> dict:
    fb = archive.fallback
    lock = dl.read_lock(lock_path)
    if fb is not None and frozen:  # frozen: only a release the lock vouches for is fetched
        locked = [a for a in (archive, fb) if _expected(lock, ds, a)]
        if not locked:
            raise dl.frozen_error(ddir / archive.filename, f"{ds.name}/{archive.filename} (nor its other release "
                                  f"{ds.name}/{fb.filename})", lock_path)
        if len(locked) == 1:
            if locked[0] is fb:
                return _fetch_release(ds, archive, ddir, lock_path, keep_archive, net, frozen)
            return _fetch_one(ds, archive, ddir, lock_path, keep_archive, net, frozen)
    if fb is None or _present(archive, ddir, _expected(lock, ds, archive)) \
            or not _present(fb, ddir, _expected(lock, ds, fb)):
        try:
            return _fetch_one(ds, archive, ddir, lock_path, keep_archive, net, frozen)
        except dl.DownloadError as exc:
            if fb is None:
                raise
            first = exc
            log.warning("%s: %s; trying its other release %s", ds.name, exc, fb.filename)
    else:
        first = None  # a copy of the other release is already here: use it without network
    try:
        return _fetch_release(ds, archive, ddir, lock_path, keep_archive, net, frozen)
    except dl.DownloadError as exc:
        if first is None:
            raise
        raise dl.DownloadError(
            f"{ds.name}: could not download {archive.filename} ({'; '.join(first.failures)}) nor its other release "
            f"{fb.filename} ({'; '.join(exc.failures)}); fetch either by other means and put it at "
            f"{ddir / archive.filename} or {ddir / fb.filename}, then re-run", first.failures + exc.failures) from None


def fetch_dataset(name: str, raw_dir: str | os.PathLike, lock_path: str | os.PathLike, *,
                  keep_archives: bool = True, with_requires: bool = True,
                  registry: Mapping[str, Dataset] = DATASETS, attempts: int = 5, base_delay: float = 2.0,
                  timeout: float = 60.0, session: requests.Session | None = None, frozen: bool = False) -> dict:
    """Download, verify and unpack every archive of dataset ``name`` into ``<raw_dir>/<name>/``.

    Datasets it requires (the images of the revisited ones) are fetched first, into their own
    folders. Returns the manifest, also written atomically to ``<raw_dir>/<name>/manifest.json``.
    ``frozen``: refuse every archive the lock file has no sha256 for (nothing is trusted on first use).
    """
    ds = _dataset(name, registry)
    if with_requires:
        for other in ds.requires:
            fetch_dataset(other, raw_dir, lock_path, keep_archives=keep_archives, registry=registry,
                          attempts=attempts, base_delay=base_delay, timeout=timeout, session=session, frozen=frozen)
    ddir = Path(raw_dir) / name
    lock_path = Path(lock_path)
    _check_space(ds, ddir, dl.read_lock(lock_path), keep_archives)
    net = {"attempts": attempts, "base_delay": base_delay, "timeout": timeout, "session": session}
    entries = [_fetch_with_fallback(ds, a, ddir, lock_path, keep_archives, net, frozen) for a in ds.archives]
    manifest = {"dataset": name, "requires": list(ds.requires), "archives": entries}
    if dl.read_marker_file(ddir / "manifest.json") != manifest:  # unchanged: keep its date for make-like tools
        io.write_json(ddir / "manifest.json", manifest)
    log.info("%s: %d archives present and verified in %s", name, len(entries), ddir)
    return manifest
