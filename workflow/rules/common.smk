# Helpers for the rule files; no rules here.
#
# Commands. Every rule runs `shell: STEP`: the step's script with the params file, then one
# `--<name> <value>` per named input (but the script), named output and wildcard (step_args), and
# its log. A path is thus written once, in the rule; rules downstream name it as
# rules.<rule>.output.<name>, and dvc.yaml is generated from the same rules (dvc.smk).
#
# Parameters. Every script reads the params file itself (--params {PARAMS}): params.yaml, or the
# complete alternative that a profile names (profiles/full: params-full.yaml). A rule's `params:`
# therefore only declares WHICH keys its step depends on: tracked_params() looks their values up
# in the config, so Snakemake's `params` rerun trigger re-runs the step (and what follows) when
# one of them changes. The keys are exactly those that the stage's `params:` lists in dvc.yaml.
#
# Code. Each rule takes its script as an input, so editing a script re-runs that step and the steps
# after it. The library src/instance_search is not an input: Snakemake compares modification
# times, so every edit there would re-run every step. After changing the library, re-run the
# steps concerned with `snakemake -R <rule> ...` (DVC tracks src/instance_search by content).
import os
import re
import shlex

import yaml
from snakemake.exceptions import WorkflowError


def params_file(workflow):
    """The params file the steps read: the last --configfile (a complete params file), else params.yaml."""
    given = list(workflow.overwrite_configfiles or [])
    return os.path.relpath(given[-1]) if given else "params.yaml"


def check_config_is_params_file(config, path):
    """Refuse --config overrides and partial --configfile files: the step scripts would not see them."""
    with open(path, encoding="utf-8") as f:
        on_disk = yaml.safe_load(f)
    if config != on_disk:
        raise WorkflowError(
            f"the configuration differs from {path}, but every step reads {path} itself: "
            f"drop --config and change {path} instead, or give a complete params file with --configfile "
            "(or try a value with: dvc exp run -S key=value)"
        )


def check_run_datasets(config):
    """run.datasets may only name datasets that params.yaml defines under datasets:."""
    unknown = [d for d in config["run"]["datasets"] if d not in config["datasets"]]
    if unknown:
        raise WorkflowError(
            f"params.yaml: key run.datasets: {', '.join(unknown)} not defined under datasets:; "
            "define it there or remove it from run.datasets"
        )


def compute_threads(config):
    """compute.threads as a count ('all': the CPUs this process may use)."""
    from instance_search import threads

    return threads.resolve(config["compute"]["threads"])


def alternatives(names):
    """A wildcard constraint that matches exactly one of these names."""
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


def tracked_params(*keys):
    """params: {key: value} for these dotted params.yaml keys; '{wildcard}' parts are filled in."""

    def values(wildcards):
        fields = dict(wildcards.items())
        out = {}
        for key in keys:
            key = key.format(**fields)
            node = config
            for part in key.split("."):
                node = node[part]
            out[key] = node
        return out

    values.keys = keys  # read by the dvc.yaml generator (dvc.smk)
    return values


def step_args(wildcards, input, output):
    """`--<name> <value>` for every wildcard, named input but the script, and named output, in that
    order; a list input (one file per dataset, say) is passed as its folder. Names with _ become -."""
    args = []
    for name, value in [*wildcards.items(), *input.items(), *output.items()]:
        if name == "script" or (not isinstance(value, str) and not len(value)):  # an empty list: no argument
            continue
        if not isinstance(value, str):
            folders = {os.path.dirname(v) for v in value}
            if len(folders) != 1:
                raise WorkflowError(f"input {name}: a list input must lie in one folder, got {sorted(folders)}")
            value = folders.pop()
        args += [f"--{name.replace('_', '-')}", shlex.quote(str(value))]
    return " ".join(args)


STEP = "python {input.script} --params {PARAMS} {params.args} --log {log}"
