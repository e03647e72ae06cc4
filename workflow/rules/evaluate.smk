# Per-query and mean metrics of the three rankings, and their precision-recall curves (dvc.yaml:
# the JSON is a metric, the CSVs are plots).


rule evaluate:
    input:
        script="workflow/scripts/evaluate.py",
        gnd="results/{dataset}/gnd.json",
        rank="results/{dataset}/{method}/{similarity}/rank.npz",
        rerank="results/{dataset}/{method}/{similarity}/rerank.npz",
        expand="results/{dataset}/{method}/{similarity}/expand.npz",
    output:
        metrics="results/metrics/{method}_{similarity}/{dataset}.json",
        per_query="results/per_query/{method}_{similarity}/{dataset}.csv",
        pr=report(
            "results/pr/{method}_{similarity}/{dataset}.csv",
            caption="../report/pr.rst",
            category="Precision-recall",
            subcategory="{dataset}",
            labels={"method": "{method}", "similarity": "{similarity}"},
        ),
    params:
        tracked=tracked_params("evaluate"),
    log:
        "logs/{dataset}/{method}/{similarity}/evaluate.log",
    benchmark:
        "benchmarks/out/{dataset}/{method}/{similarity}/evaluate.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Evaluating {wildcards.dataset} ({wildcards.method}, {wildcards.similarity})"
    shell:
        "python {input.script} --params {PARAMS} --dataset {wildcards.dataset}"
        " --method {wildcards.method} --similarity {wildcards.similarity} --gnd {input.gnd}"
        " --rank {input.rank} --rerank {input.rerank} --expand {input.expand} --metrics {output.metrics}"
        " --per-query {output.per_query} --pr {output.pr} --log {log}"
