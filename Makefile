# Two commands on a fresh machine: `make run` (the whole suite, embedded) and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-fast lint format typecheck install clean bench bench-intake bench-intake-profile bench-intake-inprocess bench-suite bench-peer bench-evaluation soak fuzz

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python >= 3.11 is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)  ## start broker + four services on 127.0.0.1:8001-8004
	$(BIN)/fengqiao up

test: $(STAMP)  ## the whole test suite (SQLite, and PostgreSQL where reachable)
	$(BIN)/pytest

test-fast: $(STAMP)  ## unit tests only
	$(BIN)/pytest tests/unit -q

WRK_CHECK = @command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk"; exit 1; }

bench: $(STAMP)  ## every case in one run: intake + ceilings, django-helpdesk, the whole suite; rewrites docs/benchmarks.md
	$(WRK_CHECK)
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-intake: $(STAMP)  ## ceiling vs intake durable POST on SQLite and PostgreSQL (needs wrk)
	$(WRK_CHECK)
	$(BIN)/python -m bench.intake

bench-suite: $(STAMP)  ## the whole suite as `make run` starts it, under load: SQLite and PostgreSQL
	$(WRK_CHECK)
	$(BIN)/python -m bench.suite $(BENCH_ARGS)

bench-peer: $(STAMP)  ## django-helpdesk (own venv in bench/.peer) against intake's durable POST
	$(WRK_CHECK)
	$(BIN)/python -m bench.peer_helpdesk $(BENCH_ARGS)

bench-intake-profile: $(STAMP)  ## the same cases under py-spy: where the time goes, per case
	$(WRK_CHECK)
	$(BIN)/python -m bench.intake --profile bench/results/profiles --seconds 10 --batch-seconds 20 --out bench/results/intake-profiled.json

bench-intake-inprocess: $(STAMP)  ## intake's CPU per ticket in one process, no sockets: ceiling, app, accept, batch
	$(BIN)/python -m bench.intake_inprocess --ceiling
	$(BIN)/python -m bench.intake_inprocess --case app
	$(BIN)/python -m bench.intake_inprocess --case accept
	$(BIN)/python -m bench.intake_inprocess --case batch

bench-evaluation: $(STAMP)  ## 10 M ticket facts on PostgreSQL: committee query p99, rebuild, apply rate
	$(BIN)/python -m bench.evaluation

soak: $(STAMP)  ## 200,000 tickets through `fengqiao up` with broker rotations: peak RSS, lost, doubled
	$(BIN)/python -m bench.soak

fuzz: $(STAMP)  ## schemathesis against every service's OpenAPI: no request may get a 5xx
	$(BIN)/python -m fuzz.run

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

typecheck: $(STAMP)
	$(BIN)/mypy fengqiao shared services tools

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
