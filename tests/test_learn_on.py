"""A method's model learned on another dataset (<method>.codebook.learn_on), as the references learn
Oxford's whitening on Paris and the reverse: the codebook's inputs are the learning set's, only that set's
extraction becomes a dependency (Snakemake and the generated dvc.yaml), and the tables say where the model
came from. Two tiny generated datasets, A learning gem's whitening on B.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import pytest
import workflow_tools
import yaml
from conftest import require_weights
from workflow_tools import copy_repo, set_key, tail

A, B = "synthetic", "synthb"  # A learns its model on B; B on itself
RUN_TIMEOUT = 600


def _generated(name: str, objects: int, distractors: int) -> dict:
    return {"source": "generate", "format": "oxford", "images": f"data/{name}/jpg", "groundtruth": f"data/{name}/gt",
            "generator": {"objects": objects, "views": 3, "distractors": distractors, "width": 256, "height": 192,
                          "jpeg_quality": 85, "queries": 1}}


def two_datasets(root: Path, learn_on: dict | None = None) -> dict:
    """params.yaml of a copy: gem alone on A and B (tiny, one scale, an 8-d whitening), A learning on B;
    dvc.yaml generated again from it."""
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["datasets"][A] = _generated(A, 3, 4)
    params["datasets"][B] = _generated(B, 2, 8)  # other images: more distractors, fewer objects
    for key, value in {"run.datasets": [A, B], "run.methods": ["gem"], "run.similarities": ["cosine"],
                       "gem.extract.scales": [1.0], "gem.extract.max_side": 256, "gem.extract.workers": 0,
                       "gem.codebook": {"pca_dim": 8, "learn_on": {A: B} if learn_on is None else learn_on}}.items():
        set_key(params, key, value)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return params


def generate_dvc_yaml(root: Path) -> dict:
    proc = workflow_tools.run([sys.executable, "workflow/dvc_yaml.py"], cwd=root, timeout=300)
    assert proc.returncode == 0, tail(proc)
    return yaml.safe_load((root / "dvc.yaml").read_text(encoding="utf-8"))["stages"]


def dry_run(root: Path, *targets: str) -> str:
    proc = workflow_tools.snakemake("-n", *targets, "--cores", "1", cwd=root)
    assert proc.returncode == 0, tail(proc)
    return workflow_tools.output_of(proc)


def rows(path: Path) -> dict[str, dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return {r["dataset"]: r for r in csv.DictReader(f)}


def test_the_dag_gives_a_codebook_only_its_learning_sets_extraction(tmp_path):
    """A's codebook needs B's ground truth and gem features (not A's own); B's model and index need
    nothing of A: no job of one dataset depends on every dataset's extraction."""
    root = copy_repo(tmp_path / "repo")
    two_datasets(root)
    out = dry_run(root, f"results/{A}/gem/model.npz")
    assert f"--gnd results/{B}/gnd.json --features results/{B}/gem/features --model results/{A}/gem/model.npz" in out
    assert f"Extracting gem features of {B}" in out and f"Extracting gem features of {A}" not in out
    out = dry_run(root, f"results/{B}/gem/index")
    assert f"--features results/{B}/gem/features --model results/{B}/gem/model.npz" in out
    assert f"of {A}" not in out and f"results/{A}/" not in out, out[-3000:]


def test_the_generated_dvc_yaml_gives_the_codebook_the_learning_sets_deps(tmp_path):
    """dvc.yaml: the codebook stage of a method with a learn_on is a foreach over run.datasets whose items
    name their learning set (A's deps: B's gnd and features; B's: its own); the other stages stay
    matrices over run.datasets; without a learn_on the codebook stays a matrix too."""
    root = copy_repo(tmp_path / "repo")
    two_datasets(root)
    stages = generate_dvc_yaml(root)
    codebook = stages["codebook-gem"]
    assert codebook["foreach"] == {A: {"dataset": A, "learn_on": B}, B: {"dataset": B, "learn_on": B}}
    deps = codebook["do"]["deps"]
    assert {"results/${item.learn_on}/gnd.json", "results/${item.learn_on}/gem/features"} <= set(deps)
    assert not any("${item.dataset}" in d for d in deps), deps
    assert "--features results/${item.learn_on}/gem/features --model results/${item.dataset}/gem/model.npz" in (
        codebook["do"]["cmd"])
    assert codebook["do"]["outs"] == ["results/${item.dataset}/gem/model.npz"]
    encode = stages["encode-gem"]
    assert encode["matrix"] == {"dataset": "${run.datasets}"}
    assert "results/${item.dataset}/gem/features" in encode["deps"]
    two_datasets(root, learn_on={})
    stages = generate_dvc_yaml(root)
    assert stages["codebook-gem"]["matrix"] == {"dataset": "${run.datasets}"}
    assert "results/${item.dataset}/gem/features" in stages["codebook-gem"]["deps"]


@pytest.mark.parametrize("learn_on, problem", [
    ({A: "nowhere"}, "gem.codebook.learn_on.synthetic: nowhere is not defined under datasets:"),
    ({A: "ukbench500"}, "gem.codebook.learn_on.synthetic: ukbench500 is not in run.datasets"),
    ({A: A}, "gem.codebook.learn_on.synthetic: a dataset learns on itself"),
    ({"nowhere": B}, "gem.codebook.learn_on.nowhere: nowhere is not defined under datasets:"),
])
def test_a_wrong_learning_set_is_one_line_naming_the_key(tmp_path, learn_on, problem):
    root = copy_repo(tmp_path / "repo")
    two_datasets(root, learn_on=learn_on)
    proc = workflow_tools.snakemake("-n", "--cores", "1", cwd=root)
    out = workflow_tools.output_of(proc)
    assert proc.returncode != 0 and f"params.yaml: key {problem}" in out, out[-3000:]
    assert "Traceback" not in out


@pytest.mark.workflow
def test_a_model_learned_on_another_dataset(tmp_path):
    """Snakemake runs A and B: A's model is the whitening learned on B's features (B's own model, and a
    direct call on B's files), not A's; the tables say where each whitening came from."""
    require_weights()
    from instance_search import groundtruth, methods
    from instance_search.io import load_npz

    root = copy_repo(tmp_path / "repo")
    params = two_datasets(root)
    proc = workflow_tools.snakemake("results/tables/gem_cosine.csv", "--cores", "2", "--resources", "gpu=1", cwd=root,
                                    timeout=RUN_TIMEOUT)
    assert proc.returncode == 0, tail(proc)

    def learned(dataset: str) -> dict:
        return methods.indexing("gem").learn(params["gem"]["codebook"], params["seed"],
                                             groundtruth.load(root / f"results/{dataset}/gnd.json"),
                                             root / f"results/{dataset}/gem/features")

    model_a, model_b = (load_npz(root / f"results/{d}/gem/model.npz") for d in (A, B))
    assert set(model_a) == {"pca_mean", "pca_projection"} and model_a["pca_projection"].shape == (8, 1280)
    for key in model_a:
        assert np.array_equal(model_a[key], model_b[key]), key  # the same step on the same files
    on_b, on_a = learned(B), learned(A)
    # a direct call (this process's BLAS threads: equal up to rounding)
    assert all(np.allclose(model_a[k], on_b[k], rtol=1e-4, atol=1e-5) for k in model_a)
    assert not np.allclose(model_a["pca_mean"], on_a["pca_mean"], atol=1e-3)  # not A's own database

    table = rows(root / "results/tables/gem_cosine.csv")
    assert table[A]["whitening"] == B and table[B]["whitening"] == "same dataset"
    assert f"| {B} |" in (root / "results/tables/gem_cosine.md").read_text(encoding="utf-8")

    # A back on itself: its codebook re-runs (new inputs), B's does not (its own entry did not change)
    two_datasets(root, learn_on={})
    out = dry_run(root, "results/tables/gem_cosine.csv")
    assert f"Learning the gem model of {A} on results/{A}/gem/features" in out, out[-3000:]
    assert f"Learning the gem model of {B}" not in out, out[-3000:]


def test_labels_say_where_each_model_was_learned():
    """Each method's labels (metrics files, tables, options tables) for one dataset: gem's whitening (none when
    off), frcnn's when on, the bags of words' words; another dataset by name, else "same dataset"."""
    from instance_search import methods

    def labels(method: str, codebook: dict, dataset: str = A) -> dict:
        return methods.get(method).labels({"extract": {"source": "grid"}, "codebook": codebook}, dataset)

    assert labels("gem", {"pca_dim": 8, "learn_on": {A: B}}) == {"whitening": B}
    assert labels("gem", {"pca_dim": 8, "learn_on": {A: B}}, B) == {"whitening": "same dataset"}
    assert labels("gem", {"pca_dim": 0, "learn_on": {A: B}}) == {"whitening": "none"}
    assert labels("frcnn", {"pca_dim": 8, "learn_on": {A: B}}) == {"proposals": "grid", "whitening": B}
    assert labels("frcnn", {"pca_dim": 0}) == {"proposals": "grid"}
    for bow in ("sift", "blcf", "xfeat"):
        assert labels(bow, {"pca_dim": 0, "learn_on": {A: B}}) == {"words": B}
        assert labels(bow, {"pca_dim": 64}) == {"words": "same dataset"}
