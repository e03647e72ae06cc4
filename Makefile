# make demo: virtual environment + install + the main job on the embedded benchmark (offline).
# make test: same environment, the whole test suite (real-data tests run when ../shared/data exists).
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin
CORES  ?= 2

.PHONY: install demo test bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

# The steps run `python workflow/scripts/...`: the venv's bin goes first on PATH.
export PATH := $(abspath $(BIN)):$(PATH)

demo: install
	snakemake --cores $(CORES) --resources gpu=1
	@echo "tables: results/tables/  figures: results/figures/"

test: install
	python -m pytest

bench: install
	python benchmarks/rerank_speed.py

clean:
	rm -rf results logs .snakemake benchmarks/out
