# What a method learns on the database's features (model.npz): visual words (k-means on a seeded
# sample, after an optional PCA-whitening) for bags of words, a whitening for region vectors.
# A codebook whose device resolves to CUDA (codebook.device: cuda, or auto where this Snakemake sees
# a GPU) declares one GPU, here and in encode (its word assignment); the other codebooks none.
from instance_search.retrieval import vocabulary as _vocabulary


def codebook_gpu(wildcards):
    return int(_vocabulary.runs_on_gpu(config[wildcards.method]["codebook"].get("device", "cpu")))


rule codebook:
    input:
        script="workflow/scripts/codebook.py",
        gnd=rules.prepare.output.gnd,
        features=rules.extract.output.features,
    output:
        model="results/{dataset}/{method}/model.npz",
    params:
        tracked=tracked_params("compute.threads", "seed", "{method}.codebook"),
        args=step_args,
    resources:
        gpu=codebook_gpu,
    threads: THREADS
    log:
        "logs/{dataset}/{method}/codebook.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/codebook.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Learning the {wildcards.method} model of {wildcards.dataset} (gpu={resources.gpu})"
    shell:
        STEP
