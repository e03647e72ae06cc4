# The pretrained weights: weights makes every file a method's extraction loads (its ImageNet backbone
# or COCO detector) present in torchvision's cache ($TORCH_HOME/hub/checkpoints): found there, or
# downloaded (resumable, weights.mirrors first) and checked against workflow/weights.lock.json. The
# files live outside the repository; the output is a manifest, which extract takes as an input. One
# per method, so that changing one method's weights re-runs only that method's extraction. A local
# rule (Snakefile's localrules): a cluster's compute nodes may have no network. weights.mirrors is not
# tracked: where the bytes come from changes nothing (the lock checks them), so it re-runs nothing.


rule weights:
    input:
    output:
        manifest="results/weights/{method}.json",
    params:
        **step_params("weights"),
    log:
        "logs/weights/{method}.log",
    benchmark:
        "benchmarks/out/weights/{method}.tsv"
    conda:
        "../../envs/instance-search.yaml"
    message:
        "Making the pretrained weights of {wildcards.method} present in torchvision's cache"
    shell:
        STEP
