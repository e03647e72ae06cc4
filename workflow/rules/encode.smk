# The index: every image encoded with the model into the files the method searches (index/, with a
# manifest of fingerprints); instance-search query / serve read it.
#
# Part jobs (compute.parts, as extract): a bag of words' nearest words, its costly part, in encode_part
# jobs; encode then gathers them and weights the words (the same bytes). The other methods' encoding
# is one matrix product of the stored vectors: one job whatever the count.


rule encode_part:
    input:
        gnd=rules.prepare.output.gnd,
        features=rules.extract.output.features,
        model=rules.codebook.output.model,
    output:
        index=directory("results/{dataset}/{method}/index.parts/{part}-of-{of}"),
    params:
        **step_params("encode_part"),
    resources:
        gpu=step_gpu("encode_part"),
    threads: step_threads("encode_part")
    log:
        "logs/{dataset}/{method}/encode-{part}-of-{of}.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/encode-{part}-of-{of}.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Encoding {wildcards.dataset} with the {wildcards.method} model, part {wildcards.part} of {wildcards.of} (gpu={resources.gpu})"
    shell:
        STEP


rule encode:
    input:
        gnd=rules.prepare.output.gnd,
        features=rules.extract.output.features,
        model=rules.codebook.output.model,
        parts=part_folders("encode", "index.parts"),
    output:
        index=directory("results/{dataset}/{method}/index"),
    params:
        **step_params("encode"),
    resources:
        gpu=step_gpu("encode"),
    threads: step_threads("encode")
    log:
        "logs/{dataset}/{method}/encode.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/encode.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Encoding {wildcards.dataset} with the {wildcards.method} model (gpu={resources.gpu})"
    shell:
        STEP
