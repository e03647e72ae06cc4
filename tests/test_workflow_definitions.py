"""The pipeline is defined once, as Snakemake rules (Snakefile, workflow/rules/*.smk); dvc.yaml is
generated from them (make dvc-yaml). These tests check, without running a step, that the committed
dvc.yaml is the generated one, that both tools read it as the same pipeline, and the conventions of
the rules. They work on a temporary copy of the repository, so neither tool writes into the working tree.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
import yaml
from workflow_tools import CODEBOOK_SIZE, REPO, copy_dvc_state, copy_repo, dvc, get_key, git, run, set_key, snakemake

# DVC's run-cache drops every nested key named like these from its stage hash (treeverse/dvc#10296)
RUN_CACHE_BLIND_KEYS = {"size", "nfiles"}
RULE_FILES = sorted((REPO / "workflow" / "rules").glob("*.smk"))


# ---------------------------------------------------------------------------------------- helpers


def step_scripts() -> list[str]:
    """The scripts that dvc.yaml's commands run (relative to the repository root)."""
    text = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    return sorted(set(re.findall(r"python (workflow/scripts/\w+\.py)", text)))


def step_names() -> list[str]:
    """The steps that dvc.yaml's commands run (python workflow/scripts/step.py <step> ...)."""
    text = (REPO / "dvc.yaml").read_text(encoding="utf-8")
    return sorted(set(re.findall(r"python workflow/scripts/step\.py (\w+) ", text)))


def family(stage_name: str) -> str:
    """rank-sift@synthetic-cosine -> rank (a step of a method is one stage per method)."""
    return stage_name.split("@")[0].split("-")[0]


def copy_workflow(dest: Path) -> Path:
    return copy_repo(dest)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def rule_blocks() -> dict[str, str]:
    """{rule name: its text} of every rule in the rule files."""
    blocks = {}
    for f in RULE_FILES:
        text = f.read_text(encoding="utf-8")
        for m in re.finditer(r"^rule (\w+):\n((?:[ \t]+.*\n|\n)*)", text, flags=re.M):
            blocks[m.group(1)] = m.group(2)
    return blocks


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
def stages(copy) -> list[dict]:
    return dvc_stages(copy)


def expected_counts(params: dict) -> dict[str, int]:
    d, m, s = (len(params["run"][k]) for k in ("datasets", "methods", "similarities"))
    counts = {"fetch": d, "weights": m, "prepare": d, "extract": d * m, "codebook": d * m, "encode": d * m,
              "rank": d * m * s, "rerank": d * m * s, "expand": d * m * s, "evaluate": d * m * s, "figures": d * m * s, "pr_figure": d * m * s, "tables": m * s,
              "options": d * m * s, "options_table": s}
    return counts


# ------------------------------------------------------------------------------------------ tests


def test_every_step_script_exists():
    assert step_scripts() == ["workflow/scripts/step.py"]  # one entry point runs every declared step
    missing = [s for s in step_scripts() if not (REPO / s).is_file()]
    assert not missing, f"the pipeline runs these scripts, which do not exist yet: {missing}"


def test_snakemake_dry_run_lists_every_step(tmp_path, params):
    root = copy_workflow(tmp_path / "repo")
    before = tree(root)
    proc = snakemake("-n", "--cores", "8", "--resources", "gpu=1", cwd=root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "profiles/default" in out, "the default profile was not picked up"
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
    proc = snakemake("-n", "--profile", "profiles/full", cwd=root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert {rule: int(n) for rule, n in stats.items() if rule not in ("all", "total")} == expected_counts(full)
    for d in full["run"]["datasets"]:
        assert f"--dataset {d} --manifest data/{d}/manifest.json" in out, d
        assert f"Extracting blcf features of {d} (gpu=1)" in out, d
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
        for stage in (f"fetch@{d}", f"prepare@{d}", f"extract-blcf@{d}", f"expand-blcf@{d}-cosine",
                      f"evaluate-sift@{d}-weighted_cosine"):
            assert stage in proc.stdout, stage


def test_committed_dvc_yaml_is_the_one_generated_from_the_rules(tmp_path):
    """dvc.yaml is generated from the Snakemake rules (make dvc-yaml): the committed file must be it."""
    root = copy_workflow(tmp_path / "repo")
    proc = run([sys.executable, "workflow/dvc_yaml.py", str(tmp_path / "generated.yaml")], root, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    generated = (tmp_path / "generated.yaml").read_text(encoding="utf-8")
    assert (REPO / "dvc.yaml").read_text(encoding="utf-8") == generated, "dvc.yaml is stale: run make dvc-yaml"
    proc = run([sys.executable, "workflow/dvc_yaml.py", "--check"], root, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_check_catches_a_rule_change(tmp_path):
    """The generated-file check bites: an output renamed in a rule file makes the committed dvc.yaml stale."""
    root = copy_workflow(tmp_path / "repo")
    rules = root / "workflow" / "rules" / "search.smk"
    rules.write_text(rules.read_text(encoding="utf-8").replace("/rank.npz", "/first.npz"), encoding="utf-8")
    proc = run([sys.executable, "workflow/dvc_yaml.py", "--check"], root, timeout=120)
    assert proc.returncode == 1 and "make dvc-yaml" in proc.stderr


def test_dvc_stages_cover_every_rule(stages, params):
    expected = expected_counts(params)
    got: dict[str, int] = {}
    for s in stages:
        got[family(s["name"])] = got.get(family(s["name"]), 0) + 1
    assert got == expected
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text(encoding="utf-8"))["plots"]
    assert {next(iter(p)) for p in plots} == {"results/per_query", "results/pr"}


def test_code_is_a_dependency(stages):
    """DVC re-runs a stage when the step entry point or a module its step imports changes."""
    for s in stages:
        script = s["cmd"].split()[1]
        assert script in s["deps"] and "src/instance_search/pipeline/runner.py" in s["deps"], s["name"]
        assert "src/instance_search" not in s["deps"], s["name"]  # its modules, not the whole package


def _code_users(stages, module: str) -> set[str]:
    return {s["name"] for s in stages if f"src/instance_search/{module}" in s["deps"]}


def test_a_retrieval_module_reruns_only_the_stages_that_import_it(stages, params):
    """The spatial verification is the bag-of-words family's search code: a change to it re-runs their
    search and evaluation stages, never an extraction, a codebook or an encoding (their modules do
    not import it), a download, a table, nor any stage of gem or frcnn."""
    searching = ("rank", "rerank", "expand", "options", "evaluate")
    users = _code_users(stages, "retrieval/verification.py")
    words = [m for m in params["run"]["methods"] if m in ("sift", "blcf", "xfeat")]
    assert {n.split("@")[0] for n in users} == {f"{step}-{m}" for step in searching for m in words}
    diffusion = {n.split("@")[0] for n in _code_users(stages, "retrieval/diffusion.py")}
    assert diffusion == {f"{step}-gem" for step in searching}
    # the vocabulary is the bags' model: their codebook and encoding depend on it, and so does the search
    kmeans = {n.split("@")[0] for n in _code_users(stages, "retrieval/vocabulary.py")}
    assert kmeans == {f"{step}-{m}" for step in ("codebook", "encode", *searching) for m in words}
    # the extraction of a method depends on its extraction's module, not on its search code
    extract = next(s for s in stages if s["name"].startswith("extract-sift@"))
    assert "src/instance_search/methods/local_features.py" in extract["deps"]
    assert not {"src/instance_search/methods/bow.py", "src/instance_search/retrieval/asmk.py",
                "src/instance_search/engine.py", "src/instance_search/evaluate.py"} & set(extract["deps"])
    # a dataset adapter is the data steps' alone
    assert {family(n) for n in _code_users(stages, "datasets/oxford.py")} == {"fetch", "prepare"}


def test_metrics_and_plots_for_dvc(stages):
    evaluate = [s for s in stages if family(s["name"]) == "evaluate"]
    assert evaluate
    for s in evaluate:
        assert len(s["metrics"]) == 1 and s["metrics"][0].startswith("results/metrics/"), s["name"]
        assert set(s["uncached"]) >= {*s["metrics"], *(o for o in s["outs"] if o.startswith(("results/per_query/",
                                                                                             "results/pr/")))}


def test_rule_conventions():
    """Named outputs, a log under logs/ that the script writes, a benchmark, the conda env, a message, and
    the one command shape (STEP: every path an argument named after the rule's input or output)."""
    blocks = rule_blocks()
    assert {"fetch", "weights", "prepare", "extract", "codebook", "encode", "rank", "rerank", "expand", "evaluate",
            "tables", "figures"} <= set(blocks)
    for name, body in blocks.items():
        if name == "all":
            continue
        for part in ("log:", "benchmark:", "conda:", "message:", f'**step_params("{name}")'):
            assert part in body, f"rule {name}: no {part}"
        assert re.search(r"shell:\s*\n\s*STEP\s*$", body), f"rule {name}: shell must be STEP"
        assert 'logs/' in body.split("log:")[1].split("\n")[1], name
    common = (REPO / "workflow/rules/common.smk").read_text(encoding="utf-8")
    assert 'STEP = "python workflow/scripts/step.py {rule} --params {PARAMS} {params.args} --log {log}"' in common


def test_no_rule_names_a_method():
    """Method knowledge lives in the methods registry: no rule file or script tests a method's name."""
    for f in [*RULE_FILES, *(REPO / "workflow" / "scripts").glob("*.py"), REPO / "Snakefile"]:
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"""==\s*["'](sift|blcf|frcnn)["']|["'](sift|blcf|frcnn)["']\s*==""", text), f


def test_extract_declares_a_gpu_only_for_cnn_methods(tmp_path, params):
    root = copy_workflow(tmp_path / "repo")
    proc = snakemake("-n", "--cores", "8", "--resources", "gpu=1", cwd=root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for d in params["run"]["datasets"]:
        assert f"Extracting sift features of {d} (gpu=0)" in out
        for m in set(params["run"]["methods"]) - {"sift"}:
            assert f"Extracting {m} features of {d} (gpu=1)" in out, m


def test_parts_split_extraction_into_jobs_that_keep_their_gpu(tmp_path, params):
    """compute.parts: {synthetic: 4}: four extract_part jobs per method (the CNN ones asking for a GPU),
    then extract gathers them on one thread without a GPU; bags of words encode in four encode_part
    jobs too; dvc.yaml does not change (DVC runs each step whole)."""
    root = copy_workflow(tmp_path / "repo")
    changed = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))
    changed["compute"]["parts"] = {"synthetic": 4}
    (root / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False), encoding="utf-8")
    proc = snakemake("-n", "--cores", "8", "--resources", "gpu=1", cwd=root)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-3000:]
    for m in params["run"]["methods"]:
        gpu = int(m != "sift")
        for i in range(4):
            assert f"Extracting {m} features of synthetic, part {i} of 4 (gpu={gpu})" in out, (m, i)
        assert f"Extracting {m} features of synthetic (gpu=0)" in out, m
    methods, words = params["run"]["methods"], [m for m in params["run"]["methods"] if m in ("sift", "blcf", "xfeat")]
    for m in words:  # bags of words encode in parts too (the nearest words); the others in one job
        assert f"Encoding synthetic with the {m} model, part 3 of 4 (gpu=0)" in out, m
    counts = dict(re.findall(r"^((?:extract|encode)\w*)\s+(\d+)$", out, flags=re.M))  # the job count table
    assert counts == {"extract_part": str(4 * len(methods)), "extract": str(len(methods)),
                      "encode_part": str(4 * len(words)), "encode": str(len(methods))}, counts
    proc = run([sys.executable, "workflow/dvc_yaml.py", "--check"], cwd=root)
    assert proc.returncode == 0, proc.stdout + proc.stderr


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
    families = {family(name) for name in affected}
    assert {family(n) for n in direct} == {"codebook"}
    assert families == {"codebook", "encode", "rank", "rerank", "expand", "evaluate", "tables", "figures", "pr_figure",
                        "options", "options_table"}
    assert not any(family(name) in ("fetch", "prepare", "extract") for name in affected)
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


@pytest.mark.parametrize("step", step_names())
def test_script_rejects_a_wrong_type_in_one_line(tmp_path, stages, step):
    """Every step validates params.yaml before it does anything (through the runner)."""
    root = copy_workflow(tmp_path / "repo")
    _bad_params(root)
    cmd = next(s["cmd"] for s in stages if s["cmd"].startswith(f"python workflow/scripts/step.py {step} "))
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
                assert (f"evaluate-{m}@{d}-{s}", f"tables-{m}@{s}") in edges


COMPUTE_STEPS = {"extract", "codebook", "encode", "rank", "rerank", "expand", "options"}
PART_JOBS = {"extract_part", "encode_part"}  # Snakemake's jobs of a step DVC runs whole
GATHERING = {"extract", "encode"}  # with parts they only gather: one thread


def test_compute_steps_declare_and_track_their_threads(stages):
    """The compute steps reserve compute.threads in Snakemake (the others one thread; a gathering of
    parts one), and their stages list it, as it changes their results (params.yaml says where)."""
    from instance_search.pipeline.steps import STEPS

    blocks = rule_blocks()
    for name, body in blocks.items():
        if name == "all":
            continue
        declared = re.findall(r"^    threads: (.+)$", body, flags=re.M)
        assert declared == ([f'step_threads("{name}")'] if name in COMPUTE_STEPS | PART_JOBS else []), name
        assert STEPS[name].compute == (name in COMPUTE_STEPS | PART_JOBS), name
        assert (STEPS[name].gathers is not None) == (name in GATHERING), name
    params = {"compute": {"threads": 2, "parts": {"d": 3}}, "sift": {"codebook": {"device": "cpu"}}}
    assert STEPS["extract"].threads(params, {"dataset": "d", "method": "sift"}, 2) == 1  # it gathers
    assert STEPS["extract"].threads(params, {"dataset": "e", "method": "sift"}, 2) == 2
    assert STEPS["rank"].threads(params, {"method": "sift"}, 2) == 2
    assert STEPS["tables"].threads(params, {"method": "sift"}, 2) == 1
    assert COMPUTE_STEPS | PART_JOBS <= set(blocks)
    for s in stages:
        assert ("compute.threads" in s["params"]) == (family(s["name"]) in COMPUTE_STEPS), s["name"]


def _stale(entries) -> list:
    """The lines of `dvc status --json` that say a dependency changed, not merely that a file is absent."""
    found = []
    for entry in entries:
        if isinstance(entry, dict):
            for kind, changes in entry.items():
                for path, state in (changes.items() if isinstance(changes, dict) else ()):
                    states = state.values() if isinstance(state, dict) else [state]
                    if kind == "changed deps" and any(s != "deleted" for s in states):
                        found.append(f"{path}: {state}")
    return found


def test_committed_dvc_lock_matches_the_code_and_params(tmp_path):
    """dvc.lock records the code, scripts and params values of the demo's last `dvc repro`; a change to
    any of them without `make dvc-lock` makes it stale (the demo test then fails after 10 minutes: this
    says so in seconds). Outputs are absent here, so only changed dependencies count."""
    import json

    root = copy_workflow(tmp_path / "repo")
    copy_dvc_state(root)
    git("init", "--quiet", cwd=root)
    proc = dvc("status", "--json", cwd=root)
    assert proc.returncode == 0, proc.stderr[-2000:]
    status = json.loads(proc.stdout[proc.stdout.index("{"):])
    lock = yaml.safe_load((REPO / "dvc.lock").read_text(encoding="utf-8"))
    assert set(lock["stages"]) == set(status), "dvc.lock lacks stages of dvc.yaml: run make dvc-lock"
    stale = sorted({line for entries in status.values() for line in _stale(entries)})
    assert not stale, f"dvc.lock is stale (run make dvc-lock and commit dvc.lock): {stale[:10]}"
