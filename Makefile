# imgdist: `make run` runs the main notebook headless into results/; `make test` runs the tests.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.imgdist-installed
OUT ?= results

.PHONY: venv run test test-slow test-all lab bench bench-netns lint clean

venv: $(STAMP)

# Reinstalls when pyproject.toml changes; the package is installed editable.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

run: venv
	$(BIN)/imgdist notebook --notebook notebooks/main.ipynb --out $(OUT)

test: venv
	$(BIN)/python -m pytest

test-slow: venv
	$(BIN)/python -m pytest -m slow

test-all: venv
	$(BIN)/python -m pytest -m "slow or not slow"

lab: venv
	$(BIN)/jupyter lab notebooks

lint: venv
	$(BIN)/ruff check src tests

clean:
	rm -rf $(OUT) .pytest_cache .ruff_cache

bench: venv
	$(BIN)/imgdist bench --runs 10 --json $(OUT)/bench-suite.json --plot $(OUT)/bench-suite.png

# the multi-host benchmark: fast against seed on 2 workers in network namespaces (needs root)
bench-netns: venv
	$(BIN)/python -m benchmarks.netns_bench --runs 10 --json $(OUT)/netns-bench.json
