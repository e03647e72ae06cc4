"""The pipeline end to end, with Snakemake and with DVC, on a tiny synthetic benchmark (the demo itself:
tests/test_demo_run.py).

Slow (a couple of minutes each on 2 cores): marked `workflow`. Run them alone with
    python -m pytest -m workflow tests/test_workflow_run.py
Each test works in a temporary copy of the repository.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import workflow_tools
import yaml
from workflow_tools import CODEBOOK_SIZE, copy_repo, get_key, git, output_of, set_key, tail

from instance_search import report

pytestmark = pytest.mark.workflow

RUN_TIMEOUT = 600
DEMO_TIMEOUT = 1800
GOLDEN = Path(__file__).parent / "golden" / "demo_metrics.json"
GOLDEN_KEYS = ("mAP", "NDCG", "seed_map", "seed_ndcg")
STAGES = ("first_stage", "rerank", "expand")

# The tiny benchmark: 3 objects x 4 views + 6 distractors at 320x240, 64-word (sift) and 32-word
# (blcf, the offline MobileNetV2 at the images' own size) codebooks. sift and blcf cover the workflow's
# two kinds of steps (CPU and GPU extraction); every method runs through Snakemake in the demo test
# (tests/test_demo_run.py) and indexes a photo folder in tests/test_photos.py.
TINY = {
    "run.datasets": ["synthetic", "photos"],
    "run.methods": ["sift", "blcf"],
    "run.similarities": ["cosine", "weighted_cosine"],
    "datasets.synthetic.generator.objects": 3,
    "datasets.synthetic.generator.views": 4,
    "datasets.synthetic.generator.distractors": 6,
    "datasets.synthetic.generator.width": 320,
    "datasets.synthetic.generator.height": 240,
    CODEBOOK_SIZE: 64,
    "sift.codebook.sample": 20000,
    "blcf.extract.max_side": 320,
    "blcf.codebook.words": 32,
    "blcf.codebook.pca_dim": 64,
    "figures.queries": 2,
    "figures.results": 3,
}
STEPS_AFTER_CODEBOOK = ("codebook", "encode", "rank", "rerank", "expand", "evaluate", "figures")  # + tables
STEPS_BEFORE_CODEBOOK = ("fetch", "prepare", "extract")


# ---------------------------------------------------------------------------------------- helpers


def snakemake(*targets: str, cwd: Path) -> subprocess.CompletedProcess:
    # targets first: --resources takes several values and would swallow them
    return workflow_tools.snakemake(*targets, "--cores", "2", "--resources", "gpu=1", cwd=cwd, timeout=RUN_TIMEOUT)


def dvc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return workflow_tools.dvc(*args, cwd=cwd, timeout=RUN_TIMEOUT)


@pytest.fixture
def tiny_repo(tmp_path) -> Path:
    """A copy of the repository whose params.yaml describes the tiny benchmark, and a folder of 6 photos
    without ground truth (format: folder) with one query."""
    from instance_search.datasets import synthetic

    root = copy_repo(tmp_path / "repo")
    synthetic.generate(root / "photos", seed=5, objects=2, views=2, distractors=2, width=320, height=240,
                       jpeg_quality=85)
    (root / "photos" / "queries.csv").write_text("image,x1,y1,x2,y2\nobj01_v0.jpg,40,30,280,210\n", encoding="utf-8")
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    params["datasets"]["photos"] = {"source": "local", "format": "folder", "images": "photos/jpg",
                                    "queries": "photos/queries.csv"}
    for key, value in TINY.items():
        set_key(params, key, value)
    write_params(root, params)
    return root


def write_params(root: Path, params: dict) -> None:
    """params.yaml, then dvc.yaml generated again: its stages per method follow run.methods (make dvc-yaml)."""
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    proc = workflow_tools.run([sys.executable, "workflow/dvc_yaml.py"], cwd=root, timeout=300)
    assert proc.returncode == 0, tail(proc)


def digests(root: Path) -> dict[str, str]:
    """sha256 of every table, metrics, per-query and precision-recall file."""
    files = [p for folder in ("results/tables", "results/metrics", "results/per_query", "results/pr")
             for p in sorted((root / folder).rglob("*")) if p.is_file()]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def expected_results() -> set[str]:
    sims, methods, datasets = TINY["run.similarities"], TINY["run.methods"], TINY["run.datasets"]
    return ({f"results/tables/{m}_{s}.{ext}" for m in methods for s in sims for ext in ("md", "csv")}
            | {f"results/tables/options_{s}.{ext}" for s in sims for ext in ("md", "csv")}
            | {f"results/{kind}/{m}_{s}/{d}.{ext}" for m in methods for s in sims for d in datasets
               for kind, ext in (("metrics", "json"), ("per_query", "csv"), ("pr", "csv"))})


# ------------------------------------------------------------------------------------------ tests


def test_snakemake_from_scratch_runs_the_benchmark_and_a_photo_folder(tiny_repo):
    """`snakemake --cores 2 --resources gpu=1` from nothing: every table, metrics, per-query and
    precision-recall file, figure and photo-folder index, and the report. (That two runs from scratch
    write the same bytes, tests/test_demo_run.py checks on the demo: its run must reproduce the
    committed dvc.lock.)"""
    root = tiny_repo
    proc = snakemake(cwd=root)
    assert proc.returncode == 0, tail(proc)
    first = digests(root)
    assert set(first) == expected_results()
    for m in TINY["run.methods"]:
        for s in TINY["run.similarities"]:
            for d in TINY["run.datasets"]:
                assert (root / f"results/figures/{d}_{m}_{s}.png").stat().st_size > 0
                assert (root / f"results/figures/pr/{d}_{m}_{s}.png").stat().st_size > 0
            # the photo folder is indexed and ranked, not evaluated: no row in the tables
            metrics = json.loads((root / f"results/metrics/{m}_{s}/photos.json").read_text(encoding="utf-8"))
            assert metrics["evaluated"] is False and metrics["queries"] == 1
            table = (root / f"results/tables/{m}_{s}.csv").read_text(encoding="utf-8").splitlines()
            assert len(table) == 2 and table[1].startswith("synthetic,")
        assert (root / f"results/photos/{m}/index/manifest.json").is_file()
    for s in TINY["run.similarities"]:  # the options table: synthetic's rows only, a row per metric and method
        table = (root / f"results/tables/options_{s}.csv").read_text(encoding="utf-8").splitlines()
        assert len(table) == 1 + len(report.OPTION_METRICS) * len(TINY["run.methods"])
        assert all(r.startswith("synthetic,") for r in table[1:])
        photos = json.loads((root / f"results/options/{s}/photos-sift.json").read_text(encoding="utf-8"))
        assert photos["evaluated"] is False
    proc = workflow_tools.snakemake("--report", "results/report.html", cwd=root)
    assert proc.returncode == 0, tail(proc)
    html = (root / "results/report.html").read_text(encoding="utf-8", errors="replace")
    assert "Tables" in html and "Figures" in html and "Precision-recall" in html and "blcf_cosine.csv" in html


def test_dvc_codebook_experiment_reruns_codebook_and_after_only(tiny_repo):
    """`dvc exp run -S sift.codebook.words=32` re-runs codebook and every step after it, and
    leaves synthetic, prepare and extract (and their outputs) alone. (sift alone on the benchmark
    only: the behaviour under test is DVC's, and the CPU time is CI's.)"""
    root = tiny_repo
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    set_key(params, "run.methods", ["sift"])
    set_key(params, "run.datasets", ["synthetic"])
    write_params(root, params)
    git("init", "--quiet", cwd=root)
    proc = dvc("init", "--quiet", cwd=root)
    assert proc.returncode == 0, tail(proc)
    git("add", "--all", cwd=root)
    git("commit", "--quiet", "-m", "pipeline", cwd=root)
    proc = dvc("repro", cwd=root)
    assert proc.returncode == 0, tail(proc)
    git("add", "--all", cwd=root)
    git("commit", "--quiet", "-m", "dvc.lock", cwd=root)

    features = root / "results/synthetic/sift/features"
    untouched = [root / "results/synthetic/gnd.json", *sorted(p for p in features.rglob("*") if p.is_file())]
    assert len(untouched) > 1, "extract wrote no feature files"
    mtimes = {p: p.stat().st_mtime_ns for p in untouched}
    metrics_before = {p: (root / p).read_bytes() for p in expected_results()
                      if p.startswith("results/metrics/sift_") and "photos" not in p}

    proc = dvc("exp", "run", "-S", f"{CODEBOOK_SIZE}=32", cwd=root)
    out = output_of(proc)
    assert proc.returncode == 0, tail(proc)
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    skipped = set(re.findall(r"Stage '([^']+)' didn't change, skipping", out))
    ran_steps = {name.split("@")[0].split("-")[0] for name in ran}  # rank-sift@synthetic-cosine -> rank
    assert set(STEPS_AFTER_CODEBOOK) <= ran_steps, f"ran only {sorted(ran)}\n{out[-3000:]}"
    assert not ran_steps & set(STEPS_BEFORE_CODEBOOK), f"re-ran {sorted(ran)}"
    assert {"fetch@synthetic", "prepare@synthetic", "extract-sift@synthetic"} <= skipped, out[-3000:]
    # tables re-run unless the new metrics happen to be byte-identical (DVC compares content)
    metrics_after = {p: (root / p).read_bytes() for p in metrics_before}
    for s in TINY["run.similarities"]:
        same = metrics_after[f"results/metrics/sift_{s}/synthetic.json"] == metrics_before[
            f"results/metrics/sift_{s}/synthetic.json"]
        assert same or f"tables-sift@{s}" in ran, out[-3000:]
    assert {p: p.stat().st_mtime_ns for p in untouched} == mtimes, "the experiment rewrote extract's output"
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    assert get_key(params, CODEBOOK_SIZE) == 32


def test_a_truncated_image_stops_prepare_with_one_line(tiny_repo):
    """A corrupt image: prepare fails with one line naming the file; no later step runs."""
    root = tiny_repo
    proc = snakemake("data/synthetic/manifest.json", cwd=root)
    assert proc.returncode == 0, tail(proc)
    images = sorted((root / "data/synthetic/jpg").glob("*.jpg"))
    assert images, "the synthetic benchmark has no jpg/ images"
    victim = images[len(images) // 2]
    data = victim.read_bytes()
    victim.write_bytes(data[: len(data) // 2])  # a truncated JPEG: valid header, half the data
    before = sorted(p.name for p in (root / "data/synthetic").rglob("*"))

    proc = snakemake(cwd=root)
    assert proc.returncode != 0, "the pipeline accepted a truncated JPEG"
    errors = [ln for ln in output_of(proc).splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, tail(proc)
    assert victim.name in errors[0], errors[0]
    assert "Traceback" not in output_of(proc)
    # nothing after prepare ran, and the data are untouched
    assert not (root / "results/synthetic/gnd.json").exists()
    assert not (root / "results/synthetic/sift").exists()
    for folder in ("tables", "metrics", "per_query", "figures"):
        assert not (root / "results" / folder).exists(), folder
    assert sorted(p.name for p in (root / "data/synthetic").rglob("*")) == before
