"""The demo (`make demo`: params.yaml as committed), run once from scratch by Snakemake in a temporary git
copy of the repository, then checked seven ways:

- its numbers equal the golden file tests/golden/demo_metrics.json, and the options tables agree with them;
- `dvc status` finds the committed dvc.lock reproduced: this run, on this machine, wrote the very bytes
  that `dvc repro` recorded when dvc.lock was made (make dvc-lock), every method and step (DVC says
  "not in cache" of such an output: same hash, not yet cached);
- `dvc repro --force` of blcf's extraction and codebook (the steps that once differed between the tools:
  threads) rewrites them byte for byte;
- the artifacts pushed to a local-folder DVC remote and pulled into a fresh clone leave `dvc status`
  clean and `dvc repro` with nothing to run;
- the search steps with rankings kept to their top give every metric byte of the whole rankings;
- (marked `cluster`) gem's steps, its extraction in 4 part jobs, forced through the Slurm profile on a
  one-node Slurm (tests/slurm_cluster.py; where none can be brought up, the test skips and says why)
  rewrite the same bytes.

Slow (about 10 minutes on 2 cores): marked `workflow`. Run them alone with
    python -m pytest -m workflow tests/test_demo_run.py
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import slurm_cluster
import workflow_tools
import yaml
from workflow_tools import copy_dvc_state, copy_repo, git, output_of, tail

from instance_search import report

pytestmark = pytest.mark.workflow

DEMO_TIMEOUT = 1800
GOLDEN = Path(__file__).parent / "golden" / "demo_metrics.json"
GOLDEN_KEYS = ("mAP", "NDCG", "mP@1", "mP@5", "mP@10", "seed_map", "seed_ndcg")
STAGES = ("first_stage", "rerank", "expand")
UP_TO_DATE = "Data and pipelines are up to date."


def demo_numbers(root: Path) -> dict:
    """{method_similarity: {stage: {key: value to 4 decimals}}} of a finished run's metrics files."""
    out = {}
    for path in sorted((root / "results/metrics").glob("*/synthetic.json")):
        m = json.loads(path.read_text(encoding="utf-8"))
        out[path.parent.name] = {stage: {k: round(m[stage][k], 4) for k in GOLDEN_KEYS} for stage in STAGES}
    return out


def outputs(root: Path) -> dict[str, str]:
    """sha256 of every file the pipeline wrote under results/ and data/*/manifest.json (not Snakemake's
    directory markers, which DVC ignores too: .dvcignore)."""
    files = [*(root / "results").rglob("*"), *(root / "data").glob("*/manifest.json")]
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(files) if p.is_file() and p.name != ".snakemake_timestamp"}


def dvc(*args: str, cwd: Path) -> str:
    proc = workflow_tools.dvc(*args, cwd=cwd, timeout=DEMO_TIMEOUT)
    assert proc.returncode == 0, f"dvc {' '.join(args)}:\n{tail(proc)}"
    return output_of(proc)


def status(root: Path) -> dict:
    """`dvc status --json`: {} when every stage's dependencies and outputs match dvc.lock and are in
    DVC's cache."""
    text = dvc("status", "--json", cwd=root)
    return json.loads(text[text.index("{"):])


def differences(root: Path) -> dict:
    """What `dvc status` reports but "not in cache": an output Snakemake wrote with the very hash that
    dvc.lock records, which DVC has not cached yet (`dvc commit` would)."""
    out = {}
    for stage, entries in status(root).items():
        kept = []
        for entry in entries:
            if isinstance(entry, dict) and set(entry) == {"changed outs"}:
                entry = {"changed outs": {p: s for p, s in entry["changed outs"].items() if s != "not in cache"}}
                if not entry["changed outs"]:
                    continue
            kept.append(entry)
        if kept:
            out[stage] = kept
    return out


# The cluster profile, as a one-node Slurm without accounting needs it (job states from squeue), with
# quick status checks and the job logs kept. The steps after a method's extraction are one job (each
# job starts Snakemake, and each step in it starts it again: steps of seconds spend more time starting
# than computing), on one CPU (--cores caps a group's request) so that it runs beside an extraction.
AFTER_EXTRACT = ("codebook", "encode", "rank", "rerank", "expand", "evaluate", "options", "figures", "tables")
SLURM_FLAGS = ("--workflow-profile", "profiles/slurm", "--slurm-status-command", "squeue", "--cores", "1",
               "--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "2",
               "--slurm-keep-successful-logs", "--groups", *(f"{rule}=chain" for rule in AFTER_EXTRACT))


@pytest.fixture(scope="module")
def cluster():
    """A one-node Slurm on this machine (tests/slurm_cluster.py): None when up, else why not."""
    reason = slurm_cluster.start()
    yield reason
    slurm_cluster.stop()


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    """A git repository holding what a clone of this one holds (dvc.lock and the DVC config included),
    after `snakemake --cores 2 --resources gpu=1` (make demo's command) ran in it from nothing."""
    root = copy_repo(tmp_path_factory.mktemp("demo") / "repo")
    copy_dvc_state(root)
    git("init", "--quiet", cwd=root)
    git("add", "--all", cwd=root)
    git("commit", "--quiet", "-m", "a clone", cwd=root)
    proc = workflow_tools.snakemake("--cores", "2", "--resources", "gpu=1", cwd=root, timeout=DEMO_TIMEOUT)
    assert proc.returncode == 0, tail(proc)
    return root


def test_demo_numbers_are_the_golden_ones(demo):
    """Every method x similarity x stage gives exactly the mAP, NDCG, seed_map and seed_ndcg (4 decimals)
    of tests/golden/demo_metrics.json, and the re-ranking and query expansion help where the README says
    they do. Changing the golden file is a deliberate act: python tests/golden/write_golden.py <checkout>
    after a run, with the reason in the commit."""
    got = demo_numbers(demo)
    golden = json.loads(GOLDEN.read_text(encoding="utf-8"))
    assert got == golden, ("the demo's numbers changed; if on purpose, update the golden file "
                           f"(python tests/golden/write_golden.py {demo}) and say why in the commit:\n"
                           + json.dumps(got, indent=1))
    for name, stages in got.items():
        # window / proposal re-ranking beats the first stage for every method on the demo
        assert stages["rerank"]["mAP"] >= stages["first_stage"]["mAP"], name
    for s in ("cosine", "weighted_cosine"):  # blcf's local query expansion beats re-ranking (the BLCF paper)
        assert got[f"blcf_{s}"]["expand"]["mAP"] >= got[f"blcf_{s}"]["rerank"]["mAP"], s
    table = (demo / "results/tables/blcf_cosine.csv").read_text(encoding="utf-8").splitlines()
    row = dict(zip(table[0].split(","), table[1].split(",")))  # the table's final column is the expanded stage
    assert round(float(row["mAP"]), 4) == got["blcf_cosine"]["expand"]["mAP"]
    assert round(float(row["mAP_reranked"]), 4) == got["blcf_cosine"]["rerank"]["mAP"]


# The option each method's default params select, and the pipeline stage that ends with it.
SELECTED = {"sift": ("asmk+sv", "rerank"), "blcf": ("bow+sv", "rerank"), "frcnn": ("regions", "rerank"),
            "gem": ("aqe", "expand"), "xfeat": ("asmk+sv", "rerank")}


def test_options_tables_agree_with_the_pipeline(demo):
    """The options step re-runs each second-stage option from the stored first stage; the option the
    params select gives exactly the pipeline's own stage, and the tables hold a row per method and metric."""
    params = yaml.safe_load((demo / "params.yaml").read_text(encoding="utf-8"))
    assert params["sift"]["search"]["aggregation"] == "asmk" and params["blcf"]["search"]["aggregation"] == "bow"
    assert params["sift"]["rerank"]["mode"] == "sv" and params["blcf"]["rerank"]["mode"] == "sv"
    assert params["sift"]["expand"]["mode"] == "none" and params["gem"]["rerank"]["mode"] == "none"
    for similarity in params["run"]["similarities"]:
        for method, (option, stage) in SELECTED.items():
            options = json.loads((demo / f"results/options/{similarity}/synthetic-{method}.json").read_text())
            metrics = json.loads((demo / f"results/metrics/{method}_{similarity}/synthetic.json").read_text())
            assert options["first_stage"] == metrics["first_stage"], (method, similarity)
            assert options["options"][option] == metrics[stage], (method, similarity, option)
        table = (demo / f"results/tables/options_{similarity}.csv").read_text(encoding="utf-8").splitlines()
        assert len(table) == 1 + len(report.OPTION_METRICS) * len(SELECTED) and table[0].endswith(",best")


def test_rankings_kept_to_their_top_evaluate_as_the_whole_ones(demo, tmp_path):
    """The search steps again with rankings.keep: 5 (the rank files keep the top max(5, rerank.candidates)
    of the demo's 196 database images and locate the labelled ones): every metric, per-query row and
    precision-recall point of every method is the byte the pipeline's rankings (the whole database
    here, as rankings.keep exceeds it) gave."""
    params = yaml.safe_load((demo / "params.yaml").read_text(encoding="utf-8"))
    params["rankings"]["keep"] = 5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    kept = 0
    for method in params["run"]["methods"]:
        here, there = tmp_path / method, demo / "results/synthetic" / method / "cosine"
        common = ["--params", str(tmp_path / "params.yaml"), "--similarity", "cosine",
                  "--gnd", "results/synthetic/gnd.json"]
        index = ["--index", f"results/synthetic/{method}/index"]
        steps = [("rank", [*index, "--rank", here / "rank.npz"]),
                 ("rerank", [*index, "--rank", here / "rank.npz", "--rerank", here / "rerank.npz"]),
                 ("expand", [*index, "--rerank", here / "rerank.npz", "--expand", here / "expand.npz"]),
                 ("evaluate", ["--dataset", "synthetic", "--method", method, "--rank", here / "rank.npz",
                               "--rerank", here / "rerank.npz", "--expand", here / "expand.npz", "--metrics",
                               here / "m.json", "--per-query", here / "q.csv", "--pr", here / "pr.csv"])]
        for step, args in steps:
            proc = workflow_tools.run([sys.executable, "workflow/scripts/step.py", step, *common, *map(str, args)],
                                      cwd=demo, timeout=DEMO_TIMEOUT)
            assert proc.returncode == 0, (method, step, tail(proc))
        with np.load(here / "rank.npz") as r, np.load(there / "rank.npz") as whole:
            assert r["ranks"].shape[1] < whole["ranks"].shape[1] and "located" in r, method
            kept += r["ranks"].shape[1]
        name = f"{method}_cosine/synthetic"
        assert (here / "m.json").read_bytes() == (demo / f"results/metrics/{name}.json").read_bytes(), method
        assert (here / "q.csv").read_bytes() == (demo / f"results/per_query/{name}.csv").read_bytes(), method
        assert (here / "pr.csv").read_bytes() == (demo / f"results/pr/{name}.csv").read_bytes(), method
    assert kept == 4 * 100 + 5, kept  # sift, blcf, frcnn, xfeat keep their 100 candidates, gem rankings.keep


def test_snakemake_reproduces_the_committed_dvc_lock(demo):
    """Snakemake's outputs are the bytes dvc.lock records (written by `dvc repro`, make dvc-lock): every
    output is "not in cache" (same hash, not cached yet), none "modified", no dependency changed."""
    changed = differences(demo)
    assert changed == {}, ("this Snakemake run did not reproduce the committed dvc.lock (if the code or params "
                           "changed on purpose, run make dvc-lock and commit dvc.lock):\n"
                           + json.dumps(changed, indent=1)[:4000])


def test_dvc_repro_writes_the_bytes_snakemake_wrote(demo):
    """blcf's extraction and codebook, the steps that once wrote other bytes under each tool (threads:
    oneDNN's convolutions, OpenBLAS's whitening product), forced through `dvc repro` now: every file is
    the one Snakemake wrote. (Every other output the test above compares with the bytes `dvc repro`
    recorded in dvc.lock.)"""
    before = outputs(demo)
    assert any("/blcf/features/" in p for p in before) and "results/synthetic/blcf/model.npz" in before
    out = dvc("repro", "--force", "--single-item", "extract-blcf@synthetic", "codebook-blcf@synthetic", cwd=demo)
    assert set(re.findall(r"Running stage '([^']+)'", out)) == {"extract-blcf@synthetic", "codebook-blcf@synthetic"}, \
        out[-3000:]
    after = outputs(demo)
    assert set(after) == set(before)
    differ = sorted(p for p in before if before[p] != after[p])
    assert not differ, f"dvc repro wrote other bytes than snakemake: {differ}"
    assert differences(demo) == {}


def test_artifacts_pushed_and_pulled_rerun_nothing(demo, tmp_path):
    """`dvc commit` + `dvc push` to a local-folder remote; a fresh clone's `dvc pull` brings every artifact:
    `dvc status` is clean, `dvc repro` runs nothing, and the tables are the pushed ones."""
    remote = tmp_path / "remote"
    dvc("commit", "--force", cwd=demo)  # Snakemake's outputs into DVC's cache (dvc.lock unchanged)
    dvc("remote", "add", "--default", "shared", str(remote), cwd=demo)
    dvc("push", cwd=demo)
    git("add", "--all", cwd=demo)  # the remote's address, dvc.lock, the metrics and plots files
    git("commit", "--quiet", "--allow-empty", "-m", "remote", cwd=demo)

    clone = tmp_path / "clone"
    git("clone", "--quiet", str(demo), str(clone), cwd=tmp_path)
    dvc("pull", cwd=clone)
    assert status(clone) == {}
    out = dvc("repro", cwd=clone)
    assert "Running stage" not in out and UP_TO_DATE in out, out[-3000:]
    pushed, pulled = outputs(demo), outputs(clone)
    assert {p: pushed[p] for p in pulled} == pulled
    assert "results/tables/blcf_cosine.md" in pulled and "results/synthetic/blcf/index/manifest.json" in pulled


# gem (a CNN: gpu=1) from extraction to its cosine table: the whole demo ran through the profile in 15
# minutes here against 6.5 locally (every step is a Snakemake start in its job), byte-identical to
# dvc.lock; this part keeps CI's time (with sift's steps beside it, the test took 220 s in CI's rehearsal).
SLURM_TARGETS = ("results/tables/gem_cosine.md",)
PARTS = 4


@pytest.mark.cluster
def test_slurm_part_jobs_write_the_bytes_of_the_local_run(demo, cluster):
    """gem's extraction split into 4 part jobs (compute.parts), each asking for the node's GPU
    (--gpus=1), then the gathering and every step to its cosine table in one job, forced through the
    Slurm profile on the one-node cluster (tests/slurm_cluster.py): all completed, and every file they
    rewrote is the one the local run wrote in one extraction job (whose bytes dvc.lock holds: above)."""
    if cluster is not None:
        pytest.skip(f"no Slurm node here: {cluster}")
    before = outputs(demo)
    forced = ("results/synthetic/gem/model.npz", "results/tables/gem_cosine.csv")
    stamps = {p: (demo / p).stat().st_mtime_ns for p in forced}
    committed = (demo / "params.yaml").read_text(encoding="utf-8")
    params = yaml.safe_load(committed)
    params["compute"]["parts"] = {"synthetic": PARTS}
    (demo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    try:
        # the targets first: --forcerun and --groups take several values and would swallow them
        proc = workflow_tools.snakemake(*SLURM_TARGETS, *SLURM_FLAGS, "extract=chain", "--forcerun", "extract",
                                        cwd=demo, timeout=DEMO_TIMEOUT)
        assert proc.returncode == 0, tail(proc)
        assert differences(demo) == {}  # compute.parts is no stage's parameter: it changes no byte
    finally:
        (demo / "params.yaml").write_text(committed, encoding="utf-8")
    logs = sorted((demo / ".snakemake/slurm_logs").rglob("*.log"))
    kinds = [log.relative_to(demo / ".snakemake/slurm_logs").parts[0] for log in logs]
    assert kinds.count("rule_extract_part") == PARTS and sum(k.startswith("group_chain") for k in kinds) == 1, kinds
    assert len(logs) == PARTS + 1, kinds
    jobs = {job: (state, tres) for job, state, tres in slurm_cluster.jobs()}
    assert all(jobs[int(log.stem)][0] == "COMPLETED" for log in logs), jobs
    gpu = sorted(kind for log, kind in zip(logs, kinds) if "gpu" in jobs[int(log.stem)][1])
    assert gpu == ["rule_extract_part"] * PARTS, gpu
    after = outputs(demo)
    parted = sorted(set(after) - set(before))
    assert set(before) <= set(after) and parted and all("/gem/features.parts/" in p for p in parted), parted
    assert all((demo / p).stat().st_mtime_ns > stamps[p] for p in forced), "the forced steps did not run"
    differ = sorted(p for p in before if before[p] != after[p])
    assert not differ, f"the Slurm jobs wrote other bytes than the local run: {differ}"
