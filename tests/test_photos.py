"""Your own photos: `instance-search index` builds an index of a folder with no ground truth, `--add`
adds another folder without learning the model again, and `query` / the web page search it, for
every method. Real photos: UKBench (../shared/data/ukbench-500), whose groups of 4 views of one
object tell whether a query found its object (never counting the query image itself).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from instance_search import cli, methods
from instance_search.index import load_index, sha256
from instance_search.web.app import create_app

REPO = Path(__file__).resolve().parents[1]
UKBENCH = REPO.parent / "shared" / "data" / "ukbench-500"
FIRST, ADDED = range(0, 60), range(60, 80)  # 15 objects indexed, then 5 more objects added

pytestmark = pytest.mark.realdata


def _folder(tmp: Path, name: str, numbers: range) -> Path:
    folder = tmp / name
    folder.mkdir()
    for n in numbers:  # links: the shared photos are read, never copied
        (folder / f"ukbench{n:05d}.jpg").symlink_to(UKBENCH / "jpg" / f"ukbench{n:05d}.jpg")
    return folder


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    if not (UKBENCH / "jpg").is_dir():
        pytest.skip(f"{UKBENCH} is missing: the own-photos tests need ../shared/data/ukbench-500")
    tmp = tmp_path_factory.mktemp("photos")
    params = yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))
    params["sift"]["codebook"]["words"] = 300  # 60 photos
    params["xfeat"]["codebook"]["words"] = 300
    params["blcf"]["codebook"].update(words=200, pca_dim=64)
    for m in ("blcf", "frcnn", "gem"):
        params[m]["extract"]["max_side"] = 320
    (tmp / "workflow" / "schemas").mkdir(parents=True)  # the params file's own checkout: its schema beside it
    (tmp / "workflow" / "schemas" / "params.schema.json").write_text(
        (REPO / "workflow/schemas/params.schema.json").read_text(encoding="utf-8"), encoding="utf-8")
    (tmp / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return tmp, params, _folder(tmp, "first", FIRST), _folder(tmp, "added", ADDED)


def _found(answer: dict, query: int, group_size: int = 4) -> int:
    """How many of the query's 3 other group members are in its top 4 results (the query not counted)."""
    group = {f"ukbench{query // group_size * group_size + k:05d}" for k in range(group_size)} - {f"ukbench{query:05d}"}
    return sum(1 for h in answer["hits"][:4] if Path(h["name"]).name in group)


def _query(index: Path, image: Path, params: Path, capsys) -> dict:
    assert cli.main(["query", "--index", str(index), "--image", str(image), "--json", "--results", "8",
                     "--params", str(params)]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize("method", methods.names())
def test_index_query_add_and_serve_own_photos(photos, method, capsys):
    tmp, params, first, added = photos
    out = tmp / f"idx-{method}"
    assert cli.main(["index", "--images", str(first), "--method", method, "--out", str(out),
                     "--params", str(tmp / "params.yaml")]) == 0
    assert not list(tmp.glob(f".idx-{method}*")), "the build left a temporary folder"
    index = load_index(out)
    assert index.n_database == len(FIRST) and not index.gnd.queries

    # queries find their own object among the other images (the query image itself is not counted)
    queries = [3, 17, 30, 45, 58]
    found = [_found(_query(out, first / f"ukbench{n:05d}.jpg", tmp / "params.yaml", capsys), n) for n in queries]
    assert sum(found) >= 2 * len(queries), found  # at least 2 of the 3 other views in the top 4, on average

    # --add: the new objects become findable, the model is not learned again
    model = sha256(out / "model.npz")
    assert cli.main(["index", "--add", str(added), "--out", str(out), "--params", str(tmp / "params.yaml")]) == 0
    assert sha256(out / "model.npz") == model
    assert load_index(out).n_database == len(FIRST) + len(ADDED)
    new = [61, 66, 75]
    found = [_found(_query(out, added / f"ukbench{n:05d}.jpg", tmp / "params.yaml", capsys), n) for n in new]
    assert sum(found) >= 2 * len(new), found
    # adding the same folder again adds nothing
    assert cli.main(["index", "--add", str(added), "--out", str(out), "--params", str(tmp / "params.yaml")]) == 0
    assert load_index(out).n_database == len(FIRST) + len(ADDED)

    # the web page over the same index answers a query of a database image with a box
    client = create_app([load_index(out)], params=params, upload_dir=tmp / f"uploads-{method}").test_client()
    r = client.post("/api/query", json={"index": 0, "image": {"id": 12}, "box": [40, 30, 600, 450], "results": 5})
    assert r.status_code == 200, r.get_json()
    hits = r.get_json()["hits"]
    assert len(hits) == 5 and hits[0]["image"] == 12


def test_a_second_build_into_an_existing_folder_is_refused(photos, capsys):
    tmp, _, first, _ = photos
    out = tmp / "existing"
    out.mkdir()
    assert cli.main(["index", "--images", str(first), "--method", "sift", "--out", str(out),
                     "--params", str(tmp / "params.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "already exists" in err[0]
