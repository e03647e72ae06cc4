"""The dataset adapters on the published ground-truth files (../shared/data/real-gt, read in place).

Oxford5k's 220 lists, gnd_roxford5k.pkl, gnd_rparis6k.pkl and gnd_instre.mat go through ``prepare``
with params-full.yaml's own dataset entries (format, expect, box_format), only the paths moved to
placeholder images written here: every image the files name, tiny (8x8) except the query images,
which have the largest size the dataset's images have (Oxford and Paris 1024 px a side, INSTRE
1000 px), so that a box read in the wrong convention leaves its image as it would on the real
photographs. Checked: the published counts, one query's box and one known positive per dataset,
every box inside its image, the revisited protocols' sizes, INSTRE's S1 / S2 / M split, and the
one-line error of the wrong ``box_format``. Paris6k's own lists (paris_120310) are not in
real-gt: its images are RParis6k's (6,322 + 70 = 6,392) and are prepared here through that file.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from instance_search.datasets.prepare import prepare
from instance_search.errors import InstanceSearchError
from helpers import assert_boxes_inside, black_jpeg, need_real_gt, revisited_names

REPO = Path(__file__).resolve().parents[1]
FULL = yaml.safe_load((REPO / "params-full.yaml").read_text())["datasets"]

pytestmark = pytest.mark.realdata


def _write(root: Path, rel_paths, big: set[str], big_side: int) -> None:
    small, large = black_jpeg(8), black_jpeg(big_side)
    for rel in rel_paths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(large if rel in big else small)


def _params(dataset: str, images: Path, groundtruth: Path, **override) -> dict:
    cfg = copy.deepcopy(FULL[dataset])
    cfg.update(images=str(images), groundtruth=str(groundtruth), **override)
    return {"datasets": {dataset: cfg}}


def _by_name(gnd, name: str):
    return next(q for q in gnd.queries if q.name == name)


@pytest.fixture(scope="module")
def oxford_images(tmp_path_factory) -> Path:
    """Oxford5k's 5,063 images: ROxford5k's database (4,993) and query images (70) are exactly them."""
    imlist, qimlist = revisited_names("roxford5k")
    root = tmp_path_factory.mktemp("oxford5k") / "oxbuild_images-v1"
    queries = {line.split()[0][len("oxc1_"):] for p in need_real_gt("oxford5k").glob("*_query.txt")
               for line in [p.read_text()]}
    _write(root, [f"{n}.jpg" for n in imlist + qimlist], {f"{n}.jpg" for n in queries | set(qimlist)}, 1024)
    return root


def test_oxford5k_real_lists(oxford_images, tmp_path):
    gt = need_real_gt("oxford5k")
    assert FULL["oxford5k"]["expect"] == {"images": 5063, "queries": 55}
    gnd = prepare(_params("oxford5k", oxford_images, gt), "oxford5k", tmp_path / "gnd.json")
    assert (len(gnd.images), gnd.n_database, len(gnd.queries)) == (5063, 5063, 55)
    q = _by_name(gnd, "all_souls_1")
    assert gnd.images[q.image].name == "all_souls_000013"
    assert q.box == pytest.approx((136.5, 34.1, 648.5, 955.7))
    names = [gnd.images[i].name for i in q.good]
    assert names.count("all_souls_000091") == 1  # listed twice in all_souls_1_good.txt: merged
    assert "all_souls_000013" in names  # the query image is in its own good list
    assert len(q.good) == len((gt / "all_souls_1_good.txt").read_text().split()) - 1
    assert_boxes_inside(gnd)


@pytest.mark.parametrize("ds, landmark_first, database, query0, box0, easy0, sizes, no_easy", [
    # sizes: per protocol, summed over queries, (positives, junk) as the protocol defines them
    ("roxford5k", "oxford", 4993, "all_souls_000013", (136.5, 34.1, 648.5, 955.7), "all_souls_000153",
     {"easy": (3029, 1356 + 2497), "medium": (3029 + 2497, 1356), "hard": (2497, 1356 + 3029)}, [11, 66]),
    ("rparis6k", "paris", 6322, "paris_defense_000605", (130, 17, 843, 732), "paris_defense_000060",
     {"easy": (6874, 7153 + 10350), "medium": (6874 + 10350, 7153), "hard": (10350, 7153 + 6874)}, []),
])
def test_revisited_real_pickles(request, tmp_path_factory, ds, landmark_first, database, query0, box0, easy0,
                                sizes, no_easy):
    pkl = need_real_gt(ds, f"gnd_{ds}.pkl")
    if landmark_first == "oxford":
        images = request.getfixturevalue("oxford_images")
    else:  # Paris: one folder per landmark, as paris_1-v1 / paris_2-v1 unpack
        imlist, qimlist = revisited_names(ds)
        images = tmp_path_factory.mktemp("paris6k")
        _write(images, [f"paris/{n.split('_')[1]}/{n}.jpg" for n in imlist + qimlist],
               {f"paris/{n.split('_')[1]}/{n}.jpg" for n in qimlist}, 1024)
    out = tmp_path_factory.mktemp(ds) / "gnd.json"
    gnd = prepare(_params(ds, images, pkl), ds, out)
    assert FULL[ds]["expect"] == {"database": database, "queries": 70}
    assert (gnd.n_database, len(gnd.images), len(gnd.queries)) == (database, database + 70, 70)
    q = gnd.queries[0]
    assert (q.name, gnd.images[q.image].name, q.image >= gnd.n_database) == (query0, query0, True)
    assert q.box == pytest.approx(box0)
    assert easy0 in {gnd.images[i].name for i in q.good}
    for protocol, (positives, junk) in sizes.items():
        labels = [dict(q.protocols)[protocol] for q in gnd.queries]
        assert sum(len(lb.good) + len(lb.ok) for lb in labels) == positives, protocol
        assert sum(len(lb.junk) for lb in labels) == junk, protocol
    assert [i for i, q in enumerate(gnd.queries) if not dict(q.protocols)["easy"].good] == no_easy
    assert_boxes_inside(gnd)


@pytest.fixture(scope="module")
def instre_images(tmp_path_factory) -> Path:
    import scipy.io

    mat = scipy.io.loadmat(str(need_real_gt("instre", "gnd_instre.mat")), simplify_cells=True)
    root = tmp_path_factory.mktemp("instre") / "instre"
    _write(root, list(mat["imlist"]) + list(mat["qimlist"]), set(mat["qimlist"]), 1000)
    return root


def test_instre_real_mat(instre_images, tmp_path):
    mat = need_real_gt("instre", "gnd_instre.mat")
    assert FULL["instre"]["box_format"] == "xyxy"
    gnd = prepare(_params("instre", instre_images, mat), "instre", tmp_path / "gnd.json")
    assert FULL["instre"]["expect"] == {"images": 28543, "database": 27293, "queries": 1250}
    assert (len(gnd.images), gnd.n_database, len(gnd.queries)) == (28543, 27293, 1250)
    q = gnd.queries[0]
    assert q.name == "INSTRE-S1/01a_canada_book/013"
    assert q.box == (326.0, 219.0, 670.0, 493.0)  # bbx [326 219 670 493] as corners
    assert gnd.images[q.good[0]].name == "INSTRE-S1/01a_canada_book/001"  # ok(1) = 1, MATLAB's first image
    folders = [gnd.images[i].name.rsplit("/", 1)[0] for i in q.good]  # its own class, and the M pairs holding it
    assert {f: folders.count(f) for f in set(folders)} == {"INSTRE-S1/01a_canada_book": 96, "INSTRE-M/01": 101}
    part = lambda im: im.name.split("/")[0]  # noqa: E731
    database = [part(im) for im in gnd.images[:gnd.n_database]]
    queries = [part(gnd.images[q.image]) for q in gnd.queries]
    assert {p: database.count(p) for p in set(database)} == {"INSTRE-S1": 10511, "INSTRE-S2": 11559, "INSTRE-M": 5223}
    assert {p: queries.count(p) for p in set(queries)} == {"INSTRE-S1": 500, "INSTRE-S2": 500, "INSTRE-M": 250}
    assert_boxes_inside(gnd)


def test_instre_wrong_box_format_is_one_line_naming_the_key(instre_images, tmp_path):
    mat = need_real_gt("instre", "gnd_instre.mat")
    with pytest.raises(InstanceSearchError) as exc:
        prepare(_params("instre", instre_images, mat, box_format="xywh"), "instre", tmp_path / "gnd.json")
    msg = str(exc.value)
    assert "\n" not in msg and msg.startswith("664 of 1250 query boxes read as xywh are empty or outside their image")
    assert "set datasets.instre.box_format: xyxy in params.yaml" in msg
    assert not (tmp_path / "gnd.json").exists()
