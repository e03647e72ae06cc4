# The datasets: fetch makes a dataset's raw files present under data/<name>/ (generated, downloaded
# and checked against workflow/datasets.lock.json, or a local copy checked the same way); prepare
# turns them into the normalised ground-truth file. Later steps depend on data/<name>/manifest.json,
# which fetch rewrites only when what is on disk changed.


rule fetch:
    input:
    output:
        manifest="data/{dataset}/manifest.json",
    params:
        **step_params("fetch"),
    log:
        "logs/{dataset}/fetch.log",
    benchmark:
        "benchmarks/out/{dataset}/fetch.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Fetching {wildcards.dataset} into data/{wildcards.dataset}"
    shell:
        STEP


rule prepare:
    input:
        data=rules.fetch.output.manifest,
    output:
        gnd="results/{dataset}/gnd.json",
    params:
        **step_params("prepare"),
    log:
        "logs/{dataset}/prepare.log",
    benchmark:
        "benchmarks/out/{dataset}/prepare.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Preparing the ground truth of {wildcards.dataset}"
    shell:
        STEP
