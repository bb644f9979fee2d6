# Two commands on a fresh machine with Python >= 3.11 and make:
#   make demo   creates .venv, installs lmscaling, runs the default experiment
#   make test   the test suite (unit, end-to-end workflow, lint)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CORES ?= all
# torch 2.13.0: the CPU wheel where one is provided locally, else PyPI's default build (CUDA on
# Linux); TORCH holds pip arguments, e.g. TORCH="torch==2.13.0 --index-url
# https://download.pytorch.org/whl/cpu" for the CPU build.
# Every other dependency is installed at the exact version of envs/constraints.txt, the same
# versions as the conda environments in envs/.
TORCH ?= torch==2.13.0

.PHONY: demo report test lint venv clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml envs/constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check \
		-c envs/constraints.txt -e '.[test,slurm]'
	touch $@

demo: venv
	$(BIN)/snakemake --cores $(CORES)
	$(BIN)/lmscaling show results/fit/scaling_law.json
	@echo "Fit: results/fit/scaling_law.json  plot: results/fit/scaling_law.png"
	@echo "MLflow UI: $(BIN)/mlflow ui --backend-store-uri sqlite:///results/mlflow/mlflow.db"

# The Snakemake report of the last run, attached to that run's MLflow parent.
# (Snakemake 9's report code leaves one coroutine unawaited; its RuntimeWarning is silenced.)
report: venv
	PYTHONWARNINGS="ignore:coroutine 'InputFiles:RuntimeWarning" \
		$(BIN)/snakemake --report results/report.html
	$(BIN)/python -m lmscaling.replay --attach results/report.html

lint: venv
	$(BIN)/ruff check src tests workflow/scripts benchmarks
	$(BIN)/ruff format --check src tests workflow/scripts benchmarks
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint --workflow-profile none -s Snakefile

test: venv lint
	$(BIN)/python -m pytest

clean:
	rm -rf results .snakemake
