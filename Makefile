# The two set-up commands: `make run` (embedded dev stack) and `make test` (whole suite).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev,test,speed]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/keygate dev

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check gateway tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python tests/perf/bench_proxy.py

clean:
	rm -rf $(VENV) .keygate .pytest_cache .mypy_cache .ruff_cache
