"""The demo (`make demo`: params.yaml as committed), run once from scratch by Snakemake in a temporary git
copy of the repository, then checked four ways:

- its numbers equal the golden file tests/golden/demo_metrics.json;
- `dvc status` finds the committed dvc.lock reproduced: this run, on this machine, wrote the very bytes
  that `dvc repro` recorded when dvc.lock was made (make dvc-lock), every method and step (DVC says
  "not in cache" of such an output: same hash, not yet cached);
- `dvc repro --force` of blcf's steps (the ones that once differed between the tools: threads) rewrites
  them byte for byte;
- the artifacts pushed to a local-folder DVC remote and pulled into a fresh clone leave `dvc status`
  clean and `dvc repro` with nothing to run.

Slow (about 10 minutes on 2 cores): marked `workflow`. Run them alone with
    python -m pytest -m workflow tests/test_demo_run.py
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import workflow_tools
from workflow_tools import copy_dvc_state, copy_repo, git, output_of, tail

pytestmark = pytest.mark.workflow

DEMO_TIMEOUT = 1800
GOLDEN = Path(__file__).parent / "golden" / "demo_metrics.json"
GOLDEN_KEYS = ("mAP", "NDCG", "seed_map", "seed_ndcg")
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


def test_snakemake_reproduces_the_committed_dvc_lock(demo):
    """Snakemake's outputs are the bytes dvc.lock records (written by `dvc repro`, make dvc-lock): every
    output is "not in cache" (same hash, not cached yet), none "modified", no dependency changed."""
    changed = differences(demo)
    assert changed == {}, ("this Snakemake run did not reproduce the committed dvc.lock (if the code or params "
                           "changed on purpose, run make dvc-lock and commit dvc.lock):\n"
                           + json.dumps(changed, indent=1)[:4000])


def test_dvc_repro_writes_the_bytes_snakemake_wrote(demo):
    """blcf's steps forced through `dvc repro` rewrite every file Snakemake wrote, byte for byte."""
    before = outputs(demo)
    assert any("/blcf/features/" in p for p in before) and "results/tables/blcf_cosine.csv" in before
    out = dvc("repro", "--force", "--downstream", "extract@synthetic-blcf", cwd=demo)
    ran = set(re.findall(r"Running stage '([^']+)'", out))
    assert {"extract@synthetic-blcf", "codebook@synthetic-blcf", "expand@synthetic-blcf-weighted_cosine",
            "tables@blcf-cosine"} <= ran, out[-3000:]
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
