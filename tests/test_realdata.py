"""The sift method on 500 real UKBench photographs (../shared/data/ukbench-500).

Runs the pipeline's steps (the library functions the scripts call) with the default params.yaml on
the ``ukbench500`` dataset it defines, and checks the quality floor a plain RootSIFT + 1000-word
tf-idf baseline reaches: N-S >= 3.0 and mAP >= 0.80.
"""

import json
from pathlib import Path

import pytest

from instance_search import evaluate, stages
from instance_search.datasets.prepare import prepare

REPO = Path(__file__).resolve().parents[1]
UKBENCH = REPO.parent / "shared" / "data" / "ukbench-500"

pytestmark = pytest.mark.realdata


@pytest.fixture(scope="module")
def ukbench_run(tmp_path_factory):
    if not (UKBENCH / "jpg").is_dir():
        pytest.skip(f"{UKBENCH} is missing: the real-photo tests need ../shared/data/ukbench-500")
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    cfg = params["datasets"]["ukbench500"]
    cfg["images"], cfg["groundtruth"] = str(UKBENCH / "jpg"), str(UKBENCH / "groundtruth.csv")
    out = tmp_path_factory.mktemp("ukbench500")
    gnd = out / "gnd.json"
    prepare(params, "ukbench500", gnd)
    stages.extract(params, "sift", gnd, out / "features")
    stages.train_codebook(params, "sift", out / "features", gnd, out / "codebook.npy")
    stages.encode(params, "sift", gnd, out / "features", out / "codebook.npy", out / "bow.npz", out / "assign.npz")
    results = {}
    for sim in ("cosine", "weighted_cosine"):
        rank = out / f"{sim}_rank.npz"
        stages.rank(params, "sift", sim, gnd, out / "bow.npz", out / "assign.npz", rank)
        stages.rerank(params, "sift", sim, gnd, out / "bow.npz", out / "assign.npz", rank, out / f"{sim}_rerank.npz")
        evaluate.write_evaluation(gnd, rank, out / f"{sim}_rerank.npz", out / f"{sim}.json", out / f"{sim}.csv",
                                  params, "ukbench500", "sift", sim)
        results[sim] = json.loads((out / f"{sim}.json").read_text())
    return results


@pytest.mark.parametrize("similarity", ["cosine", "weighted_cosine"])
def test_sift_on_ukbench500_meets_the_baseline(ukbench_run, similarity):
    first = ukbench_run[similarity]["first_stage"]
    print(similarity, json.dumps(ukbench_run[similarity]))
    assert first["queries"] == 500
    assert first["N-S"] >= 3.0
    assert first["mAP"] >= 0.80
