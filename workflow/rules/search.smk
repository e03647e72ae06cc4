# First-stage ranking of the whole database, local re-ranking of its top results, query expansion.


rule rank:
    input:
        script="workflow/scripts/rank.py",
        gnd="results/{dataset}/gnd.json",
        bow="results/{dataset}/{method}/bow.npz",
        assign="results/{dataset}/{method}/assign.npz",
    output:
        rank="results/{dataset}/{method}/{similarity}/rank.npz",
    params:
        tracked=tracked_params("{method}.search"),
    log:
        "logs/{dataset}/{method}/{similarity}/rank.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/{similarity}/rank.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Ranking {wildcards.dataset} ({wildcards.method}, {wildcards.similarity})"
    shell:
        "python {input.script} --params {PARAMS} --method {wildcards.method}"
        " --similarity {wildcards.similarity} --gnd {input.gnd} --bow {input.bow}"
        " --assign {input.assign} --out {output.rank} --log {log}"


rule rerank:
    input:
        script="workflow/scripts/rerank.py",
        gnd="results/{dataset}/gnd.json",
        bow="results/{dataset}/{method}/bow.npz",
        assign="results/{dataset}/{method}/assign.npz",
        rank="results/{dataset}/{method}/{similarity}/rank.npz",
    output:
        rerank="results/{dataset}/{method}/{similarity}/rerank.npz",
    params:
        tracked=tracked_params("{method}.search", "{method}.rerank"),
    log:
        "logs/{dataset}/{method}/{similarity}/rerank.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/{similarity}/rerank.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Re-ranking {wildcards.dataset} ({wildcards.method}, {wildcards.similarity})"
    shell:
        "python {input.script} --params {PARAMS} --method {wildcards.method}"
        " --similarity {wildcards.similarity} --gnd {input.gnd} --bow {input.bow}"
        " --assign {input.assign} --rank {input.rank} --out {output.rerank} --log {log}"


rule expand:
    input:
        script="workflow/scripts/expand.py",
        gnd="results/{dataset}/gnd.json",
        bow="results/{dataset}/{method}/bow.npz",
        assign="results/{dataset}/{method}/assign.npz",
        rerank="results/{dataset}/{method}/{similarity}/rerank.npz",
    output:
        expand="results/{dataset}/{method}/{similarity}/expand.npz",
    params:
        tracked=tracked_params("{method}.search", "{method}.rerank", "{method}.expand"),
    log:
        "logs/{dataset}/{method}/{similarity}/expand.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/{similarity}/expand.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Query expansion on {wildcards.dataset} ({wildcards.method}, {wildcards.similarity})"
    shell:
        "python {input.script} --params {PARAMS} --method {wildcards.method}"
        " --similarity {wildcards.similarity} --gnd {input.gnd} --bow {input.bow}"
        " --assign {input.assign} --rerank {input.rerank} --out {output.expand} --log {log}"
