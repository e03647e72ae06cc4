"""The UKBench adapter on hand-made folders: groups of 4, whole-image queries, broken variants."""

import cv2
import numpy as np
import pytest

from instance_search.datasets.ukbench import load_ukbench
from instance_search.errors import InstanceSearchError


def _make(tmp_path, n=8, rows=None):
    jpg = tmp_path / "jpg"
    jpg.mkdir()
    for i in range(n):
        cv2.imwrite(str(jpg / f"ukbench{i:05d}.jpg"), np.full((24, 32, 3), i * 20, np.uint8))
    rows = rows if rows is not None else [f"ukbench{i:05d}.jpg,{i // 4}" for i in range(n)]
    csv = tmp_path / "groundtruth.csv"
    csv.write_text("image,object\n" + "\n".join(rows) + "\n")
    return jpg, csv


def test_groups_become_positives_and_queries_use_the_whole_image(tmp_path):
    jpg, csv = _make(tmp_path)
    gnd = load_ukbench("uk", jpg, csv)
    assert gnd.n_database == 8 and len(gnd.queries) == 8
    assert gnd.queries[5].good == (4, 5, 6, 7)
    assert gnd.queries[5].box == (0.0, 0.0, 32.0, 24.0)


def test_a_group_of_three_is_an_error(tmp_path):
    jpg, csv = _make(tmp_path, rows=[f"ukbench{i:05d}.jpg,{min(i // 4, 1) if i < 7 else 2}" for i in range(8)])
    with pytest.raises(InstanceSearchError, match="groundtruth.csv"):
        load_ukbench("uk", jpg, csv)


def test_missing_or_empty_groundtruth_is_an_error(tmp_path):
    jpg, csv = _make(tmp_path, rows=[])
    with pytest.raises(InstanceSearchError, match="no object for image|empty"):
        load_ukbench("uk", jpg, csv)
    with pytest.raises(InstanceSearchError, match="not found"):
        load_ukbench("uk", jpg, tmp_path / "nope.csv")


def test_groups_from_file_numbers(tmp_path):
    import cv2
    import numpy as np

    from instance_search.datasets.ukbench import load_ukbench

    for i in range(8):
        cv2.imwrite(str(tmp_path / f"ukbench{i:05d}.jpg"), np.full((8, 8, 3), i * 20, np.uint8))
    gnd = load_ukbench("ukbench", tmp_path, "by-name")
    assert [q.good for q in gnd.queries[:5]] == [(0, 1, 2, 3)] * 4 + [(4, 5, 6, 7)]
