"""The pipeline is defined twice, as Snakemake rules (workflow/Snakefile) and as DVC stages
(dvc.yaml). These tests check, without running a step, that both are valid and describe the same
jobs: the same commands, outputs, inputs and params.yaml keys. They work on a temporary copy of
the repository, so neither tool writes into the working tree.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from workflow_tools import CODEBOOK_SIZE, REPO, copy_repo, dvc, get_key, git, run, set_key, snakemake

CODE_DEPS = ("workflow/scripts/", "src/instance_search")
WILDCARD_ORDER = ("dataset", "method", "similarity")  # the order of DVC's matrix keys
# DVC's run-cache drops every nested key named like these from its stage hash (treeverse/dvc#10296)
RUN_CACHE_BLIND_KEYS = {"size", "nfiles"}


# ---------------------------------------------------------------------------------------- helpers


def step_scripts() -> list[str]:
    """The scripts that dvc.yaml's commands run (relative to the repository root)."""
    text = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    return sorted(set(re.findall(r"python (workflow/scripts/\w+\.py)", text)))


def copy_workflow(dest: Path) -> Path:
    """Copy what the two tools read. A step script not written yet becomes a placeholder, so the
    wiring is checked on its own (test_every_step_script_exists names what is missing)."""
    copy_repo(dest)
    for script in step_scripts():
        target = dest / script
        if not target.exists():
            target.write_text("raise SystemExit('placeholder: this step is not written yet')\n")
    return dest


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


# Snakemake's jobs, read in a separate interpreter (the API changes the working directory and the
# logging setup). DAG construction has no public API returning jobs with their params, so this
# uses Workflow._prepare_dag/_build_dag, as Snakemake's own --dag/--summary do; it is confined here.
_SNAKEMAKE_JOBS = r"""
import json, sys
from pathlib import Path
from snakemake.api import SnakemakeApi
from snakemake.settings.types import ConfigSettings, DAGSettings, OutputSettings, Quietness, ResourceSettings

root = Path(sys.argv[1]).resolve()
with SnakemakeApi(OutputSettings(quiet={Quietness.ALL})) as api:
    workflow_api = api.workflow(
        snakefile=root / "workflow" / "Snakefile",
        workdir=root,
        resource_settings=ResourceSettings(cores=8, resources={"gpu": 1}),
        config_settings=ConfigSettings(),
    )
    workflow_api.dag(DAGSettings(forceall=True))
    wf = workflow_api._workflow
    wf._prepare_dag(forceall=True, ignore_incomplete=True, lock_warn_only=True, nolock=True)
    wf._build_dag()
    jobs = []
    for job in wf.dag.jobs:
        if job.rule.name == "all":
            continue
        env = job.rule.conda_env
        jobs.append(dict(
            rule=job.rule.name,
            wildcards=dict(job.wildcards_dict),
            input={k: v for k, v in job.input.items()},
            output={k: v for k, v in job.output.items()},
            log=list(job.log),
            benchmark=None if job.benchmark is None else str(job.benchmark),
            conda=None if env is None else str(Path(str(env)).resolve()),
            message=job.message,
            params={k: v for k, v in job.params.items()},
            resources={k: v for k, v in job.resources.items() if not k.startswith("_")},
            shellcmd=job.shellcmd,
        ))
print("JOBS=" + json.dumps(jobs, default=str))
"""


def snakemake_jobs(root: Path) -> list[dict]:
    proc = run([sys.executable, "-c", _SNAKEMAKE_JOBS, str(root)], root)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("JOBS="))
    return json.loads(line[len("JOBS="):])


def dvc_stages(root: Path) -> list[dict]:
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    stages = []
    with Repo(str(root)) as repo:
        for st in repo.index.stages:
            params = {}
            for dep in st.deps:
                if isinstance(dep, ParamsDependency):
                    assert dep.def_path == "params.yaml", f"{st.name}: params come from params.yaml only"
                    params.update({key: None for key in dep.params})
            stages.append(dict(
                name=st.name,
                cmd=st.cmd,
                deps=[d.def_path for d in st.deps if not isinstance(d, ParamsDependency)],
                params=sorted(params),
                outs=[o.def_path for o in st.outs],
                metrics=[o.def_path for o in st.outs if o.metric],
                plots=[o.def_path for o in st.outs if o.plot],
                uncached=[o.def_path for o in st.outs if not o.use_cache],
            ))
    return stages


# --------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    root = copy_workflow(tmp_path_factory.mktemp("repo"))
    proc = dvc("init", "--no-scm", "--quiet", cwd=root)
    assert proc.returncode == 0, proc.stderr
    return root


@pytest.fixture(scope="module")
def jobs(copy) -> list[dict]:
    return snakemake_jobs(copy)


@pytest.fixture(scope="module")
def stages(copy) -> list[dict]:
    return dvc_stages(copy)


@pytest.fixture(scope="module")
def pairs(jobs, stages) -> list[tuple[dict, dict]]:
    """Each Snakemake job with the DVC stage that writes the same files."""
    by_outs = {frozenset(s["outs"]): s for s in stages}
    return [(job, by_outs.get(frozenset(job["output"].values()))) for job in jobs]


def expected_counts(params: dict) -> dict[str, int]:
    d, m, s = (len(params["run"][k]) for k in ("datasets", "methods", "similarities"))
    counts = {"fetch": d, "prepare": d, "extract": d * m, "codebook": d * m, "encode": d * m, "rank": d * m * s,
              "rerank": d * m * s, "expand": d * m * s, "evaluate": d * m * s, "figures": d * m * s, "tables": m * s}
    return counts


# ------------------------------------------------------------------------------------------ tests


def test_every_step_script_exists():
    missing = [s for s in step_scripts() if not (REPO / s).is_file()]
    assert not missing, f"the pipeline runs these scripts, which do not exist yet: {missing}"


def test_snakemake_dry_run_lists_every_step(tmp_path, params):
    root = copy_workflow(tmp_path / "repo")
    before = tree(root)
    proc = snakemake("-n", "--cores", "8", "--resources", "gpu=1", cwd=root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "workflow/profiles/default" in out, "the default profile was not picked up"
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    counts = {rule: int(n) for rule, n in stats.items() if rule not in ("all", "total")}
    assert counts == expected_counts(params)
    written = {p for p in tree(root) - before if not p.startswith(".snakemake")}
    assert not written, f"a dry run wrote into the working tree: {sorted(written)}"


FULL_DATASETS = {"oxford5k", "paris6k", "roxford5k", "rparis6k", "instre", "sculptures6k"}  # + ukbench


def test_full_profile_lists_every_dataset_and_its_gpu_steps(tmp_path):
    full = yaml.safe_load((REPO / "params-full.yaml").read_text(encoding="utf-8"))
    from instance_search.config import load_params

    load_params(REPO / "params-full.yaml", REPO / "workflow/schemas/params.schema.json")  # a valid, complete file
    assert FULL_DATASETS <= set(full["run"]["datasets"])
    assert full["blcf"]["extract"]["backbone"] == "vgg16"
    root = copy_workflow(tmp_path / "repo")
    proc = snakemake("-n", "--profile", "workflow/profiles/full", cwd=root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert {rule: int(n) for rule, n in stats.items() if rule not in ("all", "total")} == expected_counts(full)
    for d in full["run"]["datasets"]:
        assert f"--dataset {d} --data data" in out and f"Extracting blcf features of {d} (gpu=1)" in out, d
        assert f"Extracting sift features of {d} (gpu=0)" in out, d
        assert f"Extracting frcnn features of {d} (gpu=1)" in out, d
    assert full["frcnn"]["extract"]["source"] == "rpn"  # the COCO detector's proposals
    commands = [c for c in re.findall(r"^Shell command: (.*)$", out, flags=re.M) if c != "None"]  # rule all: None
    assert commands and all("--params params-full.yaml" in c for c in commands)


def test_dvc_dag_of_the_full_params_has_every_dataset(tmp_path):
    root = copy_workflow(tmp_path / "repo")
    shutil.copy(REPO / "params-full.yaml", root / "params.yaml")  # DVC reads params.yaml: the documented swap
    assert dvc("init", "--no-scm", "--quiet", cwd=root).returncode == 0
    proc = dvc("dag", "--full", "--md", cwd=root)
    assert proc.returncode == 0, proc.stderr[-3000:]
    for d in FULL_DATASETS:
        for stage in (f"fetch@{d}", f"prepare@{d}", f"extract@{d}-blcf", f"expand@{d}-blcf-cosine",
                      f"evaluate@{d}-sift-weighted_cosine"):
            assert stage in proc.stdout, stage


def test_dvc_stages_are_the_snakemake_jobs(jobs, stages):
    def key_of_job(job):
        values = [job["wildcards"][k] for k in WILDCARD_ORDER if k in job["wildcards"]]
        return job["rule"] + ("@" + "-".join(values) if values else "")

    assert len(jobs) == len(stages)
    assert sorted(map(key_of_job, jobs)) == sorted(s["name"] for s in stages)


def test_same_outputs(pairs):
    for job, stage in pairs:
        assert stage is not None, f"no DVC stage writes the outputs of {job['rule']} {job['wildcards']}: {job['output']}"
        assert stage["name"].split("@")[0] == job["rule"], (stage["name"], job["rule"])


def test_same_commands(pairs):
    for job, stage in pairs:
        assert job["shellcmd"].strip() == stage["cmd"], f"{stage['name']}:\n  snakemake: {job['shellcmd']}\n  dvc:       {stage['cmd']}"


def test_same_inputs_apart_from_code(pairs):
    """Snakemake's inputs are DVC's dependencies, except code (DVC also tracks src/ by content) and
    one case of granularity: `tables` reads the metrics files of every dataset, which DVC sees as
    their folder (it draws the edges from the evaluate stages to that folder)."""
    for job, stage in pairs:
        dvc_inputs = {d for d in stage["deps"] if not d.startswith(CODE_DEPS)}
        smk_inputs = set()
        for name, value in job["input"].items():
            if name == "script":
                continue
            for path in value if isinstance(value, list) else [value]:
                folder = next((d for d in dvc_inputs if path.startswith(d + "/")), None)
                smk_inputs.add(folder or path)
        assert smk_inputs == dvc_inputs, f"{stage['name']}: snakemake {sorted(smk_inputs)} != dvc {sorted(dvc_inputs)}"


def test_code_is_a_dependency(pairs):
    """Both tools re-run a step when its script changes; DVC also when src/instance_search does."""
    for job, stage in pairs:
        script = job["input"].get("script")
        assert script and job["shellcmd"].startswith(f"python {script} "), f"{job['rule']}: its script must be input 'script'"
        assert script in stage["deps"] and "src/instance_search" in stage["deps"], stage["name"]


def test_same_params(pairs, params):
    """A rule's params (its rerun triggers) are the values of the keys its DVC stage lists."""
    for job, stage in pairs:
        tracked = job["params"].get("tracked")
        assert tracked is not None, f"{job['rule']}: declare params: tracked=tracked_params(...)"
        assert sorted(tracked) == stage["params"], stage["name"]
        assert tracked == {k: get_key(params, k) for k in stage["params"]}, stage["name"]


def test_metrics_and_plots_for_dvc(stages):
    evaluate = [s for s in stages if s["name"].startswith("evaluate@")]
    assert evaluate
    for stage in evaluate:
        assert len(stage["metrics"]) == 1 and stage["metrics"][0].endswith(".json")
        csvs = [o for o in stage["outs"] if o.endswith(".csv")]
        assert sorted(o.split("/")[1] for o in csvs) == ["per_query", "pr"]
        assert sorted(stage["uncached"]) == sorted(stage["metrics"] + csvs)
    # the top-level plots draw those folders: per-query AP bars and precision-recall curves
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["plots"]
    assert {next(iter(p)) for p in plots} == {"results/per_query", "results/pr"}


def test_rule_conventions(jobs):
    """Named outputs, a log that the script writes (--log), a benchmark, the conda env, a message."""
    env = (REPO / "envs" / "instance-search.yaml").resolve()
    for job in jobs:
        name = f"{job['rule']} {job['wildcards']}"
        assert job["log"] and job["log"][0].startswith("logs/"), name
        assert f"--log {job['log'][0]}" in job["shellcmd"], name
        assert not re.search(r"[<>|]", job["shellcmd"]), f"{name}: no shell redirection; the script writes its log"
        assert job["benchmark"] and job["benchmark"].startswith("benchmarks/out/"), name
        assert job["conda"] and Path(job["conda"]).name == env.name, name
        assert job["message"], name
        assert all(not k.isdigit() for k in job["output"]), f"{name}: name every output"


def test_extract_declares_a_gpu_only_for_cnn_methods(jobs):
    extract = [j for j in jobs if j["rule"] == "extract"]
    assert extract
    for job in extract:
        expected = 0 if job["wildcards"]["method"] == "sift" else 1
        assert int(job["resources"].get("gpu", 0)) == expected, job["wildcards"]
    for job in jobs:
        if job["rule"] != "extract":
            assert int(job["resources"].get("gpu", 0)) == 0, job["rule"]


def test_a_codebook_experiment_reruns_codebook_and_after_only(stages):
    """`dvc exp run -S sift.codebook.words=N` changes only stages that list sift.codebook.words (or
    a parent key); everything downstream of them re-runs, nothing upstream does."""
    by_name = {s["name"]: s for s in stages}
    producer = {out: s["name"] for s in stages for out in s["outs"]}

    def upstream(stage):
        for dep in stage["deps"]:
            for out, name in producer.items():
                if out == dep or out.startswith(dep + "/") or dep.startswith(out + "/"):
                    yield name

    prefixes = {".".join(CODEBOOK_SIZE.split(".")[:i]) for i in range(1, CODEBOOK_SIZE.count(".") + 2)}
    direct = {s["name"] for s in stages if prefixes & set(s["params"])}
    affected = set(direct)
    changed = True
    while changed:
        changed = False
        for s in stages:
            if s["name"] not in affected and any(u in affected for u in upstream(s)):
                affected.add(s["name"])
                changed = True
    families = {name.split("@")[0] for name in affected}
    assert {n.split("@")[0] for n in direct} == {"codebook"}
    assert families == {"codebook", "encode", "rank", "rerank", "expand", "evaluate", "tables", "figures"}
    assert not any(name.split("@")[0] in ("fetch", "prepare", "extract") for name in affected)
    assert set(by_name) - affected  # something is left alone


def test_no_tracked_param_is_hidden_from_the_run_cache(stages, params):
    """DVC's run-cache leaves nested keys named `size` or `nfiles` out of its stage hash
    (treeverse/dvc#10296). If a stage tracks a section holding such a key, changing it (e.g.
    `dvc exp run -S sift.codebook.words=N`) checks out the outputs of an earlier run with the old
    value instead of re-running. Such keys need another name in params.yaml."""

    def blind(value, path):
        if isinstance(value, dict):
            for key, sub in value.items():
                if key in RUN_CACHE_BLIND_KEYS:
                    yield f"{path}.{key}"
                yield from blind(sub, f"{path}.{key}")
        elif isinstance(value, list):
            for item in value:
                yield from blind(item, path)

    hidden = sorted({k for s in stages for key in s["params"] for k in blind(get_key(params, key), key)})
    assert not hidden, (
        f"params.yaml keys invisible to DVC's run-cache (treeverse/dvc#10296): {hidden}; "
        f"rename them (e.g. size -> words), or `dvc exp run -S` re-uses stale outputs"
    )


def _bad_params(root: Path) -> None:
    params = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    set_key(params, CODEBOOK_SIZE, "abc")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def test_snakemake_rejects_a_wrong_type_naming_the_key(tmp_path):
    root = copy_workflow(tmp_path / "repo")
    _bad_params(root)
    proc = snakemake("-n", "--cores", "8", "--resources", "gpu=1", cwd=root)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    brackets = "".join(f"['{part}']" for part in CODEBOOK_SIZE.split("."))
    assert brackets in out or CODEBOOK_SIZE in out, out[-3000:]
    assert "not of type 'integer'" in out


def test_snakemake_refuses_config_overrides_the_scripts_would_not_see(tmp_path):
    root = copy_workflow(tmp_path / "repo")
    proc = snakemake("-n", "--cores", "1", "--config", "seed=7", cwd=root)
    assert proc.returncode != 0
    assert "params.yaml" in proc.stdout + proc.stderr


@pytest.mark.parametrize("script", step_scripts())
def test_script_rejects_a_wrong_type_in_one_line(tmp_path, stages, script):
    """Every step script validates params.yaml before it does anything (through the runner)."""
    if not (REPO / script).is_file():
        pytest.skip(f"{script} is not written yet")
    root = copy_workflow(tmp_path / "repo")
    _bad_params(root)
    cmd = next(s["cmd"] for s in stages if s["cmd"].startswith(f"python {script} "))
    args = cmd.split()[1:]  # dvc.yaml's command line, run by this interpreter
    proc = run([sys.executable, *args], root, timeout=60)
    assert proc.returncode == 1, proc.stderr[-3000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and CODEBOOK_SIZE in errors[0], proc.stderr[-3000:]
    assert "Traceback" not in proc.stderr
    log = root / args[args.index("--log") + 1]
    assert CODEBOOK_SIZE in log.read_text(encoding="utf-8")


def test_dvc_status_and_dag_on_a_fresh_clone(tmp_path, params):
    origin = copy_workflow(tmp_path / "origin")
    git("init", "--quiet", cwd=origin)
    proc = dvc("init", "--quiet", cwd=origin)
    assert proc.returncode == 0, proc.stderr
    git("add", "--all", cwd=origin)
    git("commit", "--quiet", "-m", "pipeline", cwd=origin)
    clone = tmp_path / "clone"
    git("clone", "--quiet", str(origin), str(clone), cwd=tmp_path)
    for args in (["status"], ["dag"]):
        proc = dvc(*args, cwd=clone)
        assert proc.returncode == 0, f"dvc {' '.join(args)}: {proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    # tables depends on the folder of the metrics files: DVC links it to every evaluate stage
    proc = dvc("dag", "--dot", cwd=clone)
    edges = set(re.findall(r'"([^"]+)" -> "([^"]+)"', proc.stdout))
    run_ = params["run"]
    for m in run_["methods"]:
        for s in run_["similarities"]:
            for d in run_["datasets"]:
                assert (f"evaluate@{d}-{m}-{s}", f"tables@{m}-{s}") in edges
