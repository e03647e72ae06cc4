# Local features with their positions, per image, in resumable shards. Methods whose extraction
# runs a CNN (its extraction's uses_gpu) declare one GPU: `--resources gpu=1` runs one at a time.
#
# Part jobs. compute.parts: {<d>: n}, n > 1 splits each method's extraction into n extract_part jobs (each
# its own cluster job, with its own GPU), whose folders extract then gathers into the features one
# job writes (the same bytes: instance_search.features.parts). DVC runs the step whole (the count is
# not tracked: it changes no byte), so extract_part has no DVC stage.
rule extract_part:
    input:
        data=rules.fetch.output.manifest,
        gnd=rules.prepare.output.gnd,
        weights=rules.weights.output.manifest,
    output:
        features=directory("results/{dataset}/{method}/features.parts/{part}-of-{of}"),
    params:
        **step_params("extract_part"),
    resources:
        gpu=step_gpu("extract_part"),
    threads: step_threads("extract_part")
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
        data=rules.fetch.output.manifest,  # the images themselves, listed in gnd.json
        gnd=rules.prepare.output.gnd,
        weights=rules.weights.output.manifest,  # the pretrained files, fetched before
        parts=part_folders("extract", "features.parts"),
    output:
        features=directory("results/{dataset}/{method}/features"),
    params:
        **step_params("extract"),
    resources:
        gpu=step_gpu("extract"),
    threads: step_threads("extract")
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
