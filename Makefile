# Developer entry points. Each target is a thin wrapper: the commands it runs are
# the documented ones (README.md), so nothing here is required to use the project.
.PHONY: bench bench-smoke bench-capacity help install release services-up services-down services-status services-env tools test test-faults-cluster lint format ci demo image-rehearsal

help:
	@echo "make install        uv sync --frozen (creates .venv)"
	@echo "make services-up    start local Kafka + FerretDB (scripts/services up)"
	@echo "make services-down  stop them (scripts/services down; WIPE=1 also deletes their data)"
	@echo "make test           all tests (scripts/run_tests): helm/promtool built once (cached) while"
	@echo "                    the offline tests run; services it started are stopped at the end"
	@echo "                    (KEEP_SERVICES=1 keeps them)"
	@echo "make test-faults-cluster  fault scenarios on a local 3-broker Kafka cluster (~6 min)"
	@echo "make lint           ruff check, ruff format --check, mypy"
	@echo "make format         ruff format + ruff check --fix"
	@echo "make tools          build helm and promtool (scripts/services tools)"
	@echo "make demo           services up, consumer + demo traffic, changes printed (scripts/run_demo)"
	@echo "make bench          benchmarks at the issue's sizes (BENCH_ARGS=--preset medium: small)"
	@echo "make bench-smoke    a tiny run of each benchmark (what CI runs)"
	@echo "make release        chart package + SBOM into dist/, versions checked (scripts/release.py)"
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
# scripts/run_tests builds them (and starts the services) in the background while the tests
# that need neither run; it stops the services it started unless KEEP_SERVICES=1.
test: install
	scripts/run_tests

# The fault scenarios on a local three-broker cluster (tests/faults/test_faults_cluster.py):
# four more JVMs, ~6 minutes; before every release. Not part of `make test`.
test-faults-cluster: install
	PASS_STATUS_FAULTS_CLUSTER=1 $(UV) run pytest -m cluster tests/faults -v

lint: install
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

format: install
	$(UV) run ruff format .
	$(UV) run ruff check --fix .

demo:
	scripts/run_demo

# `make bench`: the issue's sizes (100,000 users, 200,000 events, latency at 25/50/80 % of the
# service's sustained rate and at 1,000 events/s,
# sweeps at 10,000/100,000/1,000,000 users; about 40 minutes on a quiet 2-core machine). Against the store
# named by PASS_STATUS_MONGODB_URI. Pass options through BENCH_ARGS, e.g.
#   make bench BENCH_ARGS="--only sweeps --resume"     # one stage; keep what is done
#   make bench BENCH_ARGS="--preset medium"            # 10,000 users, ~15 minutes
BENCH_ARGS ?=

bench: install ## benchmarks -> bench/results/latest.json, docs/img/bench-*.png, docs/benchmarks.md
	$(UV) run --group bench python -m bench $(BENCH_ARGS)

bench-capacity: install ## docs/scaling.md's capacity table from bench/results/latest.json
	$(UV) run python -m bench.capacity --check

bench-smoke: install ## tiny run of each benchmark against the integration services
	$(UV) run pytest -m integration tests/bench -q

# The release artefacts that need no container engine (docs/release.md): the chart packaged
# with the package version, a CycloneDX SBOM of uv.lock's runtime dependencies, and the check
# that image tag, chart appVersion and pass_status_build_info agree.
release: install tools
	$(UV) run python scripts/release.py

image-rehearsal: ## the Dockerfile's install steps in a clean venv (what CI runs)
	scripts/rehearse_image_install.sh

ci:
	bash .ci/run
