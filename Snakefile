# The instance-search workflow. Run from the repository root:
#     snakemake --cores 8 --resources gpu=1        (the default profile, workflow/profiles/default)
#     snakemake --profile workflow/profiles/full   (every dataset, the papers' settings: params-full.yaml)
# Every step is a command `python workflow/scripts/<step>.py --params params.yaml ...`; dvc.yaml
# lists the very same commands, inputs, outputs and parameters (tests/test_workflow_definitions.py).
from snakemake.utils import min_version, validate

min_version("8.20")


configfile: "params.yaml"


report: "report/workflow.rst"  # snakemake --report results/report.html: the tables and figures, captioned


include: "rules/common.smk"


PARAMS = params_file(workflow)  # what every step reads: params.yaml, or a profile's complete file
check_config_is_params_file(config, PARAMS)  # the scripts read it themselves: no --config overrides
validate(config, "schemas/params.schema.json")
check_run_datasets(config)


wildcard_constraints:
    dataset=alternatives(config["datasets"]),
    method=alternatives(config["run"]["methods"]),
    similarity=alternatives(config["run"]["similarities"]),


localrules:
    all,


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
            "results/figures/{dataset}_{method}_{similarity}.png",
            dataset=config["run"]["datasets"],
            method=config["run"]["methods"],
            similarity=config["run"]["similarities"],
        ),


include: "rules/data.smk"
include: "rules/features.smk"
include: "rules/codebook.smk"
include: "rules/encode.smk"
include: "rules/search.smk"
include: "rules/evaluate.smk"
include: "rules/report.smk"
