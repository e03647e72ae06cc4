"""Generate dvc.yaml from the Snakemake rules (``make dvc-yaml``; ``--check`` compares instead).

Snakemake lists its rules (``--list-rules``) and, parsing the workflow again with
INSTANCE_SEARCH_DVC_DUMP set, writes each rule's named inputs, outputs, log and tracked params keys
(workflow/rules/dvc.smk). Each rule becomes a DVC stage: its wildcards a matrix over run.datasets,
run.methods, run.similarities; its command the very ``step_args`` command of the rule; its inputs
dependencies (with src/instance_search); its outputs outs, metrics or uncached outs.
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

ROOT = Path(__file__).resolve().parent.parent
MATRIX = {"dataset": "run.datasets", "method": "run.methods", "similarity": "run.similarities"}
# Outputs DVC keeps in git rather than its cache: small metrics and plots files (dvc exp show and
# dvc plots diff read them from git). Every other output is cached, so `dvc push` / `dvc pull` share
# it; fetch's output is its manifest, not the images (DVC would copy gigabytes of them into its cache
# and delete the folder before the step, losing a resumed download).
METRICS = {"metrics"}
UNCACHED = {"per_query", "pr"}
HEADER = """\
# GENERATED from the Snakemake rules by `make dvc-yaml` (workflow/dvc_yaml.py): do not edit; a test
# checks that this file equals the generated one. The matrices run over run.datasets x run.methods x
# run.similarities of params.yaml.
#   dvc repro                                   everything (dvc.lock records what was run)
#   dvc exp run -S sift.codebook.words=2000      an experiment: codebook and the steps after it
#   dvc metrics show / dvc exp show             the metrics of evaluate, per experiment
# Besides its inputs, every stage depends on its script and on src/instance_search (by content;
# .dvcignore leaves out __pycache__), so a change of code re-runs the stages that use it.
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


def _item(text: str) -> str:
    """Snakemake's {wildcard} -> DVC's ${item.wildcard}."""
    return re.sub(r"\{(\w+)\}", r"${item.\1}", text)


def _value(v):
    if isinstance(v, str):
        return _item(v)
    folders = {os.path.dirname(x) for x in v}
    return _item(folders.pop())  # a list input (one file per dataset) is its folder, as step_args passes it


def _command(rule: dict, wildcards: list[str]) -> str:
    args = []
    for name, value in [*((w, f"${{item.{w}}}") for w in wildcards), *rule["input"].items(), *rule["output"].items()]:
        if name != "script":
            args += [f"--{name.replace('_', '-')}", _value(value)]
    return " ".join(["python", rule["input"]["script"], "--params", "params.yaml", *args, "--log", _item(rule["log"][0])])


def stage(rule: dict) -> dict:
    wildcards = [w for w in MATRIX if any(f"{{{w}}}" in v for v in rule["output"].values())]
    out = {"matrix": {w: f"${{{MATRIX[w]}}}" for w in wildcards}, "cmd": _command(rule, wildcards),
           "deps": [rule["input"]["script"], "src/instance_search",
                    *(_value(v) for k, v in rule["input"].items() if k != "script")]}
    if rule["tracked"]:
        out["params"] = [_item(k) for k in rule["tracked"]]
    for name, path in rule["output"].items():
        kind = "metrics" if name in METRICS else "outs"
        entry = {_item(path): {"cache": False}} if name in METRICS | UNCACHED else _item(path)
        out.setdefault(kind, []).append(entry)
    return out


def render(rules: dict) -> str:
    # a rule with another wildcard (extract_part's part) is a Snakemake job of a step DVC runs whole
    stages = {name: stage(rule) for name, rule in rules.items()
              if set(re.findall(r"\{(\w+)\}", " ".join(rule["output"].values()))) <= set(MATRIX)}
    body = yaml.safe_dump({"stages": stages}, sort_keys=False, width=10_000, default_flow_style=False)
    return HEADER + body + PLOTS


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(ROOT / "dvc.yaml"))
    ap.add_argument("--check", action="store_true", help="exit 1 if OUT differs from the generated file")
    args = ap.parse_args(argv)
    text = render(dump_rules())
    if args.check:
        same = Path(args.out).is_file() and Path(args.out).read_text(encoding="utf-8") == text
        if not same:
            print(f"{args.out} differs from the file generated from the Snakemake rules; run make dvc-yaml", file=sys.stderr)
        return 0 if same else 1
    Path(args.out).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
