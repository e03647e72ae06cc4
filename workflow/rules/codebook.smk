# What a method learns on the database's features (model.npz): visual words (k-means on a seeded
# sample, after an optional PCA-whitening) for bags of words, a whitening for region vectors.
# A codebook whose device resolves to CUDA (codebook.device: cuda, or auto where this Snakemake sees
# a GPU) declares one GPU, here and in encode (its word assignment); the other codebooks none.
# <method>.codebook.learn_on: {<dataset>: <other>} learns <dataset>'s model on <other>'s ground truth and
# features (the references whiten Oxford on Paris and the reverse: none of the test set leaks into it).
rule codebook:
    input:
        gnd=learning_set(rules.prepare.output.gnd),
        features=learning_set(rules.extract.output.features),
    output:
        model="results/{dataset}/{method}/model.npz",
    params:
        **step_params("codebook"),
    resources:
        gpu=step_gpu("codebook"),
    threads: step_threads("codebook")
    log:
        "logs/{dataset}/{method}/codebook.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/codebook.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Learning the {wildcards.method} model of {wildcards.dataset} on {input.features} (gpu={resources.gpu})"
    shell:
        STEP
