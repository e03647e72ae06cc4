# The index: every image encoded with the model into the files the method searches (index/, with a
# manifest of fingerprints); instance-search query / serve read it.
#
# Part jobs (compute.parts, as extract): a bag of words' nearest words, its costly part, in encode_part
# jobs; encode then gathers them and weights the words (the same bytes). The other methods' encoding
# is one matrix product of the stored vectors: one job whatever the count.


def encode_parts(wildcards):
    """The part folders encode gathers; none (it encodes itself) for one part or one-job methods."""
    n = extract_parts(wildcards)
    if n == 1 or not _methods.get(wildcards.method).encodes_in_parts:
        return []
    return [f"results/{wildcards.dataset}/{wildcards.method}/index.parts/{i}-of-{n}" for i in range(n)]


rule encode_part:
    input:
        script="workflow/scripts/encode.py",
        gnd=rules.prepare.output.gnd,
        features=rules.extract.output.features,
        model=rules.codebook.output.model,
    output:
        index=directory("results/{dataset}/{method}/index.parts/{part}-of-{of}"),
    params:
        tracked=tracked_params("compute.threads", "{method}.encode"),
        args=step_args,
    resources:
        gpu=codebook_gpu,
    threads: THREADS
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
        script="workflow/scripts/encode.py",
        gnd=rules.prepare.output.gnd,
        features=rules.extract.output.features,
        model=rules.codebook.output.model,
        parts=encode_parts,
    output:
        index=directory("results/{dataset}/{method}/index"),
    params:
        tracked=tracked_params("compute.threads", "{method}.encode"),
        args=step_args,
    resources:
        gpu=lambda wildcards: 0 if encode_parts(wildcards) else codebook_gpu(wildcards),  # codebook.smk
    threads: lambda wildcards: 1 if encode_parts(wildcards) else THREADS
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
