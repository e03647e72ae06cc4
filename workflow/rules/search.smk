# First-stage ranking of the whole database, local re-ranking of its top candidates, query
# expansion: three steps of one retrieve() (instance_search.engine), each writing its ranking.


rule rank:
    input:
        gnd=rules.prepare.output.gnd,
        index=rules.encode.output.index,
    output:
        rank="results/{dataset}/{method}/{similarity}/rank.npz",
    params:
        **step_params("rank"),
    threads: step_threads("rank")
    log:
        "logs/{dataset}/{method}/{similarity}/rank.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/{similarity}/rank.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Ranking {wildcards.dataset} ({wildcards.method}, {wildcards.similarity})"
    shell:
        STEP


rule rerank:
    input:
        gnd=rules.prepare.output.gnd,
        index=rules.encode.output.index,
        rank=rules.rank.output.rank,
    output:
        rerank="results/{dataset}/{method}/{similarity}/rerank.npz",
    params:
        **step_params("rerank"),
    threads: step_threads("rerank")
    log:
        "logs/{dataset}/{method}/{similarity}/rerank.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/{similarity}/rerank.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Re-ranking {wildcards.dataset} ({wildcards.method}, {wildcards.similarity})"
    shell:
        STEP


rule expand:
    input:
        gnd=rules.prepare.output.gnd,
        index=rules.encode.output.index,
        rerank=rules.rerank.output.rerank,
    output:
        expand="results/{dataset}/{method}/{similarity}/expand.npz",
    params:
        **step_params("expand"),
    threads: step_threads("expand")
    log:
        "logs/{dataset}/{method}/{similarity}/expand.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/{similarity}/expand.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Query expansion on {wildcards.dataset} ({wildcards.method}, {wildcards.similarity})"
    shell:
        STEP


# Every second-stage option of the method (windows, spatial verification, proposals, diffusion,
# alpha-QE), each run from the first stage and evaluated: the options tables put them side by side.
rule options:
    input:
        gnd=rules.prepare.output.gnd,
        index=rules.encode.output.index,
        rank=rules.rank.output.rank,
    output:
        options="results/options/{similarity}/{dataset}-{method}.json",
    params:
        **step_params("options"),
    threads: step_threads("options")
    log:
        "logs/{dataset}/{method}/{similarity}/options.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/{similarity}/options.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Comparing the second-stage options on {wildcards.dataset} ({wildcards.method}, {wildcards.similarity})"
    shell:
        STEP
