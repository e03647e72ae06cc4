"""Your own photos: ``instance-search index`` builds an index of a folder with the pipeline's own steps
(no workflow engine), and adds another folder's images to an index without learning its model again.

An index folder holds ``gnd.json`` (the image list: the folder's images, no ground truth),
``features/``, ``model.npz`` and ``index/``, as a pipeline's method folder does, so ``query`` and
``serve`` read both alike. A build writes into a hidden sibling folder renamed into place at the
end: a failed or interrupted build leaves nothing that looks like an index. Adding images builds the
new folder beside the old one (its unchanged files hard-linked) and swaps the two in one atomic
exchange (:func:`..io.swap_dir`): a reader or a kill sees the old index or the new one.
"""

from __future__ import annotations

import logging
import os
import shutil
from dataclasses import replace
from pathlib import Path

from . import groundtruth, methods
from .datasets.folder import readable_images
from .errors import InstanceSearchError
from .groundtruth import GroundTruth
from .index import (FEATURES_DIR, GND_FILE, INDEX_DIR, MODEL_FILE, extraction_settings, load_index, read_files,
                    write)
from .io import load_npz, make_temp_dir, swap_dir
from .pipeline import steps

log = logging.getLogger(__name__)


def build(images_dir: str | os.PathLike, method: str, out: str | os.PathLike, params: dict) -> None:
    """Index every readable image under ``images_dir`` with ``method`` into the new folder ``out``."""
    out = Path(out)
    if out.exists():
        raise InstanceSearchError(f"{out}: already exists; choose a new folder, or add images to it with --add")
    m = methods.get(method)
    root = Path(images_dir).resolve()
    gnd = GroundTruth(dataset=out.name, root=str(root), images=readable_images(root), n_database=0, labelled=False)
    gnd = replace(gnd, n_database=len(gnd.images))
    tmp = out.with_name(f".{out.name}.building")
    shutil.rmtree(tmp, ignore_errors=True)  # a killed earlier build
    tmp.mkdir(parents=True)
    try:
        groundtruth.save(gnd, tmp / GND_FILE)
        log.info("1/3 extracting %s features of %d images", method, len(gnd.images))
        steps.extract(params, gnd.dataset, method, tmp / GND_FILE, tmp / FEATURES_DIR)
        log.info("2/3 learning the %s model", method)
        steps.codebook(params, method, tmp / GND_FILE, tmp / FEATURES_DIR, tmp / MODEL_FILE)
        log.info("3/3 encoding the images")
        steps.encode(params, gnd.dataset, method, tmp / GND_FILE, tmp / FEATURES_DIR, tmp / MODEL_FILE, tmp / INDEX_DIR)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("%s: %d images indexed with %s; query it with instance-search query --index %s", out, len(gnd.images),
             m.name, out)


def add(images_dir: str | os.PathLike, out: str | os.PathLike, params: dict) -> None:
    """Add the images under ``images_dir`` (those not indexed yet) to the index ``out``: they are extracted
    with the index's own settings and encoded with its model (vocabulary, whitening: not learned
    again); the word weights are computed again over all images."""
    out = Path(out)
    index = load_index(out)
    gnd, m = index.gnd, index.method
    if gnd.labelled or gnd.n_database != len(gnd.images):
        raise InstanceSearchError(f"{out}: a benchmark's index; images are added only to indexes of photo folders "
                                  "(instance-search index --images)")
    root = Path(images_dir).resolve()
    known = {str(gnd.image_path(i).resolve()) for i in range(len(gnd.images))}
    found = readable_images(root)
    new = [im for im in found if str((root / im.path).resolve()) not in known]
    if len(new) < len(found):
        log.info("%s: %d of its images are in the index already", root, len(found) - len(new))
    if not new:
        log.info("%s: nothing to add", out)
        return
    # the new images by absolute path: the index's image list keeps its own root
    new = [replace(im, name=str(Path(root.name) / im.name), path=str(root / im.path)) for im in new]
    part = GroundTruth(dataset=gnd.dataset, root=str(root), images=new, n_database=len(new), labelled=False)
    scratch, folder = make_temp_dir(out), make_temp_dir(out)  # the new images' features; the new index folder
    try:
        groundtruth.save(part, scratch / GND_FILE)
        extract = {**params[m.name]["extract"], **{k: v for k, v in index.manifest["extraction"].items()
                                                   if k in params[m.name]["extract"]}}
        log.info("1/2 extracting %s features of %d new images (the index's settings)", m.name, len(new))
        m.extraction.extract(extract, part, scratch / FEATURES_DIR)
        if extraction_settings(scratch / FEATURES_DIR) != index.manifest["extraction"]:
            raise InstanceSearchError(f"{out}: the new images were extracted with other settings than the index "
                                      f"(params {m.name}.extract); use the params file the index was built with")
        log.info("2/2 encoding them with the index's model")
        files = m.indexing.encode(index.manifest["encode"], part, scratch / FEATURES_DIR, load_npz(out / MODEL_FILE))
        _, old = read_files(out / INDEX_DIR, check=True)
        total = len(gnd.images) + len(new)
        merged = m.indexing.join([old, files], total, index.manifest["encode"])
        # the new folder: the old one's other files (hard links: nothing copied, nothing of it changed),
        # the whole image list and the joined index; then one swap
        for entry in sorted(out.iterdir()):
            if entry.name not in (GND_FILE, INDEX_DIR) and not entry.name.startswith("."):
                _link(entry, folder / entry.name)
        groundtruth.save(replace(gnd, images=[*gnd.images, *new], n_database=total), folder / GND_FILE)
        write(folder / INDEX_DIR, m.name, merged, n_images=total, n_database=total, model=folder / MODEL_FILE,
              extraction=index.manifest["extraction"], encoding=index.manifest["encode"])
        swap_dir(folder, out)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        shutil.rmtree(folder, ignore_errors=True)
    log.info("%s: added %d images (%d in all)", out, len(new), total)


def _link(src: Path, dest: Path) -> None:
    """``src`` at ``dest`` by hard links (a folder: its tree), or a copy where links cannot be made."""
    if src.is_dir():
        shutil.copytree(src, dest, copy_function=_link_file)
    else:
        _link_file(src, dest)


def _link_file(src, dest) -> None:
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)

