# Visual words: k-means on a seeded sample of the database features.


rule codebook:
    input:
        script="workflow/scripts/codebook.py",
        features="results/{dataset}/{method}/features",
        gnd="results/{dataset}/gnd.json",
    output:
        codebook="results/{dataset}/{method}/codebook.npz",
    params:
        tracked=tracked_params("seed", "{method}.codebook"),
    log:
        "logs/{dataset}/{method}/codebook.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/codebook.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Learning the {wildcards.method} codebook of {wildcards.dataset}"
    shell:
        "python {input.script} --params {PARAMS} --method {wildcards.method}"
        " --features {input.features} --gnd {input.gnd} --out {output.codebook} --log {log}"
