# The datasets: fetch makes a dataset's raw files present under data/<name>/ (generated, downloaded
# and checked against workflow/datasets.lock.json, or a local copy checked the same way); prepare
# turns them into the normalised ground-truth file. Later steps depend on data/<name>/manifest.json,
# which fetch rewrites only when what is on disk changed.


rule fetch:
    input:
        script="workflow/scripts/fetch.py",
    output:
        manifest="data/{dataset}/manifest.json",
    params:
        tracked=tracked_params("seed", "datasets.{dataset}"),
    log:
        "logs/{dataset}/fetch.log",
    benchmark:
        "benchmarks/out/{dataset}/fetch.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Fetching {wildcards.dataset} into data/{wildcards.dataset}"
    shell:
        "python {input.script} --params {PARAMS} --dataset {wildcards.dataset}"
        " --data data --lock workflow/datasets.lock.json --log {log}"


rule prepare:
    input:
        script="workflow/scripts/prepare.py",
        data="data/{dataset}/manifest.json",
    output:
        gnd="results/{dataset}/gnd.json",
    params:
        tracked=tracked_params("datasets.{dataset}"),
    log:
        "logs/{dataset}/prepare.log",
    benchmark:
        "benchmarks/out/{dataset}/prepare.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Preparing the ground truth of {wildcards.dataset}"
    shell:
        "python {input.script} --params {PARAMS} --dataset {wildcards.dataset}"
        " --out {output.gnd} --log {log}"
