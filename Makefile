# The two set-up commands: `make demo` and `make test`. Everything installs pinned
# into .venv from requirements.lock (torch==2.13.0 is the local CPU wheel).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The viewer's browser side (OpenSeadragon, pinned in its package.json + package-lock.json), from the npm registry.
VIEWER := src/slidegrad/viewer
OSD := $(VIEWER)/node_modules/openseadragon/package.json

.PHONY: install demo test lint clean envs

install: $(STAMP) $(OSD)

$(STAMP): requirements.lock requirements-reference.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -r requirements-reference.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps -e .
	touch $(STAMP)

$(OSD): $(VIEWER)/package.json $(VIEWER)/package-lock.json
	cd $(VIEWER) && npm ci --no-audit --no-fund --loglevel=error
	touch $(OSD)

demo: install
	$(BIN)/snakemake --cores all
	$(BIN)/snakemake --report results/report.html
	@echo "Figures: $$(ls results/figures/*.pdf | tr '\n' ' ')"
	@echo "Summary table: results/summary.csv; job logs: results/logs/"
	@echo "Evaluation: results/evaluation.csv; figures: $$(ls results/figures/evaluation/*.pdf | tr '\n' ' ')"
	@echo "Overviews: $$(ls results/figures/overview/*.pdf | tr '\n' ' ')"
	@echo "Report: results/report.html; methods paragraph: results/methods.md"

# Four pytest processes (tests/run_suites.sh): the main suite with tests/envs beside it (builds a
# venv from each envs/*.yaml's pip section and runs its rules there; mostly I/O), then tests/tf
# (torch and TensorFlow never share one process), then tests/slurm (a real one-node SLURM).
# Each process runs even when an earlier one fails; the target fails if any did.
test: install
	PY=$(BIN)/python bash tests/run_suites.sh

# envs/*.yaml's pip sections from requirements.lock, and requirements.txt from pyproject.toml's ranges
# (src/slidegrad/envfiles.py; tests/test_envfiles.py and tests/test_requirements.py check them).
envs: install
	$(BIN)/python -m slidegrad.envfiles

lint: install
	$(BIN)/snakemake --lint
	$(BIN)/snakefmt --check .

clean:
	rm -rf results resources .snakemake
