"""Generate dvc.yaml from the Snakemake rules and the step declarations (``make dvc-yaml``; ``--check``
compares instead).

Snakemake lists its rules (``--list-rules``) and, parsing the workflow again with
INSTANCE_SEARCH_DVC_DUMP set, writes each rule's named inputs, outputs, log and tracked params keys
(workflow/rules/dvc.smk). Each rule becomes a DVC stage: its command the step's own command line
(its declaration's arguments), its inputs and the code it runs dependencies, its outputs outs,
metrics or uncached outs. Wildcards become a matrix over run.datasets and run.similarities; a step
with a {method} runs that method's code, so it becomes one stage per method of run.methods (a DVC
matrix cannot vary a stage's dependencies), each depending on the modules that method's step imports.
The codebook's learning set (<method>.codebook.learn_on) is the dataset itself unless a dataset of
run.datasets learns elsewhere: then that method's codebook stage is a foreach over run.datasets.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from instance_search import methods
from instance_search.pipeline import code
from instance_search.pipeline.declare import folder_of
from instance_search.pipeline.steps import STEPS

ROOT = Path(__file__).resolve().parent.parent
MATRIX = {"dataset": "run.datasets", "similarity": "run.similarities"}
ENTRY = "workflow/scripts/step.py"
# Outputs DVC keeps in git rather than its cache: small metrics and plots files (dvc exp show and
# dvc plots diff read them from git). Every other output is cached, so `dvc push` / `dvc pull` share
# it; fetch's output is its manifest, not the images (DVC would copy gigabytes of them into its cache
# and delete the folder before the step, losing a resumed download).
METRICS = {"metrics"}
UNCACHED = {"per_query", "pr"}
HEADER = """\
# GENERATED from the Snakemake rules and the step declarations by `make dvc-yaml` (workflow/dvc_yaml.py):
# do not edit; a test checks that this file equals the generated one. The matrices run over
# run.datasets x run.similarities of params.yaml; a step of a method is one stage per method of
# run.methods (<step>-<method>): after changing run.methods, run make dvc-yaml. A method whose
# <method>.codebook.learn_on learns a dataset's model on another's features has its codebook stage as a
# foreach over run.datasets, each item naming its learning set: after changing either, run make dvc-yaml.
#   dvc repro                                   everything (dvc.lock records what was run)
#   dvc exp run -S sift.codebook.words=2000      an experiment: codebook and the steps after it
#   dvc metrics show / dvc exp show             the metrics of evaluate, per experiment
# Besides its inputs, every stage depends on the modules its step imports (by content), so a change
# of code re-runs only the stages that run it.
"""
PLOTS = """
# How `dvc plots show` / `dvc plots diff` draw the evaluate stage's CSVs (one plot per file):
# per-query AP of every stage, and the interpolated precision-recall curves.
plots:
  - results/per_query:
      template: bar_horizontal_sorted
      x: ap
      y: query
  - results/pr:
      template: linear
      x: recall
      y: precision
"""


def _snakemake(*args: str, env: dict | None = None) -> str:
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=ROOT, capture_output=True, text=True,
                          env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        sys.exit(f"error: snakemake {' '.join(args)} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
    return proc.stdout


def dump_rules() -> dict:
    names = [ln.strip() for ln in _snakemake("--list-rules").splitlines() if ln.strip() and ln.strip() != "all"]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "rules.json"
        _snakemake("--list-rules", env={"INSTANCE_SEARCH_DVC_DUMP": str(out), "INSTANCE_SEARCH_DVC_RULES": ",".join(names)})
        return json.loads(out.read_text(encoding="utf-8"))


def _item(text: str, method: str | None = None) -> str:
    """Snakemake's {wildcard} -> DVC's ${item.wildcard}; {method} -> the stage's method."""
    if method is not None:
        text = text.replace("{method}", method)
    return re.sub(r"\{(\w+)\}", r"${item.\1}", text)


def _value(v, method: str | None = None) -> str:
    return _item(v if isinstance(v, str) else folder_of(v), method)  # a list input: its folder, as the rule passes it


def _same_set(v):
    """An input of the learning set ({learn_on}) where every dataset learns on itself: the dataset's own."""
    return v.replace("{learn_on}", "{dataset}") if isinstance(v, str) else [_same_set(x) for x in v]


def learning_sets(params: dict, method: str) -> dict[str, str] | None:
    """{dataset: the dataset whose files learn its model} over run.datasets when one of them learns on another
    (<method>.codebook.learn_on); None when each learns on itself."""
    mapping, datasets = params[method]["codebook"].get("learn_on", {}), params["run"]["datasets"]
    return {d: mapping.get(d, d) for d in datasets} if any(d in mapping for d in datasets) else None


def stage(name: str, rule: dict, method: str | None, learning: dict[str, str] | None = None) -> dict:
    """One stage; with ``learning`` (a rule with {learn_on} inputs), a foreach over its datasets whose items
    name the learning set too: a DVC matrix cannot look a value up per item."""
    step = STEPS[name]
    if learning is None:
        rule = {**rule, "input": {k: _same_set(v) for k, v in rule["input"].items()}}
    wildcards = [w for w in MATRIX if any(f"{{{w}}}" in v for v in rule["output"].values())]
    values = {w: f"${{item.{w}}}" for w in wildcards}
    if method is not None:
        values["method"] = method
    values.update({k: _value(v, method) for k, v in [*rule["input"].items(), *rule["output"].items()]})
    cmd = ["python", ENTRY, name, "--params", "params.yaml", *step.arguments(values), "--log",
           _item(rule["log"][0], method)]
    out = {"matrix": {w: f"${{{MATRIX[w]}}}" for w in wildcards}} if wildcards else {}
    out["cmd"] = " ".join(cmd)
    out["deps"] = [ENTRY, *code.step_files(step, method), *(_value(v, method) for v in rule["input"].values())]
    if rule["tracked"]:
        out["params"] = [_item(k, method) for k in rule["tracked"]]
    for key, path in rule["output"].items():
        kind = "metrics" if key in METRICS else "outs"
        entry = {_item(path, method): {"cache": False}} if key in METRICS | UNCACHED else _item(path, method)
        out.setdefault(kind, []).append(entry)
    if learning is not None:
        out.pop("matrix")
        return {"foreach": {d: {"dataset": d, "learn_on": src} for d, src in learning.items()}, "do": out}
    return out


def render(rules: dict, params: dict) -> str:
    run_methods = params["run"]["methods"]
    stages = {}
    for name, rule in rules.items():
        wildcards = set(re.findall(r"\{(\w+)\}", " ".join(rule["output"].values())))
        if not wildcards <= {*MATRIX, "method"}:
            continue  # a rule with another wildcard (extract_part's part) is a Snakemake job of a step DVC runs whole
        if "method" in wildcards:
            learns = any("{learn_on}" in str(v) for v in rule["input"].values())
            stages.update({f"{name}-{m}": stage(name, rule, m, learning_sets(params, m) if learns else None)
                           for m in run_methods})
        else:
            stages[name] = stage(name, rule, None)
    body = yaml.safe_dump({"stages": stages}, sort_keys=False, width=10_000, default_flow_style=False)
    return HEADER + body + PLOTS


def _params() -> dict:
    with open(ROOT / "params.yaml", encoding="utf-8") as f:
        params = yaml.safe_load(f)
    for name in params["run"]["methods"]:
        methods.module(name, "family")  # an unknown name: the registry's one-line error
    return params


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(ROOT / "dvc.yaml"))
    ap.add_argument("--check", action="store_true", help="exit 1 if OUT differs from the generated file")
    args = ap.parse_args(argv)
    text = render(dump_rules(), _params())
    if args.check:
        same = Path(args.out).is_file() and Path(args.out).read_text(encoding="utf-8") == text
        if not same:
            print(f"{args.out} differs from the file generated from the Snakemake rules; run make dvc-yaml", file=sys.stderr)
        return 0 if same else 1
    Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
