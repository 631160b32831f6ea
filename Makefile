# Every target creates and uses its own virtual environment in .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv demo test lint typecheck pytest bench clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# The CPU build of torch is pinned here so that the inference extra never pulls a multi-GB CUDA build.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev,inference]"
	touch $(STAMP)

venv: $(STAMP)

## The main job: a synthetic four-scanner challenge with its baselines, served at http://127.0.0.1:8000 (Ctrl-C stops).
demo: $(STAMP)
	$(BIN)/midog-eval demo

## The whole test-suite, lint and type checks included.
test: lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/score.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
