# filedrop — two commands for a fresh machine:
#   make demo   run the pipeline on the embedded defaults (embedded PostgreSQL, the d2b files)
#   make test   run the whole test suite against real components (PostgreSQL 18 + 15, moto, Kubernetes)
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
FILEDROP := $(VENV)/bin/filedrop
CACHE_DIR := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/filedrop

# Shared inputs (the real d2b files, third-party CRDs) live beside the repository, not in it: $(SHARED)/data/d2b
# and $(SHARED)/thirdparty. Point SHARED elsewhere with `make test SHARED=/path/to/shared`.
SHARED ?= ../shared
export FILEDROP_D2B_DIR ?= $(SHARED)/data/d2b
export FILEDROP_THIRDPARTY ?= $(SHARED)/thirdparty
PG15_BIN := /usr/lib/postgresql/15/bin

.PHONY: help demo test test-long test-deps unit lint venv clean-venv bench bench-dlt-venv bench-pods soak constraints

help:
	@echo "make demo    - load the d2b files into an embedded PostgreSQL and show what happened"
	@echo "make test    - run the test suite (installs what it needs)"
	@echo "make unit    - only the fast tests that need no server"
	@echo "make lint    - ruff and mypy --strict (part of make test)"
	@echo "make bench   - load benchmarks (docs/benchmarks.md); not part of make test"
	@echo "make bench-pods - Spark with executor pods against a loader Job on the node, one 1 GB file"
	@echo "make soak    - the fault-injection suite, long: SOAK_FILES files (docs/reliability.md)"
	@echo "make test-long - fault tests on pods that make test leaves out for time (killed Spark driver/executor)"
	@echo "make cluster - a local Kubernetes control plane for kubectl get filedrops (make cluster-down stops it)"
	@echo "make constraints - re-pin constraints.txt (the libraries both images install) after a dependency change"
	@echo "make images  - build the filedrop, Spark, spark-operator and Argo images with buildah, as OCI archives (tools/images)"

# The virtualenv is rebuilt when pyproject.toml changes; pip's own cache keeps that fast.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# the distribution was called "filedrop" before it became filedrop-pipeline: drop an old editable install
	@$(PY) -m pip uninstall --quiet --yes filedrop 2>/dev/null || true
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

# constraints.txt: the versions both Dockerfiles install (tools/constraints/make.sh; tests/unit/test_packaging.py)
constraints:
	PYTHON=$(PYTHON) bash tools/constraints/make.sh

# The demo reads the real d2b files when they are beside the repo, else generates d2b-shaped ones.
DEMO_SOURCE ?= $(if $(wildcard $(FILEDROP_D2B_DIR)/orders.csv),$(FILEDROP_D2B_DIR),$(CACHE_DIR)/demo-sample)

demo: venv
	@if [ ! -e "$(DEMO_SOURCE)/orders.csv" ]; then $(FILEDROP) sample --out "$(DEMO_SOURCE)" --orders 10000 --seed 1; fi
	$(FILEDROP) run --source "$(DEMO_SOURCE)" --no-transform
	$(FILEDROP) status
	$(FILEDROP) transform --as-of 2022-09-05

# PostgreSQL 15 from Debian: the tests start their own throwaway cluster from these binaries.
test-deps:
	@if [ ! -x $(PG15_BIN)/postgres ]; then \
		echo "installing Debian's postgresql-15"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null; \
	fi
	@# the Argo UI test's browser (tests/k8s/test_argo_pods.py, through Playwright)
	@if [ ! -x /usr/lib/chromium/chromium ]; then \
		echo "installing Debian's chromium"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	fi

# Static checks first (seconds): ruff on everything, mypy --strict on the package (pyproject.toml).
lint: venv
	$(VENV)/bin/ruff check .
	$(PY) -m mypy

test: lint venv test-deps k8s-tools k8s-node-tools k8s-spark-operator k8s-argo node-deps image-deps spark-jars
	$(PY) -m pytest --durations=15

# Fault tests on pods that `make test` leaves out to keep CI within its time (pyproject.toml's `long` marker).
test-long: venv test-deps k8s-tools k8s-node-tools k8s-spark-operator node-deps image-deps spark-jars
	$(PY) -m pytest -m long --durations=15

# Benchmarks (never part of `make test`): docs/benchmarks.md records the results and the command lines.
# File sizes are in orders (~38.7 bytes a row): 2600000 ~ 100 MB, 13000000 ~ 500 MB, 27000000 ~ 1 GB.
# Quick run: make bench BENCH_REPEAT=1 BENCH_ORDERS=2600000 BENCH_MEMORY_ORDERS=2600000 BENCH_SMALL_FILES=200
BENCH_ORDERS ?= 2600000,27000000
BENCH_UPSERT_ORDERS ?= 2600000
BENCH_MEMORY_ORDERS ?= 2600000,13000000,27000000
BENCH_REPEAT ?= 3
BENCH_LARGE_REPEAT ?= 1
BENCH_METHODS ?= copy,copy-lineage,direct,direct-copying,redrop-attach,redrop-copying,spark,jdbc,pandas,dlt-csv,dlt-parquet
BENCH_PANDAS_FRACTION ?= 0.05
BENCH_SMALL_FILES ?= 1000
BENCH_TRANSFORM_ORDERS ?= 100000
BENCH_STATUS_VERSIONS ?= 100000,1000000
BENCH_WAREHOUSE ?=
BENCH_DATA ?= $(CACHE_DIR)/bench-data
BENCH_RESULTS ?= $(CACHE_DIR)/bench-results
BENCH_ARGS = $(if $(BENCH_WAREHOUSE),--warehouse $(BENCH_WAREHOUSE)) --results $(BENCH_RESULTS)
# dlt (a peer in bench/throughput.py) in its own virtualenv: not a dependency of filedrop
DLT_VENV ?= $(CACHE_DIR)/dlt-venv
DLT_PINS = "dlt[postgres,parquet]==1.31.0" "adbc-driver-postgresql==1.13.0"
bench-dlt-venv:
	@test -x $(DLT_VENV)/bin/python || python3.11 -m venv $(DLT_VENV)
	$(DLT_VENV)/bin/pip install -q $(DLT_PINS)

bench: venv spark-jars bench-dlt-venv
	@mkdir -p $(BENCH_RESULTS); echo "load average before: $$(uptime)" | tee $(BENCH_RESULTS)/uptime.txt
	set -o pipefail; $(PY) bench/throughput.py --orders $(BENCH_ORDERS) --upsert-orders "$(BENCH_UPSERT_ORDERS)" \
		--repeat $(BENCH_REPEAT) --large-repeat $(BENCH_LARGE_REPEAT) --methods $(BENCH_METHODS) \
		--pandas-fraction $(BENCH_PANDAS_FRACTION) --data $(BENCH_DATA) $(BENCH_ARGS) | tee $(BENCH_RESULTS)/throughput.md
	set -o pipefail; $(PY) bench/memory.py --orders $(BENCH_MEMORY_ORDERS) --data $(BENCH_DATA) $(BENCH_ARGS) \
		| tee $(BENCH_RESULTS)/memory.md
	$(PY) bench/chart.py --results $(BENCH_RESULTS) --out docs/benchmarks-throughput-memory.png
	set -o pipefail; $(PY) bench/small_files.py --files $(BENCH_SMALL_FILES) --repeat $(BENCH_REPEAT) \
		--data $(BENCH_DATA) $(BENCH_ARGS) | tee $(BENCH_RESULTS)/small_files.md
	set -o pipefail; $(PY) bench/transform_scaling.py --orders $(BENCH_TRANSFORM_ORDERS) --repeat $(BENCH_REPEAT) \
		$(BENCH_ARGS) | tee $(BENCH_RESULTS)/transform.md
	set -o pipefail; $(PY) -m bench.latency --files 20 --size-mb 1 | tee $(BENCH_RESULTS)/latency.md
	set -o pipefail; $(PY) bench/status.py --versions $(BENCH_STATUS_VERSIONS) $(if $(BENCH_WAREHOUSE),--warehouse $(BENCH_WAREHOUSE)) \
		| tee $(BENCH_RESULTS)/status.md
	@echo "load average after: $$(uptime)" | tee -a $(BENCH_RESULTS)/uptime.txt

# On the node's pods (docs/benchmarks.md "Spark on pods" and "Small files in the cluster"): the same ~1 GB file
# by a loader Job and by a SparkApplication with two executor pods, interleaved; then small files with a Job
# each against the operator's inline loads; needs what `make test` needs for the cluster.
POD_BENCH_ORDERS ?= 27000000
POD_BENCH_REPEAT ?= 1
bench-pods: venv test-deps k8s-tools k8s-node-tools k8s-spark-operator node-deps image-deps spark-jars
	@mkdir -p $(BENCH_RESULTS)
	FILEDROP_POD_BENCH_ORDERS=$(POD_BENCH_ORDERS) FILEDROP_POD_BENCH_REPEAT=$(POD_BENCH_REPEAT) \
		FILEDROP_BENCH_DATA=$(BENCH_DATA) FILEDROP_POD_BENCH_OUT=$(BENCH_RESULTS)/spark-pods.json \
		$(PY) -m pytest -m podbench -s tests/k8s/test_spark_pods_bench.py
	FILEDROP_SMALL_BENCH_OUT=$(BENCH_RESULTS)/small-files-pods.json $(PY) -m pytest -m podbench -s \
		tests/k8s/test_small_files_pods_bench.py

# The fault-injection suite runs in `make test` with 200 files; this is its long version.
SOAK_FILES ?= 1000
SOAK_SEED ?= $(shell date +%s)
soak: venv test-deps k8s-tools k8s-node-tools node-deps image-deps
	FILEDROP_SOAK_FILES=$(SOAK_FILES) FILEDROP_SOAK_SEED=$(SOAK_SEED) FILEDROP_SOAK_REPORT=$(CACHE_DIR)/soak-report.json \
		$(PY) -m pytest -m soak -s tests/k8s/test_soak.py

unit: venv
	$(PY) -m pytest tests/unit

clean-venv:
	rm -rf $(VENV)

include tools/k8s/k8s.mk
include spark_images/spark.mk
include tools/images/images.mk

# `make cluster` (tools/k8s/k8s.mk) runs the virtualenv's Python.
cluster: venv
