# imgdist: `make run` runs the main notebook headless into results/; `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.imgdist-installed
DEV_STAMP := $(VENV)/.imgdist-dev-installed
OUT ?= results

.PHONY: venv dev run test test-unit test-slow test-all lab bench bench-netns lint clean

venv: $(STAMP)
dev: $(DEV_STAMP)

# What running the job needs; reinstalls when pyproject.toml changes (the package is editable).
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	touch $(STAMP)

# ... and what the tests and the benchmark need besides (pytest, Playwright, Dask).
$(DEV_STAMP): $(STAMP)
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $(DEV_STAMP)

run: venv
	$(BIN)/imgdist notebook --notebook notebooks/main.ipynb --out $(OUT)

test: dev
	$(BIN)/python -m pytest

# the tests that need no cluster, namespace or browser, e.g. on another Python:
#   make test-unit PYTHON=python3.13 VENV=.venv-3.13
test-unit: dev
	$(BIN)/python -m pytest -m "not integration and not slow and not browser and not netns"

test-slow: dev
	$(BIN)/python -m pytest -m slow

test-all: dev
	$(BIN)/python -m pytest -m "slow or not slow"

lab: venv
	$(BIN)/jupyter lab notebooks

lint: dev
	$(BIN)/ruff check src tests

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache

bench: dev
	$(BIN)/imgdist bench --runs 10 --json $(OUT)/bench-suite.json --plot $(OUT)/bench-suite.png

# the multi-host benchmark: fast against seed on 2 workers in network namespaces (needs root)
bench-netns: dev
	$(BIN)/python -m benchmarks.netns_bench --runs 10 --json $(OUT)/netns-bench.json
