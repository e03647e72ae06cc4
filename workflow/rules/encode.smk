# The index: every image encoded with the model into the files the method searches (index/, with a
# manifest of fingerprints); instance-search query / serve read it.


rule encode:
    input:
        script="workflow/scripts/encode.py",
        gnd=rules.prepare.output.gnd,
        features=rules.extract.output.features,
        model=rules.codebook.output.model,
    output:
        index=directory("results/{dataset}/{method}/index"),
    params:
        tracked=tracked_params("compute.threads", "{method}.encode"),
        args=step_args,
    threads: THREADS
    log:
        "logs/{dataset}/{method}/encode.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/encode.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Encoding {wildcards.dataset} with the {wildcards.method} model"
    shell:
        STEP
