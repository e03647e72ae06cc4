# Bag-of-words matrix and per-image assignment maps (the word at every feature position).


rule encode:
    input:
        script="workflow/scripts/encode.py",
        gnd="results/{dataset}/gnd.json",
        features="results/{dataset}/{method}/features",
        codebook="results/{dataset}/{method}/codebook.npz",
    output:
        bow="results/{dataset}/{method}/bow.npz",
        assign="results/{dataset}/{method}/assign.npz",
    params:
        tracked=tracked_params("{method}.encode"),
    log:
        "logs/{dataset}/{method}/encode.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/encode.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Encoding {wildcards.dataset} with the {wildcards.method} codebook"
    shell:
        "python {input.script} --params {PARAMS} --method {wildcards.method}"
        " --gnd {input.gnd} --features {input.features} --codebook {input.codebook}"
        " --bow {output.bow} --assign {output.assign} --log {log}"
