# The two set-up commands: `make run` (embedded dev stack) and `make test` (whole suite).
# Everything installs from requirements.lock (pip-compile --generate-hashes): CI, users and
# the image get exactly the versions the suite passed on. `make lock` refreshes it;
# `make test-lowest` runs the suite at the lowest versions pyproject.toml allows.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LOWEST_VENV := .venv-lowest
# The lower bounds of pyproject.toml for the libraries the gateway leans on hardest.
LOWEST := aiohttp==3.14.4 redis==5.0.1 asyncpg==0.29.0

.PHONY: run test test-lowest lint bench lock clean

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --require-hashes --no-deps -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

# `make run PROXY_PORT=18080 ADMIN_PORT=18081 DEMO_PORT=19000` moves the dev listeners;
# the embedded stores keep their ports between runs (.keygate/dev.json).
PROXY_PORT ?= 8080
ADMIN_PORT ?= 8081
DEMO_PORT  ?= 9000

run: $(STAMP)
	$(BIN)/keygate dev --proxy-port $(PROXY_PORT) --admin-port $(ADMIN_PORT) --demo-port $(DEMO_PORT)

# The suite under coverage (pyproject.toml [tool.coverage]), gateway subprocesses and
# their workers included; prints the total and fails below the floor (fail_under).
test: $(STAMP)
	rm -f .coverage .coverage.*
	COVERAGE_FILE=$(CURDIR)/.coverage $(BIN)/coverage run -m pytest -q
	$(BIN)/coverage combine --quiet
	$(BIN)/coverage report

# The same suite against the oldest versions the ranges admit (no hashes: it is a probe
# of the ranges, not what ships).
test-lowest: requirements.lock pyproject.toml
	$(PYTHON) -m venv $(LOWEST_VENV)
	$(LOWEST_VENV)/bin/pip install --quiet --no-deps -r requirements.lock
	$(LOWEST_VENV)/bin/pip install --quiet $(LOWEST)  # with what they need at those versions
	$(LOWEST_VENV)/bin/pip install --quiet --no-deps -e .
	$(LOWEST_VENV)/bin/pip check
	$(LOWEST_VENV)/bin/python -m pytest -q -p no:cacheprovider

lint: $(STAMP)
	$(BIN)/ruff format --check gateway tests
	$(BIN)/ruff check gateway tests
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python tests/perf/bench_proxy.py

lock:
	$(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install --quiet pip-tools
	.venv-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	    --extra dev --extra test --extra speed -o requirements.lock pyproject.toml
	.venv-lock/bin/pip-compile --quiet --generate-hashes --allow-unsafe --strip-extras \
	    --extra speed -o requirements-runtime.lock pyproject.toml

clean:
	rm -rf $(VENV) $(LOWEST_VENV) .venv-lock .keygate .pytest_cache .mypy_cache .ruff_cache .coverage .coverage.*
