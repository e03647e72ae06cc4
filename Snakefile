# The instance-search workflow. Run from the repository root:
#     snakemake --cores 8 --resources gpu=1        (the default profile, profiles/default)
#     snakemake --profile profiles/full            (every dataset, the papers' settings: params-full.yaml)
# Every rule runs a step declared in src/instance_search/pipeline: `python workflow/scripts/step.py <rule>
# --params params.yaml --<name> <path> ...` (workflow/rules/common.smk); dvc.yaml is generated from these
# rules and the declarations (make dvc-yaml), never edited.
from snakemake.utils import min_version, validate

min_version("8.20")


configfile: "params.yaml"


report: "workflow/report/workflow.rst"  # snakemake --report results/report.html: tables and figures, captioned


include: "workflow/rules/common.smk"


PARAMS = params_file(workflow)  # what every step reads: params.yaml, or a profile's complete file
check_config_is_params_file(config, PARAMS)  # the scripts read it themselves: no --config overrides
validate(config, "workflow/schemas/params.schema.json")
check_run_datasets(config)
check_learn_on(config, PARAMS)
# The compute rules (extract, codebook, encode, rank, rerank, expand) declare compute.threads; the step
# applies the same count itself (instance_search.threads), so DVC, which declares nothing, runs it alike.
THREADS = compute_threads(config)


wildcard_constraints:
    dataset=alternatives(config["datasets"]),
    method=alternatives(config["run"]["methods"]),
    similarity=alternatives(config["run"]["similarities"]),


localrules:
    all,
    weights,  # downloads: on a cluster, from the submitting host


rule all:
    default_target: True
    input:
        expand(
            "results/tables/{method}_{similarity}.{ext}",
            method=config["run"]["methods"],
            similarity=config["run"]["similarities"],
            ext=["md", "csv"],
        ),
        expand(
            "results/tables/options_{similarity}.{ext}",
            similarity=config["run"]["similarities"],
            ext=["md", "csv"],
        ),
        expand(
            "results/figures/{dataset}_{method}_{similarity}.png",
            dataset=config["run"]["datasets"],
            method=config["run"]["methods"],
            similarity=config["run"]["similarities"],
        ),
        expand(
            "results/figures/pr/{dataset}_{method}_{similarity}.png",
            dataset=config["run"]["datasets"],
            method=config["run"]["methods"],
            similarity=config["run"]["similarities"],
        ),


include: "workflow/rules/data.smk"
include: "workflow/rules/weights.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/codebook.smk"
include: "workflow/rules/encode.smk"
include: "workflow/rules/search.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/dvc.smk"
