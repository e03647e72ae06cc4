# Local features with their positions, per image, in resumable shards.
# CNN extraction (every method but sift) declares one GPU: `--resources gpu=1` runs one at a time.


rule extract:
    input:
        script="workflow/scripts/extract.py",
        data="data/{dataset}/manifest.json",  # the images themselves, listed in gnd.json
        gnd="results/{dataset}/gnd.json",
    output:
        features=directory("results/{dataset}/{method}/features"),
    params:
        tracked=tracked_params("{method}.extract"),
    resources:
        gpu=lambda wildcards: 0 if wildcards.method == "sift" else 1,
    log:
        "logs/{dataset}/{method}/extract.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/extract.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Extracting {wildcards.method} features of {wildcards.dataset} (gpu={resources.gpu})"
    shell:
        "python {input.script} --params {PARAMS} --dataset {wildcards.dataset}"
        " --method {wildcards.method} --gnd {input.gnd} --out {output.features} --log {log}"
