"""The frcnn method through the pipeline's steps on a tiny embedded benchmark (grid proposals,
the offline MobileNetV2): files, rankings and the proposal source in the metrics and tables."""

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from instance_search import evaluate, report, stages
from instance_search.datasets import synthetic
from instance_search.datasets.prepare import prepare
from instance_search.features import backbones
from instance_search.io import load_npz

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    if not backbones.weight_file("mobilenet_v2").is_file():
        pytest.skip("mobilenet_v2 weights missing from torchvision's cache: run make install")
    out = tmp_path_factory.mktemp("frcnn")
    data = out / "data"
    synthetic.generate(data, seed=3, objects=3, views=3, distractors=3, width=320, height=240, jpeg_quality=85)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["datasets"]["tiny"] = {"source": "local", "format": "oxford", "images": str(data / "jpg"),
                                  "groundtruth": str(data / "gt")}
    params["frcnn"]["extract"].update(max_side=160, layer="features.17", workers=0)
    gnd = out / "gnd.json"
    prepare(params, "tiny", gnd)
    stages.extract(params, "frcnn", gnd, out / "features")
    stages.train_codebook(params, "frcnn", out / "features", gnd, out / "codebook.npz")
    stages.encode(params, "frcnn", gnd, out / "features", out / "codebook.npz", out / "bow.npz", out / "assign.npz")
    paths = {s: out / f"{s}.npz" for s in ("first_stage", "rerank", "expand")}
    stages.rank(params, "frcnn", "cosine", gnd, out / "bow.npz", out / "assign.npz", paths["first_stage"])
    stages.rerank(params, "frcnn", "cosine", gnd, out / "bow.npz", out / "assign.npz", paths["first_stage"], paths["rerank"])
    stages.expand(params, "frcnn", "cosine", gnd, out / "bow.npz", out / "assign.npz", paths["rerank"], paths["expand"])
    summary = evaluate.write_evaluation(gnd, paths, out / "tiny.json", out / "tiny.csv", params, "tiny", "frcnn",
                                        "cosine", labels={"proposals": "grid"})
    return out, paths, summary


def test_steps_write_rankings_of_every_query(run):
    out, paths, summary = run
    manifest = json.loads((out / "features" / "manifest.json").read_text())
    assert manifest["config"]["proposal_source"] == "grid" and manifest["fallbacks"] == 0
    for stage, path in paths.items():
        ranks = load_npz(path)["ranks"]
        assert ranks.shape[0] == summary["first_stage"]["queries"] == 3
        assert (np.sort(ranks, axis=1) == np.arange(ranks.shape[1])).all(), stage  # permutations
    boxes = load_npz(paths["rerank"])["boxes"]
    assert np.isfinite(boxes).all() and (boxes[..., 2] > boxes[..., 0]).all()
    assert summary["proposals"] == "grid"
    assert 0 < summary["first_stage"]["mAP"] <= 1 and 0 < summary["expand"]["mAP"] <= 1


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
        stages.expand(params, "frcnn", "cosine", out / "gnd.json", out / "bow.npz", out / "assign.npz",
                      paths["rerank"], tmp_path / "e.npz")
