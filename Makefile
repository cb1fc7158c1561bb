# Common tasks. The README's two set-up commands are `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help env demo test smoke lint notebooks bench drills stack-up stack-down clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(BIN)/lambda-demo: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	$(BIN)/lambda-demo prefetch
	@touch $@

env: $(BIN)/lambda-demo  ## create .venv with the package and its dev tools

demo: env  ## start the embedded stack and run the whole Lambda loop (README command 1)
	$(BIN)/lambda-demo demo

lint: env  ## ruff lint and format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# Under nbmake the notebooks run in reverse order (solutions first, then 07 down to 00), while
# `make notebooks` runs them forward: each must stand on its own, in either order.
NOTEBOOKS_REVERSED = $(shell ls notebooks/*.ipynb notebooks/solutions/*.ipynb | sort -r)

# The cluster drill (tests/drills/test_cluster.py, 2.5 min) runs in `make drills` only.
test: lint  ## lint, then unit + integration tests and every notebook under nbmake (README command 2)
	CI=1 $(BIN)/pytest tests $(NOTEBOOKS_REVERSED) -m "not cluster" --nbmake --nbmake-timeout=900 --durations=30 $(PYTEST_ARGS)

smoke: env  ## one short loop in a throw-away home: stack, replay, speed, batch, check (CI: Python 3.13)
	SMOKE_HOME=$$(mktemp -d) && export LAMBDA_DEMO_HOME=$$SMOKE_HOME && \
	trap '$(BIN)/lambda-demo stack reset >/dev/null' EXIT INT TERM && \
	$(BIN)/lambda-demo sample generate --tweets 2000 --days 2 --seed 7 --out $$SMOKE_HOME/smoke.jsonl.gz && \
	$(BIN)/lambda-demo stack up && \
	$(BIN)/lambda-demo replay --file $$SMOKE_HOME/smoke.jsonl.gz && \
	$(BIN)/lambda-demo speed --once && \
	$(BIN)/lambda-demo batch && \
	$(BIN)/lambda-demo check

notebooks: env  ## re-execute every notebook in place, each alone in a fresh home (committing-ready outputs)
	$(BIN)/python -m lambda_demo.tutorial.notebooks execute --fresh-home

drills: env  ## only the fault-injection drills
	CI=1 $(BIN)/pytest -m drills tests

bench: env  ## benchmarks: writes benchmarks/results.json and BENCHMARKS.md
	$(BIN)/python -m benchmarks

stack-up: env
	$(BIN)/lambda-demo stack up

stack-down: env
	$(BIN)/lambda-demo stack down

clean:  ## remove the venv and local state (not the JVM caches in ~/.cache/lambda-demo)
	-$(BIN)/lambda-demo stack reset
	rm -rf $(VENV) .pytest_cache .ruff_cache
