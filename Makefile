# Two entry points: `make demo` and `make test`. Both create .venv when it is missing and are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Local data directory (standard raw formats). Override: make test TASKTRANSFER_DATA_DIR=/path/to/data
TASKTRANSFER_DATA_DIR ?= $(abspath ../shared/data)
export TASKTRANSFER_DATA_DIR
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_NO_ADVISORY_WARNINGS := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: demo test test-all notebooks benchmarks env clean

env: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[notebooks,dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

## make demo: embeddings for the offline suite, source rankings for every target,
## evaluation against the committed offline study, figures regenerated, notebooks 01-07 written back
## with their outputs (notebooks/NN_name.ipynb, paired with NN_name.py).
demo: $(STAMP)
	$(PY) -m tasktransfer_utils.cli demo

## make test: unit + smoke + notebook tests (everything not marked slow).
test: $(STAMP)
	$(PY) -m pytest -m "not slow" -q

test-all: $(STAMP)
	$(PY) -m pytest -q

benchmarks: $(STAMP)
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache
