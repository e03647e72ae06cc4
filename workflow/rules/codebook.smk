# What a method learns on the database's features (model.npz): visual words (k-means on a seeded
# sample, after an optional PCA-whitening) for bags of words, a whitening for region vectors.


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
    threads: THREADS
    log:
        "logs/{dataset}/{method}/codebook.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/codebook.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Learning the {wildcards.method} model of {wildcards.dataset}"
    shell:
        STEP
