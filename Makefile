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

# Shared inputs (the real d2b files, third-party CRDs) live beside the repository, not in it.
SHARED ?= $(firstword $(wildcard ../shared $(CURDIR)/../shared /work/shared))
export FILEDROP_D2B_DIR ?= $(SHARED)/data/d2b
export FILEDROP_THIRDPARTY ?= $(SHARED)/thirdparty
PG15_BIN := /usr/lib/postgresql/15/bin

.PHONY: help demo test test-deps unit venv clean-venv bench

help:
	@echo "make demo    - load the d2b files into an embedded PostgreSQL and show what happened"
	@echo "make test    - run the test suite (installs what it needs)"
	@echo "make unit    - only the fast tests that need no server"
	@echo "make bench   - load benchmarks (docs/benchmarks.md); not part of make test"
	@echo "make cluster - a local Kubernetes control plane for kubectl get filedrops (make cluster-down stops it)"

# The virtualenv is rebuilt when pyproject.toml changes; pip's own cache keeps that fast.
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

venv: $(VENV)/.installed

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

test: venv test-deps k8s-tools spark-jars
	$(PY) -m pytest

# Benchmarks (never part of `make test`): docs/benchmarks.md records the results and the command lines.
BENCH_ORDERS ?= 3000000
bench: venv spark-jars
	$(PY) bench/spark_vs_direct.py --orders $(BENCH_ORDERS)
	$(PY) bench/latency.py --files 20 --size-mb 1

unit: venv
	$(PY) -m pytest tests/unit

clean-venv:
	rm -rf $(VENV)

include tools/k8s/k8s.mk
include spark_images/spark.mk

# `make cluster` (tools/k8s/k8s.mk) runs the virtualenv's Python.
cluster: venv
