"""The frcnn method through the pipeline's steps on a tiny embedded benchmark (grid proposals,
the offline MobileNetV2): files, rankings and the proposal source in the metrics and tables."""

from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import require_weights

from instance_search import evaluate, groundtruth, report
from instance_search.pipeline import steps
from instance_search.datasets import synthetic
from instance_search.datasets.prepare import prepare
from instance_search.features.store import FeatureStore
from instance_search.io import load_npz

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    require_weights("mobilenet_v2")  # missing: fails with the install command (conftest.missing_weights)
    out = tmp_path_factory.mktemp("frcnn")
    data = out / "data"
    synthetic.generate(data, seed=3, objects=3, views=3, distractors=3, width=320, height=240, jpeg_quality=85)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"]["tiny"] = {"source": "local", "format": "oxford", "images": str(data / "jpg"),
                                  "groundtruth": str(data / "gt")}
    # shards of 5 images: the 12 images in 3 shards, which encode joins
    params["frcnn"]["extract"].update(max_side=160, layer="features.17", workers=0, shard_size=5)
    gnd = out / "gnd.json"
    prepare(params, "tiny", gnd)
    steps.extract(params, "test", "frcnn", gnd, out / "features")
    steps.codebook(params, "frcnn", gnd, out / "features", out / "model.npz")
    steps.encode(params, "test", "frcnn", gnd, out / "features", out / "model.npz", out / "index")
    paths = {s: out / f"{s}.npz" for s in ("first_stage", "rerank", "expand")}
    steps.rank(params, "cosine", gnd, out / "index", paths["first_stage"])
    steps.rerank(params, "cosine", gnd, out / "index", paths["first_stage"], paths["rerank"])
    steps.expand(params, "cosine", gnd, out / "index", paths["rerank"], paths["expand"])
    summary = evaluate.write_evaluation(gnd, paths, out / "tiny.json", out / "tiny.csv", params, "tiny", "frcnn",
                                        "cosine", labels={"proposals": "grid"})
    return out, paths, summary


def test_steps_write_rankings_of_every_query(run):
    out, paths, summary = run
    store = FeatureStore(out / "features")
    assert store.config["proposal_source"] == "grid" and store.n_shards == 3
    assert store.dim == 320  # features.17's channels
    gnd = groundtruth.load(out / "gnd.json")
    held = []
    for first, shard in store.shards():  # each shard: its images' proposals and the queries on them
        assert not shard["fallback"].any() and len(shard["vectors"]) == len(shard["offsets"]) - 1
        assert all(first <= gnd.queries[k].image < first + 5 for k in shard["queries"])
        assert shard["ls"].shape == shard["gs"].shape == (len(shard["queries"]), store.dim)
        held += shard["queries"].tolist()
    assert sorted(held) == list(range(len(gnd.queries)))
    for stage, path in paths.items():
        ranks = load_npz(path)["ranks"]
        assert ranks.shape[0] == summary["first_stage"]["queries"] == 3
        assert (np.sort(ranks, axis=1) == np.arange(ranks.shape[1])).all(), stage  # permutations
    boxes = load_npz(paths["rerank"])["boxes"]
    assert np.isfinite(boxes).all() and (boxes[..., 2] > boxes[..., 0]).all()
    assert summary["proposals"] == "grid"


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    return w * h / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h)


def test_every_stage_ranks_the_query_image_first_and_beats_a_broken_order(run):
    """Quality checks a broken step fails: a reversed or shuffled ranking, queries matched to the wrong
    rows, or boxes in the wrong pixels. (Each query here has 2 good images, its own and another view, and
    1 junk among 12: its own image first and the other view anywhere would average AP 0.67.)"""
    out, paths, summary = run
    gnd = groundtruth.load(out / "gnd.json")
    own = [q.image for q in gnd.queries]
    for stage, path in paths.items():
        ranks = load_npz(path)["ranks"]
        assert ranks[:, 0].tolist() == own, stage  # reversed: last; queries shuffled: another object's view
        # today 0.79 (first stage), 0.79 (re-ranked), 0.82 (expanded); a reversed order puts its own image last
        assert summary[stage]["mAP"] >= 0.75, (stage, summary[stage])
    # re-ranking: the query's own image holds a proposal over the query box whose vector is nearly the
    # query's (the query vector is that box pooled on the same map)
    rerank = load_npz(paths["rerank"])
    assert (rerank["scores"][:, 0] > 0.95).all(), rerank["scores"][:, 0]
    for i, q in enumerate(gnd.queries):
        assert _iou(rerank["boxes"][i, 0], q.box) > 0.5, (q.name, rerank["boxes"][i, 0].tolist(), q.box)


def test_table_says_which_proposals(run, tmp_path):
    out, _, _ = run
    table = report.write_table([out / "tiny.json"], "frcnn", "cosine", tmp_path / "t.md", tmp_path / "t.csv")
    assert list(table["proposals"]) == ["grid"]
    assert "| proposals |" in (tmp_path / "t.md").read_text().splitlines()[2]


def test_gqe_is_refused_with_the_key(run, tmp_path):
    out, paths, _ = run
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["frcnn"]["expand"]["mode"] = "gqe"
    from instance_search.errors import InstanceSearchError

    with pytest.raises(InstanceSearchError, match="frcnn.expand.mode=gqe"):
        steps.expand(params, "cosine", out / "gnd.json", out / "index", paths["rerank"], tmp_path / "e.npz")


def test_features_of_the_earlier_format_or_another_image_list_are_refused(run, tmp_path):
    """One regions.npz (before the shards), or a store of other images: one line saying to re-run extract."""
    from instance_search.errors import InstanceSearchError

    out, _, _ = run
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    old = tmp_path / "old"
    old.mkdir()
    (old / "manifest.json").write_text('{"n_images": 12, "dim": 320, "fallbacks": 0, "config": {}}')
    (old / "regions.npz").write_bytes(b"")
    with pytest.raises(InstanceSearchError, match="earlier version.*re-run the extract step"):
        steps.encode(params, "test", "frcnn", out / "gnd.json", old, out / "model.npz", tmp_path / "index")
    other = tmp_path / "other"
    other.mkdir()
    manifest = (out / "features" / "manifest.json").read_text()
    (other / "manifest.json").write_text(manifest.replace('"n_images": 12', '"n_images": 11'))
    with pytest.raises(InstanceSearchError, match="11 images but the ground truth lists 12; re-run extract"):
        steps.codebook(params, "frcnn", out / "gnd.json", other, tmp_path / "model.npz")
    assert not (tmp_path / "index").exists() and not (tmp_path / "model.npz").exists()
