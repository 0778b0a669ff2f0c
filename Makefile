# Developer entry points. Each target is a thin wrapper: the commands it runs are
# the documented ones (README.md), so nothing here is required to use the project.
.PHONY: bench bench-smoke help install services-up services-down services-status services-env tools test lint format ci demo image-rehearsal

help:
	@echo "make install        uv sync --frozen (creates .venv)"
	@echo "make services-up    start local Kafka + FerretDB (scripts/services up)"
	@echo "make services-down  stop them (scripts/services down; WIPE=1 also deletes their data)"
	@echo "make test           all tests: builds helm/promtool once (cached), then uv run pytest"
	@echo "                    (the integration tests start the services themselves if needed)"
	@echo "make lint           ruff check, ruff format --check, mypy"
	@echo "make format         ruff format + ruff check --fix"
	@echo "make tools          build helm and promtool (scripts/services tools)"
	@echo "make demo           services up, consumer + demo traffic, changes printed (scripts/run_demo)"
	@echo "make ci             everything CI runs (.ci/run)"

UV := $(shell scripts/ensure_uv)

install:
	$(UV) sync --frozen --all-groups

services-up: install
	scripts/services up

services-down:
	scripts/services down $(if $(WIPE),--wipe,)

services-status:
	scripts/services status

services-env:
	@scripts/services env

tools:
	scripts/services tools

# The chart and alert tests need helm and promtool: built once into the cache (a stamp skips
# the build while tools/go.mod is unchanged), so `make test` alone works on a fresh machine.
test: install tools
	$(UV) run pytest

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

format: install
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

demo:
	scripts/run_demo

# The sizes of docs/benchmarks.md: what the local FerretDB (every operation a scan) can
# finish in about half an hour. Against a real MongoDB, BENCH_ARGS= runs the issue's
# defaults (100,000 users, 200,000 events, 500-2,000 events/s, sweeps up to 1,000,000).
BENCH_ARGS ?= --users 1000 --events 2000 --rates 5,10,20,40 --rate-seconds 5 \
	--max-drain-seconds 150 --sizes 1000,3000,10000 --store-sizes 1000,10000,30000 --profile

bench: install ## benchmarks -> bench/results/latest.json, docs/img/bench-*.png, docs/benchmarks.md
	$(UV) run --group bench python -m bench $(BENCH_ARGS)

bench-smoke: install ## tiny run of each benchmark against the integration services
	$(UV) run pytest -m integration tests/bench -q

image-rehearsal: ## the Dockerfile's install steps in a clean venv (what CI runs)
	scripts/rehearse_image_install.sh

ci:
	bash .ci/run
