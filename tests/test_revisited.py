"""ROxford5k / RParis6k: the gnd_*.pkl adapter, its broken variants, and the three protocols evaluated
separately (AP computed by hand), through to the table rows."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from instance_search import groundtruth, io, report
from instance_search.datasets.prepare import prepare
from instance_search.datasets.revisited import load_revisited
from instance_search.errors import InstanceSearchError
from instance_search.evaluate import write_evaluation
from instance_search.groundtruth import Labels
from helpers import write_jpeg

# Six database images and two query-only images (in the real files the 70 query images are Oxford /
# Paris images taken out of the database).
IMLIST = [f"all_souls_00000{i}" for i in range(6)]
QIMLIST = ["all_souls_000100", "all_souls_000101"]
# q0: easy 0 3, hard 1, junk 5; q1: no easy image (it happens in ROxford), hard 4.
GND = [{"bbx": [2.0, 3.5, 30.0, 20.0], "easy": [3, 0], "hard": [1], "junk": [5]},
       {"bbx": [0.0, 0.0, 40.0, 30.0], "easy": [], "hard": [4], "junk": []}]
PARAMS = {"evaluate": {"seed_top": 100, "seed_max_hits": 20}}


def write_gnd_pkl(path, imlist=IMLIST, qimlist=QIMLIST, gnd=GND, protocol=pickle.DEFAULT_PROTOCOL, **extra) -> None:
    with open(path, "wb") as f:
        pickle.dump({"imlist": imlist, "qimlist": qimlist, "gnd": gnd, **extra}, f, protocol=protocol)


@pytest.fixture
def roxford(tmp_path):
    root = tmp_path / "roxford5k"
    for i, name in enumerate(IMLIST + QIMLIST):
        write_jpeg(root / "jpg" / f"{name}.jpg", 40, 30, seed=i)
    write_gnd_pkl(root / "gnd_roxford5k.pkl")
    return root


def _load(root, **kw):
    return load_revisited("roxford5k", root / "jpg", root / "gnd_roxford5k.pkl", **kw)


def test_database_then_query_images_and_the_three_protocols(roxford):
    gnd = _load(roxford, expect={"images": 8, "database": 6, "queries": 2})
    assert gnd.n_database == 6 and [im.name for im in gnd.images] == IMLIST + QIMLIST
    q0, q1 = gnd.queries
    assert (q0.name, q0.image, q0.box) == ("all_souls_000100", 6, (2.0, 3.5, 30.0, 20.0))
    assert (q0.good, q0.ok, q0.junk) == ((0, 3), (1,), (5,))  # its own labels: the Medium protocol
    assert dict(q0.protocols) == {"easy": Labels(good=(0, 3), junk=(1, 5)),
                                  "medium": Labels(good=(0, 3), ok=(1,), junk=(5,)),
                                  "hard": Labels(good=(1,), junk=(0, 3, 5))}
    assert gnd.protocols == ("easy", "medium", "hard")
    assert q1.under("easy").positives == () and q1.under("hard").positives == (4,)


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_numpy_arrays_in_the_pickle_and_paris_folders(tmp_path, protocol):
    root = tmp_path / "rparis6k"
    names = ["paris_louvre_000001", "paris_louvre_000002", "paris_defense_000001", "paris_defense_000002"]
    for i, name in enumerate(names):
        write_jpeg(root / "jpg" / "paris" / name.split("_")[1] / f"{name}.jpg", 40, 30, seed=i)
    (root / "jpg" / "paris" / "louvre" / "paris_louvre_000136.jpg").write_text("<html>")  # corrupt, unlisted
    gnd = [{"bbx": np.array([1.0, 1.0, 20.0, 20.0]), "easy": np.array([0]), "hard": np.array([], dtype=np.int64),
            "junk": np.array([2])}]
    write_gnd_pkl(root / "gnd_rparis6k.pkl", imlist=names[:3], qimlist=names[3:], gnd=gnd, protocol=protocol)
    loaded = load_revisited("rparis6k", root / "jpg", root / "gnd_rparis6k.pkl")
    assert loaded.images[0].path == "paris/louvre/paris_louvre_000001.jpg" and loaded.queries[0].image == 3


def test_protocols_survive_the_json_file_and_other_datasets_do_not_get_the_key(roxford, tmp_path):
    params = {"datasets": {"roxford5k": {"format": "revisited", "images": str(roxford / "jpg"),
                                         "groundtruth": str(roxford / "gnd_roxford5k.pkl")}}}
    prepare(params, "roxford5k", tmp_path / "gnd.json")
    again = groundtruth.load(tmp_path / "gnd.json")
    assert again.queries == _load(roxford).queries
    plain = groundtruth.GroundTruth("x", "r", again.images, 6, [again.queries[0].under("medium")])
    assert all("protocols" not in q for q in plain.to_dict()["queries"])


class _Shell:  # a pickle that would run a command when loaded
    def __reduce__(self):
        return (os.system, ("echo should-not-run",))


BROKEN = {
    "missing file": (lambda r: (r / "gnd_roxford5k.pkl").unlink(), {}, "gnd_roxford5k.pkl: ground-truth file not found"),
    "not a pickle": (lambda r: (r / "gnd_roxford5k.pkl").write_text("<html>"), {}, "not a readable revisitop pickle"),
    "code in the pickle": (lambda r: write_gnd_pkl(r / "gnd_roxford5k.pkl", evil=_Shell()), {}, "refusing to load"),
    "not a dict": (lambda r: (r / "gnd_roxford5k.pkl").write_bytes(pickle.dumps([1, 2])), {},
                   "expected a dict with imlist, qimlist, gnd; found list"),
    "gnd too short": (lambda r: write_gnd_pkl(r / "gnd_roxford5k.pkl", gnd=GND[:1]), {}, "gnd must be a list of 2 dicts"),
    "key missing": (lambda r: write_gnd_pkl(r / "gnd_roxford5k.pkl", gnd=[{"bbx": [0, 0, 9, 9], "easy": [0], "junk": []},
                                                                          GND[1]]), {}, "key hard missing"),
    "index past the end": (lambda r: write_gnd_pkl(r / "gnd_roxford5k.pkl", gnd=[{**GND[0], "junk": [6]}, GND[1]]), {},
                           "query 0 (all_souls_000100): junk index 6 is not an imlist entry (0..5)"),
    "easy and junk overlap": (lambda r: write_gnd_pkl(r / "gnd_roxford5k.pkl", gnd=[{**GND[0], "junk": [3]}, GND[1]]), {},
                              "image 3 is both easy and junk"),
    "box outside the image": (lambda r: write_gnd_pkl(r / "gnd_roxford5k.pkl", gnd=[GND[0], {**GND[1], "bbx": [0, 0, 50, 30]}]),
                              {}, "box 0 0 50 30 is empty or not inside all_souls_000101 (40x30)"),
    "box of 3 numbers": (lambda r: write_gnd_pkl(r / "gnd_roxford5k.pkl", gnd=[GND[0], {**GND[1], "bbx": [0, 0, 5]}]),
                         {}, "bbx has 3 numbers"),
    "unknown image name": (lambda r: write_gnd_pkl(r / "gnd_roxford5k.pkl", imlist=IMLIST[:5] + ["magdalen_000001"]), {},
                           "image magdalen_000001 not found under"),
    "count mismatch": (None, {"expect": {"database": 4993, "queries": 70}}, "found 6 database, expected 4993"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_bad_input_is_a_one_line_error(roxford, case, capfd):
    damage, kw, expected = BROKEN[case]
    if damage:
        damage(roxford)
    with pytest.raises(InstanceSearchError) as exc:
        _load(roxford, **kw)
    assert "\n" not in str(exc.value) and expected in str(exc.value)
    assert "should-not-run" not in capfd.readouterr().out


# ------------------------------------------------------------------------------- protocol evaluation

def _rank_file(path, ranks):
    ranks = np.asarray(ranks, np.int32)
    io.save_npz(path, ranks=ranks, scores=np.tile(np.linspace(1, 0, ranks.shape[1], dtype=np.float32), (len(ranks), 1)))
    return path


@pytest.fixture
def evaluated(roxford, tmp_path):
    gnd_path = tmp_path / "gnd.json"
    groundtruth.save(_load(roxford), gnd_path)
    first = _rank_file(tmp_path / "rank.npz", [[1, 0, 2, 3, 5, 4], [0, 1, 2, 3, 4, 5]])
    rerank = _rank_file(tmp_path / "rerank.npz", [[0, 3, 1, 2, 4, 5], [4, 0, 1, 2, 3, 5]])
    paths = tmp_path / "roxford5k.json", tmp_path / "roxford5k.csv"
    write_evaluation(gnd_path, {"first_stage": first, "rerank": rerank, "expand": rerank}, *paths, PARAMS,
                     "roxford5k", "sift", "cosine")
    return paths


def test_easy_medium_hard_ap_by_hand(evaluated):
    metrics_path, per_query_path = evaluated
    m = json.loads(metrics_path.read_text())
    first = {p: m["protocols"][p]["first_stage"]["mAP"] for p in ("easy", "medium", "hard")}
    # q0 ranking 1 0 2 3 5 4 (easy 0 3, hard 1, junk 5); AP adds ((k-1)/r + k/(r+1))/2 per positive
    # Easy:   positives 0 3, junk 1 5 -> junk-free 0 2 3 4: r = 0, 2 -> (1 + (1/2 + 2/3)/2) / 2 = 19/24
    # Medium: positives 0 1 3, junk 5 -> 1 0 2 3 4: r = 0, 1, 3 -> (1 + 1 + (2/3 + 3/4)/2) / 3 = 65/72
    # Hard:   positive 1, junk 0 3 5 -> 1 2 4: r = 0 -> 1
    # q1 ranking 0 1 2 3 4 5 (hard 4): Easy has no positive (NaN, left out of the mean);
    # Medium and Hard: positive 4 at r = 4 -> (0/4 + 1/5)/2 = 1/10
    assert first == {"easy": round(19 / 24, 6), "medium": round((65 / 72 + 0.1) / 2, 6), "hard": round(1.1 / 2, 6)}
    assert m["first_stage"] == m["protocols"]["medium"]["first_stage"]  # the queries' own labels are Medium
    # re-ranked q0: 0 3 1 2 4 5 -> Easy 1, Medium 1, Hard: 1 2 4 with junk 0 3 removed, r = 0 -> 1;
    # q1: 4 first -> 1 under Medium and Hard
    assert {p: m["protocols"][p]["rerank"]["mAP"] for p in m["protocols"]} == {"easy": 1.0, "medium": 1.0, "hard": 1.0}
    lines = per_query_path.read_text().splitlines()
    assert lines[0] == "stage,protocol,query,ap,ndcg,p1,p5,p10,seed_map,seed_ndcg,ns4"
    assert lines[1].startswith("first_stage,easy,all_souls_000100,0.791667,")
    assert lines[2] == "first_stage,easy,all_souls_000101,,,,,,,,"  # no positive under Easy: every metric undefined
    assert lines[5].startswith("first_stage,hard,all_souls_000100,1.000000,")
    assert len(lines) == 1 + 3 * 3 * 2  # stages x protocols x queries
    # seed_map (junk NOT removed, divided by the hits found): Easy q0 hits 0 3 at positions 1 3 ->
    # (1/2 + 2/4)/2 = 1/2 (q1 left out); Hard q0 hit at 0 -> 1, q1 at 4 -> 1/5: mean 3/5
    assert m["protocols"]["easy"]["first_stage"]["seed_map"] == 0.5
    assert m["protocols"]["hard"]["first_stage"]["seed_map"] == 0.6
    assert m["protocols"]["easy"]["first_stage"]["N-S"] == 2.0  # top 4 of q0: 1 0 2 3 -> easy 0 and 3


def test_tables_show_one_row_per_protocol(evaluated, tmp_path):
    table = report.write_table([evaluated[0]], "sift", "cosine", tmp_path / "t.md", tmp_path / "t.csv")
    assert list(table["dataset"]) == ["roxford5k-E", "roxford5k-M", "roxford5k-H"]
    assert table["mAP_first_stage"].round(6).tolist() == [round(19 / 24, 6), round((65 / 72 + 0.1) / 2, 6), 0.55]
    assert table["seed_published_mAP"].isna().all()
    md = (tmp_path / "t.md").read_text()
    assert "| roxford5k-H | 1.000 |" in md and "Easy, Medium and Hard protocols" in md


# --------------------------------------------------------------------------- the ground-truth file

def test_protocols_are_validated_and_a_malformed_file_is_one_line(roxford, tmp_path):
    gnd = _load(roxford)
    gnd.queries[1] = gnd.queries[1].under("medium")  # q1 loses its protocols
    with pytest.raises(InstanceSearchError, match="query all_souls_000101: protocols .* differ"):
        gnd.validate("gnd.json")
    gnd = _load(roxford)
    path = tmp_path / "gnd.json"
    groundtruth.save(gnd, path)
    d = json.loads(path.read_text())
    d["queries"][0]["protocols"][2]["junk"] = [7]  # an index past the database
    path.write_text(json.dumps(d))
    with pytest.raises(InstanceSearchError, match="query all_souls_000100: protocol hard: junk index 7 is not a database image"):
        groundtruth.load(path)
    d["queries"][0]["protocols"] = [{"good": []}]
    path.write_text(json.dumps(d))
    with pytest.raises(InstanceSearchError, match="malformed ground-truth file") as exc:
        groundtruth.load(path)
    assert "\n" not in str(exc.value)


def test_a_file_without_protocols_loads_as_before(roxford, tmp_path):
    d = _load(roxford).to_dict()
    for q in d["queries"]:
        del q["protocols"]
    path = tmp_path / "gnd.json"
    path.write_text(json.dumps(d))
    gnd = groundtruth.load(path)
    assert gnd.protocols == () and gnd.queries[0].protocols == () and gnd.queries[0].positives == (0, 1, 3)


# --------------------------------------------------------------------------- distractors (R1M)

def test_distractors_join_the_database_before_the_query_images(roxford, tmp_path):
    from instance_search.datasets.prepare import prepare

    for i in range(3):
        write_jpeg(tmp_path / "revisitop1m" / "revisitop1m.1" / "jpg" / f"d{i}.jpg", 20, 10, seed=50 + i)
    cfg = {"source": "download", "format": "revisited", "images": str(roxford / "jpg"),
           "groundtruth": str(roxford / "gnd_roxford5k.pkl"), "distractors": str(tmp_path / "revisitop1m")}
    gnd = prepare({"datasets": {"roxford5k": cfg}}, "roxford5k", tmp_path / "gnd.json")
    again = groundtruth.load(tmp_path / "gnd.json")
    assert again.n_database == gnd.n_database == 9
    assert [im.name for im in again.images] == IMLIST + ["d0", "d1", "d2"] + QIMLIST
    assert [q.image for q in again.queries] == [9, 10]                    # shifted past the distractors
    assert again.queries[0].under("easy").good == (0, 3)                   # labels unchanged
    assert again.image_path(6).is_file() and again.image_path(9).name == "all_souls_000100.jpg"
