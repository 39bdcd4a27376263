# The two commands of the README:
#   make demo   set up everything and run the whole pipeline on the embedded default data
#   make test   set up everything and run the test suite (PostgreSQL, then MariaDB)
# A database configured through DataJoint's DJ_HOST/DJ_PORT/DJ_USER/DJ_PASS/DJ_BACKEND is used when
# DJ_HOST is set; otherwise a private local server is started with its data in .local/, on a port of
# this checkout's own (.local/<backend>.port), so that checkouts on one machine run side by side.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# torch 2.13.0's CPU build: GPU nodes install their CUDA build of torch before `pip install -e .`.
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
DEMO_ARGS ?=

.PHONY: demo test lint install setup db-stop benchmarks clean-local

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e '.[test,robustness,imaging]' "$(TORCH)"
	touch $(STAMP)

install: $(STAMP)

# Use the configured server, or start the private PostgreSQL one.
WITH_DB = if [ -z "$$DJ_HOST" ]; then eval "$$(populate/deploy/local_db.sh postgresql)" || exit 1; \
	echo "using a private PostgreSQL server on $$DJ_HOST:$$DJ_PORT (set DJ_HOST to use another)"; fi;

setup: $(STAMP)
	@$(WITH_DB) $(BIN)/python -m populate setup

# The run's wall time goes to benchmarks/results/demo.json (only from a database without the demo's
# data: a second run skips the stages), which README.md and docs/results.md quote.
demo: $(STAMP)
	@$(WITH_DB) $(BIN)/python -m populate setup && \
		$(BIN)/python -m populate demo --record benchmarks/results/demo.json $(DEMO_ARGS)

# The suite runs once per backend; tests that need no database run only on the first.  With the
# private servers, the PostgreSQL and MariaDB passes run side by side (one torch thread each, on the
# two cores of CI); the MariaDB output follows the PostgreSQL output.  Then the torch-kernel tests
# (marker `kernels`) run again under the next lower CPU instruction set, so that kernels only an
# older CPU takes run here too (tests/isa.py).  The SLURM tests (marker `cluster`, tests/cluster) run
# in the PostgreSQL pass only, on a private one-node cluster their fixture starts and stops
# (populate/deploy/local_slurm.sh, which installs slurm-wlm and munge when missing).
# ruff (lint and format, settings in pyproject.toml) on the whole tree, mypy on pipeline/.
lint: $(STAMP)
	@echo "== ruff check, ruff format --check, mypy"
	@$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

test: $(STAMP) lint
	@populate/deploy/ensure_program.sh dot graphviz
	@populate/deploy/ensure_program.sh chromium chromium
	@set -e; if [ -n "$$DJ_HOST" ]; then \
		echo "== tests on the configured server $$DJ_HOST ($${DJ_BACKEND:-mysql})"; \
		$(BIN)/python -m pytest $(PYTEST_ARGS); \
	else \
		pg_env=$$(populate/deploy/local_db.sh postgresql); maria_env=$$(populate/deploy/local_db.sh mariadb); \
		( eval "$$maria_env" && OMP_NUM_THREADS=1 $(BIN)/python -m pytest -p no:cacheprovider \
			-m "db and not slow and not cluster and not s3" $(PYTEST_ARGS) ) > .local/test-mariadb.log 2>&1 & maria=$$!; \
		echo "== tests on PostgreSQL (the database tests on MariaDB run alongside)"; \
		pg_status=0; ( eval "$$pg_env" && OMP_NUM_THREADS=1 $(BIN)/python -m pytest $(PYTEST_ARGS) ) || pg_status=$$?; \
		maria_status=0; wait $$maria || maria_status=$$?; \
		echo "== database tests on MariaDB"; cat .local/test-mariadb.log; \
		if [ $$pg_status -ne 0 ] || [ $$maria_status -ne 0 ]; then \
			echo "== tests failed (PostgreSQL exit $$pg_status, MariaDB exit $$maria_status)"; exit 1; fi; \
	fi; \
	lower=$$($(BIN)/python -m tests.isa lower); \
	if [ -n "$$lower" ]; then \
		echo "== torch kernel tests again under $$lower"; \
		env $$lower $(BIN)/python -m pytest -m "kernels and not slow" $(PYTEST_ARGS); \
	else \
		echo "== no instruction set below this CPU's for the kernel pass: $$($(BIN)/python -m tests.isa describe)"; \
	fi

benchmarks: $(STAMP)
	@$(WITH_DB) $(BIN)/python -m benchmarks

# Both act only on this checkout's servers (found by their pid files and data folders in .local/).
db-stop:
	populate/deploy/local_db.sh stop

clean-local:
	populate/deploy/local_slurm.sh stop
	populate/deploy/local_db.sh clean
	rm -rf .local .store
