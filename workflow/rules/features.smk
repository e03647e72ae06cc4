# Local features with their positions, per image, in resumable shards. Methods whose extraction
# runs a CNN (methods.get(m).uses_gpu) declare one GPU: `--resources gpu=1` runs one at a time.
from instance_search import methods as _methods


rule extract:
    input:
        script="workflow/scripts/extract.py",
        data=rules.fetch.output.manifest,  # the images themselves, listed in gnd.json
        gnd=rules.prepare.output.gnd,
    output:
        features=directory("results/{dataset}/{method}/features"),
    params:
        tracked=tracked_params("compute.threads", "{method}.extract"),
        args=step_args,
    resources:
        gpu=lambda wildcards: int(_methods.get(wildcards.method).uses_gpu),
    threads: THREADS
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
