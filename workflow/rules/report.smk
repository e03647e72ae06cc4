# One table per method x similarity (a row per dataset of run.datasets, in that order), one table
# of second-stage options per similarity, pictures of queries with their top results, and the
# precision-recall curves as plots.


rule tables:
    input:
        metrics=expand(
            rules.evaluate.output.metrics,
            dataset=config["run"]["datasets"],
            allow_missing=True,
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
        **step_params("tables"),
    log:
        "logs/tables/{method}_{similarity}.log",
    benchmark:
        "benchmarks/out/tables/{method}_{similarity}.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Tabulating {wildcards.method} / {wildcards.similarity}"
    shell:
        STEP


# One table per similarity: each dataset and method with each of its second-stage options side by side.
rule options_table:
    input:
        options=expand(
            rules.options.output.options,
            dataset=config["run"]["datasets"],
            method=config["run"]["methods"],
            allow_missing=True,
        ),
    output:
        md="results/tables/options_{similarity}.md",
        csv=report(
            "results/tables/options_{similarity}.csv",
            caption="../report/options.rst",
            category="Tables",
            labels={"table": "second-stage options", "similarity": "{similarity}"},
        ),
    params:
        **step_params("options_table"),
    log:
        "logs/tables/options_{similarity}.log",
    benchmark:
        "benchmarks/out/tables/options_{similarity}.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Tabulating the second-stage options ({wildcards.similarity})"
    shell:
        STEP


rule figures:
    input:
        data=rules.fetch.output.manifest,  # the images shown, listed in gnd.json
        gnd=rules.prepare.output.gnd,
        rerank=rules.rerank.output.rerank,
    output:
        png=report(
            "results/figures/{dataset}_{method}_{similarity}.png",
            caption="../report/figure.rst",
            category="Figures",
            subcategory="{dataset}",
            labels={"method": "{method}", "similarity": "{similarity}"},
        ),
    params:
        **step_params("figures"),
    log:
        "logs/figures/{dataset}_{method}_{similarity}.log",
    benchmark:
        "benchmarks/out/figures/{dataset}_{method}_{similarity}.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Drawing the top results of {wildcards.dataset} ({wildcards.method}, {wildcards.similarity})"
    shell:
        STEP


# The evaluate step's precision-recall CSV as a plot (a curve per stage), for the report.
rule pr_figure:
    input:
        pr=rules.evaluate.output.pr,
    output:
        png=report(
            "results/figures/pr/{dataset}_{method}_{similarity}.png",
            caption="../report/pr.rst",
            category="Precision-recall",
            subcategory="{dataset}",
            labels={"method": "{method}", "similarity": "{similarity}"},
        ),
    params:
        **step_params("pr_figure"),
    log:
        "logs/figures/pr/{dataset}_{method}_{similarity}.log",
    benchmark:
        "benchmarks/out/figures/pr/{dataset}_{method}_{similarity}.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Plotting the precision-recall curves of {wildcards.dataset} ({wildcards.method}, {wildcards.similarity})"
    shell:
        STEP
