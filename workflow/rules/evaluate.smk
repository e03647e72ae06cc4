# Per-query and mean metrics of the three rankings, and their precision-recall curves (dvc.yaml:
# the JSON is a metric, the CSVs are plots). A dataset without ground truth (a photo folder) gets a
# metrics file that says so, and no row in the tables.


rule evaluate:
    input:
        gnd=rules.prepare.output.gnd,
        rank=rules.rank.output.rank,
        rerank=rules.rerank.output.rerank,
        expand=rules.expand.output.expand,
    output:
        metrics="results/metrics/{method}_{similarity}/{dataset}.json",
        per_query="results/per_query/{method}_{similarity}/{dataset}.csv",
        pr="results/pr/{method}_{similarity}/{dataset}.csv",  # drawn by pr_figure (report.smk)
    params:
        **step_params("evaluate"),
    log:
        "logs/{dataset}/{method}/{similarity}/evaluate.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/{similarity}/evaluate.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Evaluating {wildcards.dataset} ({wildcards.method}, {wildcards.similarity})"
    shell:
        STEP
