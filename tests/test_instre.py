"""The INSTRE adapter on a gnd_instre.mat written in the real MATLAB structure, and broken variants."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.io

from instance_search import groundtruth
from instance_search.datasets.instre import load_instre
from instance_search.datasets.prepare import prepare
from instance_search.errors import InstanceSearchError
from test_oxford import _jpeg

# Database images (imlist) and query images (qimlist): paths relative to the INSTRE folder. File
# names repeat across classes, as in the real tree.
IMLIST = ["INSTRE-S1/01a_canada_book/001.jpg", "INSTRE-S1/01a_canada_book/002.jpg",
          "INSTRE-S2/05_toy/001.jpg", "INSTRE-M/01_canada_book_toy/001.jpg"]
QIMLIST = ["INSTRE-S1/01a_canada_book/000.jpg", "INSTRE-S2/05_toy/000.jpg"]
# Per query: positives as MATLAB 1-based indices into IMLIST, box as [x1, y1, x2, y2] (as the
# published gnd_instre.mat gives it: tests/test_realdata_gt.py reads that file).
GND = [([1, 2, 4], [2, 3, 22, 18]), ([3], [0, 0, 40, 30])]


def _cell(items) -> np.ndarray:
    """A MATLAB 1 x n cell array of char arrays, as savemat writes an object array."""
    cell = np.empty((1, len(items)), dtype=object)
    for i, item in enumerate(items):
        cell[0, i] = item
    return cell


def write_gnd_mat(path, imlist=IMLIST, qimlist=QIMLIST, gnd=GND, fields=("ok", "bbx")) -> None:
    """gnd_instre.mat: imlist and qimlist 1 x n cells, gnd a 1 x nq struct array with ok and bbx (doubles)."""
    struct = np.zeros((1, len(gnd)), dtype=[(f, object) for f in fields])
    for i, (ok, bbx) in enumerate(gnd):
        values = {"ok": np.array([ok], dtype=np.float64), "bbx": np.array([bbx], dtype=np.float64)}
        for f in fields:
            struct[0, i][f] = values.get(f, np.zeros((1, 1)))
    scipy.io.savemat(str(path), {"imlist": _cell(imlist), "qimlist": _cell(qimlist), "gnd": struct})


@pytest.fixture
def instre(tmp_path):
    root = tmp_path / "instre"
    for i, rel in enumerate(IMLIST + QIMLIST):
        _jpeg(root / rel, 40, 30, seed=i)
    write_gnd_mat(root / "gnd_instre.mat")
    return root


def test_structure_indices_and_boxes(instre):
    gnd = load_instre("instre", instre, instre / "gnd_instre.mat",
                      expect={"images": 6, "database": 4, "queries": 2})
    assert gnd.n_database == 4 and len(gnd.images) == 6
    assert [im.path for im in gnd.images] == IMLIST + QIMLIST  # query-only images after the database
    assert gnd.images[2].name == "INSTRE-S2/05_toy/001"  # the folder keeps repeated file names apart
    book, toy = gnd.queries
    assert (book.image, book.good, book.ok, book.junk) == (4, (0, 1, 3), (), ())  # 1-based -> 0-based
    assert book.box == (2.0, 3.0, 22.0, 18.0)  # [x1, y1, x2, y2] by default, as the published file
    assert (toy.image, toy.good, toy.box) == (5, (2,), (0.0, 0.0, 40.0, 30.0))  # one positive (squeezed by scipy)
    assert book.name == "INSTRE-S1/01a_canada_book/000"


def test_box_format_xywh_on_request(instre):
    write_gnd_mat(instre / "gnd_instre.mat", gnd=[([1], [2, 3, 20, 15]), ([3], [0, 0, 40, 30])])
    gnd = load_instre("instre", instre, instre / "gnd_instre.mat", box_format="xywh")
    assert gnd.queries[0].box == (2.0, 3.0, 22.0, 18.0)  # [x, y, w, h] -> [x1, y1, x2, y2]
    assert gnd.queries[1].box == (0.0, 0.0, 40.0, 30.0)
    assert load_instre("instre", instre, instre / "gnd_instre.mat").queries[0].box == (2.0, 3.0, 20.0, 15.0)


def test_prepare_reads_format_instre(instre, tmp_path):
    params = {"datasets": {"instre": {"format": "instre", "images": str(instre),
                                      "groundtruth": str(instre / "gnd_instre.mat")}}}
    prepare(params, "instre", tmp_path / "gnd.json")
    assert groundtruth.load(tmp_path / "gnd.json").to_dict() == load_instre("instre", instre, instre / "gnd_instre.mat").to_dict()


def _mat(**kw):
    return lambda root: write_gnd_mat(root / "gnd_instre.mat", **kw)


BROKEN = {
    "missing file": (lambda r: (r / "gnd_instre.mat").unlink(), {}, "gnd_instre.mat: ground-truth file not found"),
    "not a mat file": (lambda r: (r / "gnd_instre.mat").write_text("<html>404</html>"), {},
                       "gnd_instre.mat: not a readable MATLAB file"),
    "no gnd key": (lambda r: scipy.io.savemat(str(r / "gnd_instre.mat"), {"imlist": _cell(IMLIST), "qimlist": _cell(QIMLIST)}),
                   {}, "key gnd missing"),
    "no bbx field": (_mat(fields=("ok",)), {}, "struct array with fields ok and bbx"),
    "one gnd entry short": (_mat(gnd=GND[:1]), {}, "one per qimlist entry (2)"),
    "0-based indices": (_mat(gnd=[([0, 1], [2, 3, 22, 18]), ([3], [0, 0, 40, 30])]), {},
                        "query 1 (INSTRE-S1/01a_canada_book/000.jpg): index 0 is not an imlist entry (1..4"),
    "index past the end": (_mat(gnd=[([1], [2, 3, 22, 18]), ([5], [0, 0, 40, 30])]), {}, "index 5 is not an imlist entry"),
    "box outside the image": (_mat(gnd=[([1], [25, 3, 45, 18]), ([3], [0, 0, 40, 30])]), {},
                              "box 25 3 45 18 is empty or not inside"),
    "image missing": (lambda r: (r / IMLIST[2]).unlink(), {}, "image INSTRE-S2/05_toy/001.jpg not found under"),
    "count mismatch": (None, {"expect": {"images": 28543, "queries": 1250}}, "found 6 images, expected 28543"),
    "bad box format": (None, {"box_format": "cxcywh"}, "datasets.instre.box_format: 'cxcywh'"),
    "no positives": (_mat(gnd=[([], [2, 3, 22, 18]), ([3], [0, 0, 40, 30])]), {}, "no positive images"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_bad_input_is_a_one_line_error(instre, case):
    damage, kw, expected = BROKEN[case]
    if damage:
        damage(instre)
    with pytest.raises(InstanceSearchError) as exc:
        load_instre("instre", instre, instre / "gnd_instre.mat", **kw)
    assert "\n" not in str(exc.value) and expected in str(exc.value)


def test_box_error_points_at_the_box_format_key(instre):
    # x, y, w, h boxes read as the default corners: both boxes are empty (x2 < x1), one line counts them
    write_gnd_mat(instre / "gnd_instre.mat", gnd=[([1], [30, 3, 5, 15]), ([3], [10, 10, 5, 5])])
    with pytest.raises(InstanceSearchError) as exc:
        load_instre("instre", instre, instre / "gnd_instre.mat")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("2 of 2 query boxes read as xyxy are empty or outside their image")
    assert "set datasets.instre.box_format: xywh in params.yaml" in msg
    assert load_instre("instre", instre, instre / "gnd_instre.mat", box_format="xywh").queries[1].box == (10, 10, 15, 15)
