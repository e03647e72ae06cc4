# Local features with their positions, per image, in resumable shards. Methods whose extraction
# runs a CNN (methods.get(m).uses_gpu) declare one GPU: `--resources gpu=1` runs one at a time.
#
# Part jobs. compute.parts: {<d>: n}, n > 1 splits each method's extraction into n extract_part jobs (each
# its own cluster job, with its own GPU), whose folders extract then gathers into the features one
# job writes (the same bytes: instance_search.features.parts). DVC runs the step whole (the count is
# not tracked: it changes no byte), so extract_part has no DVC stage.
from instance_search import methods as _methods


def extract_parts(wildcards):
    return int(config["compute"].get("parts", {}).get(wildcards.dataset, 1))


def part_folders(wildcards):
    """The part folders extract gathers; none (it extracts itself) for one part."""
    n = extract_parts(wildcards)
    return [f"results/{wildcards.dataset}/{wildcards.method}/features.parts/{i}-of-{n}" for i in range(n)] if n > 1 else []


def extraction_gpu(wildcards):
    return int(_methods.get(wildcards.method).uses_gpu)


rule extract_part:
    input:
        script="workflow/scripts/extract.py",
        data=rules.fetch.output.manifest,
        gnd=rules.prepare.output.gnd,
        weights=rules.weights.output.manifest,
    output:
        features=directory("results/{dataset}/{method}/features.parts/{part}-of-{of}"),
    params:
        tracked=tracked_params("compute.threads", "{method}.extract"),
        args=step_args,
    resources:
        gpu=extraction_gpu,
    threads: THREADS
    log:
        "logs/{dataset}/{method}/extract-{part}-of-{of}.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/extract-{part}-of-{of}.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Extracting {wildcards.method} features of {wildcards.dataset}, part {wildcards.part} of {wildcards.of} (gpu={resources.gpu})"
    shell:
        STEP


rule extract:
    input:
        script="workflow/scripts/extract.py",
        data=rules.fetch.output.manifest,  # the images themselves, listed in gnd.json
        gnd=rules.prepare.output.gnd,
        weights=rules.weights.output.manifest,  # the pretrained files, fetched before
        parts=part_folders,
    output:
        features=directory("results/{dataset}/{method}/features"),
    params:
        tracked=tracked_params("compute.threads", "{method}.extract"),
        args=step_args,
    resources:
        gpu=lambda wildcards: extraction_gpu(wildcards) if extract_parts(wildcards) == 1 else 0,
    threads: lambda wildcards: THREADS if extract_parts(wildcards) == 1 else 1
    log:
        "logs/{dataset}/{method}/extract.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/extract.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Extracting {wildcards.method} features of {wildcards.dataset} (gpu={resources.gpu})"
    shell:
        STEP
