# Helpers for the rule files; no rules here.
#
# Every rule runs one declared step (src/instance_search/pipeline): its declaration, beside the
# step's function, names the arguments it takes, the params keys it reads, its threads and GPUs.
# A rule adds only the wiring: the paths of its named inputs and outputs (written once; rules
# downstream name them as rules.<rule>.output.<name>), its log and benchmark. `shell: STEP` runs
# `python workflow/scripts/step.py <rule> --params <file> --<name> <value> ... --log <log>`.
#
# Parameters. Every step reads the params file itself (--params {PARAMS}): params.yaml, or the
# complete alternative that a profile names (profiles/full: params-full.yaml). step_params() puts
# the values of the keys the step reads into the rule's params, so Snakemake's `params` rerun
# trigger re-runs the step (and what follows) when one of them changes; DVC tracks the same keys.
#
# Code. The library src/instance_search is not an input: Snakemake compares modification times, so
# every edit there would re-run every step. After changing the library, re-run the steps concerned
# with `snakemake -R <rule> ...`; DVC tracks each stage's own modules by content (dvc.yaml).
import os
import re
import shlex

import yaml
from snakemake.exceptions import WorkflowError

from instance_search.pipeline.build import n_parts
from instance_search.pipeline.declare import folder_of
from instance_search.pipeline.steps import STEPS


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


def learn_on(config, method, dataset):
    """The dataset whose features learn `method`'s model for `dataset` (<method>.codebook.learn_on; absent: itself)."""
    return config[method]["codebook"].get("learn_on", {}).get(dataset, dataset)


def check_learn_on(config, path):
    """Each <method>.codebook.learn_on entry maps a dataset defined under datasets: to another one, extracted in
    this run (run.datasets) when the entry's dataset runs."""
    for method in config["run"]["methods"]:
        for dataset, source in config[method]["codebook"].get("learn_on", {}).items():
            key = f"{path}: key {method}.codebook.learn_on.{dataset}"
            if dataset not in config["datasets"]:
                problem = f"{dataset} is not defined under datasets:; define it there or remove the entry"
            elif source not in config["datasets"]:
                problem = f"{source} is not defined under datasets:; define it there or name one that is"
            elif source == dataset:
                problem = "a dataset learns on itself without an entry; remove it"
            elif dataset in config["run"]["datasets"] and source not in config["run"]["datasets"]:
                problem = (f"{source} is not in run.datasets, whose features are extracted; add it there "
                           "or remove the entry")
            else:
                continue
            raise WorkflowError(f"{key}: {problem}")


def compute_threads(config):
    """compute.threads as a count ('all': the CPUs this process may use)."""
    from instance_search import threads

    return threads.resolve(config["compute"]["threads"])


def alternatives(names):
    """A wildcard constraint that matches exactly one of these names."""
    return "|".join(re.escape(n) for n in sorted(names, key=len, reverse=True))


def _lookup(key):
    node = config
    for part in key.split("."):
        node = node[part]
    return node


def _own_entry(value, wildcards):
    """A codebook section with its learn_on narrowed to this dataset's entry: another dataset's entry changes
    nothing here, so editing it re-runs only that dataset's codebook (and what follows), not every one."""
    if isinstance(value, dict) and "learn_on" in value and "dataset" in wildcards:
        return {**value, "learn_on": value["learn_on"].get(wildcards["dataset"], "")}
    return value


def step_params(name):
    """The rule's params: `tracked` (the values of the keys the step reads) and `args` (its arguments)."""
    s = STEPS[name]

    def tracked(wildcards):
        w = dict(wildcards.items())
        return {key: _own_entry(_lookup(key), w) for key in s.tracked(w)}

    def args(wildcards, input, output):
        values = dict(wildcards.items())
        for key, value in [*input.items(), *output.items()]:
            try:
                values[key] = value if isinstance(value, str) else folder_of(value)
            except ValueError as exc:
                raise WorkflowError(f"rule {name}, input {key}: {exc}")
        try:
            return " ".join(shlex.quote(a) for a in s.arguments(values))
        except KeyError as exc:
            raise WorkflowError(f"rule {name}: {exc.args[0]}; name it among the rule's inputs or outputs")

    tracked.keys = s.params  # read by the dvc.yaml generator (dvc.smk)
    return {"tracked": tracked, "args": args}


def step_threads(name):
    return lambda wildcards: STEPS[name].threads(config, dict(wildcards.items()), THREADS)


def step_gpu(name):
    return lambda wildcards: STEPS[name].gpus(config, dict(wildcards.items()))


def learning_set(path):
    """An input of the dataset whose features learn the model (learn_on), in place of {dataset}'s own: only
    that dataset's files become the codebook's inputs, so no other job gains a dependency."""

    def of(wildcards):
        w = dict(wildcards.items())
        return path.format(**{**w, "dataset": learn_on(config, w["method"], w["dataset"])})

    of.dvc_path = path.replace("{dataset}", "{learn_on}")  # read by dvc.smk: dvc_yaml.py fills it per dataset
    return of


def part_folders(name, folder):
    """The part jobs' folders the step gathers (compute.parts > 1, a step that splits); none else."""

    def folders(wildcards):
        w = dict(wildcards.items())
        if not (STEPS[name].gathers and STEPS[name].gathers(config, w)):
            return []
        n = n_parts(config, w["dataset"])
        return [f"results/{w['dataset']}/{w['method']}/{folder}/{i}-of-{n}" for i in range(n)]

    return folders


STEP = "python workflow/scripts/step.py {rule} --params {PARAMS} {params.args} --log {log}"
