"""The INSTRE adapter on a gnd_instre.mat written in the real MATLAB structure, and broken variants."""

from __future__ import annotations

import pytest
import scipy.io

from instance_search import groundtruth
from instance_search.datasets.instre import load_instre
from instance_search.datasets.prepare import prepare
from instance_search.errors import InstanceSearchError
from helpers import INSTRE_GND, INSTRE_IMLIST, INSTRE_QIMLIST, matlab_cell, write_gnd_mat, write_jpeg

@pytest.fixture
def instre(tmp_path):
    root = tmp_path / "instre"
    for i, rel in enumerate(INSTRE_IMLIST + INSTRE_QIMLIST):
        write_jpeg(root / rel, 40, 30, seed=i)
    write_gnd_mat(root / "gnd_instre.mat")
    return root


def test_structure_indices_and_boxes(instre):
    gnd = load_instre("instre", instre, instre / "gnd_instre.mat",
                      expect={"images": 6, "database": 4, "queries": 2})
    assert gnd.n_database == 4 and len(gnd.images) == 6
    assert [im.path for im in gnd.images] == INSTRE_IMLIST + INSTRE_QIMLIST  # query-only images after the database
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
    "no gnd key": (lambda r: scipy.io.savemat(str(r / "gnd_instre.mat"), {"imlist": matlab_cell(INSTRE_IMLIST),
                                                                          "qimlist": matlab_cell(INSTRE_QIMLIST)}),
                   {}, "key gnd missing"),
    "no bbx field": (_mat(fields=("ok",)), {}, "struct array with fields ok and bbx"),
    "one gnd entry short": (_mat(gnd=INSTRE_GND[:1]), {}, "one per qimlist entry (2)"),
    "0-based indices": (_mat(gnd=[([0, 1], [2, 3, 22, 18]), ([3], [0, 0, 40, 30])]), {},
                        "query 1 (INSTRE-S1/01a_canada_book/000.jpg): index 0 is not an imlist entry (1..4"),
    "index past the end": (_mat(gnd=[([1], [2, 3, 22, 18]), ([5], [0, 0, 40, 30])]), {}, "index 5 is not an imlist entry"),
    "box outside the image": (_mat(gnd=[([1], [25, 3, 45, 18]), ([3], [0, 0, 40, 30])]), {},
                              "box 25 3 45 18 is empty or not inside"),
    "image missing": (lambda r: (r / INSTRE_IMLIST[2]).unlink(), {}, "image INSTRE-S2/05_toy/001.jpg not found under"),
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
