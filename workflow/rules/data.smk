# The datasets: the embedded synthetic benchmark, and one normalised ground-truth file per dataset.
# Convention: every dataset lives under data/<name>/ (the real ones arrive with their download rules).


rule synthetic:
    input:
        script="workflow/scripts/make_synthetic.py",
    output:
        data=directory("data/synthetic"),
    params:
        tracked=tracked_params("seed", "datasets.synthetic.generator"),
    log:
        "logs/synthetic/generate.log",
    benchmark:
        "benchmarks/out/synthetic/generate.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Generating the synthetic benchmark in {output.data}"
    shell:
        "python {input.script} --params params.yaml --out {output.data} --log {log}"


rule prepare:
    input:
        script="workflow/scripts/prepare.py",
        data="data/{dataset}",
    output:
        gnd="results/{dataset}/gnd.json",
    params:
        tracked=tracked_params("datasets.{dataset}"),
    log:
        "logs/{dataset}/prepare.log",
    benchmark:
        "benchmarks/out/{dataset}/prepare.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Preparing the ground truth of {wildcards.dataset}"
    shell:
        "python {input.script} --params params.yaml --dataset {wildcards.dataset}"
        " --out {output.gnd} --log {log}"
