# One table per method x similarity (a row per dataset of run.datasets, in that order), and
# pictures of queries with their top results.


rule tables:
    input:
        script="workflow/scripts/tables.py",
        metrics=expand(
            "results/metrics/{{method}}_{{similarity}}/{dataset}.json",
            dataset=config["run"]["datasets"],
        ),
    output:
        md="results/tables/{method}_{similarity}.md",
        csv=report(
            "results/tables/{method}_{similarity}.csv",
            caption="../report/table.rst",
            category="Tables",
            labels={"method": "{method}", "similarity": "{similarity}"},
        ),
    params:
        tracked=tracked_params("run.datasets"),
    log:
        "logs/tables/{method}_{similarity}.log",
    benchmark:
        "benchmarks/out/tables/{method}_{similarity}.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Tabulating {wildcards.method} / {wildcards.similarity}"
    shell:
        "python {input.script} --params {PARAMS} --method {wildcards.method}"
        " --similarity {wildcards.similarity}"
        " --metrics-dir results/metrics/{wildcards.method}_{wildcards.similarity}"
        " --md {output.md} --csv {output.csv} --log {log}"


rule figures:
    input:
        script="workflow/scripts/figures.py",
        data="data/{dataset}/manifest.json",  # the images shown, listed in gnd.json
        gnd="results/{dataset}/gnd.json",
        rerank="results/{dataset}/{method}/{similarity}/rerank.npz",
    output:
        png=report(
            "results/figures/{dataset}_{method}_{similarity}.png",
            caption="../report/figure.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"method": "{method}", "similarity": "{similarity}"},
        ),
    params:
        tracked=tracked_params("figures"),
    log:
        "logs/figures/{dataset}_{method}_{similarity}.log",
    benchmark:
        "benchmarks/out/figures/{dataset}_{method}_{similarity}.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Drawing the top results of {wildcards.dataset} ({wildcards.method}, {wildcards.similarity})"
    shell:
        "python {input.script} --params {PARAMS} --gnd {input.gnd} --rerank {input.rerank}"
        " --out {output.png} --log {log}"
