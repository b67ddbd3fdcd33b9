# Kubernetes for tests and for people (tools/k8s/README.md). Included by the top-level
# Makefile, which defines PY (the project's virtualenv Python).
#
#   make k8s-tools     build the pinned etcd, kube-apiserver, kube-controller-manager, kubectl
#                      and helm once per machine, into ~/.cache/filedrop/k8s-.../bin
#   make cluster       start the control plane in the background, install the third-party CRDs
#                      and the repo's crds/, start the local runner; prints `export KUBECONFIG=...`
#   make cluster-down  stop all of it

K8S_TOOLS_DIR := $(dir $(lastword $(MAKEFILE_LIST)))
FILEDROP_HOME ?= $(HOME)/.local/share/filedrop
K8S_CLUSTER_DIR ?= $(FILEDROP_HOME)/cluster
FILEDROP_THIRDPARTY ?= $(abspath $(CURDIR)/../shared/thirdparty)

.PHONY: k8s-tools cluster cluster-put cluster-down

k8s-tools:
	@bash $(K8S_TOOLS_DIR)build.sh >/dev/null

cluster: k8s-tools
	@$(PY) $(K8S_TOOLS_DIR)controlplane.py up --dir "$(K8S_CLUSTER_DIR)" \
		--crds "$(FILEDROP_THIRDPARTY)" --crds "$(CURDIR)/crds" --runner
	@$(PY) $(K8S_TOOLS_DIR)stack.py up --dir "$(K8S_CLUSTER_DIR)"

# Drop a file into the local bucket: make cluster-put FILE=../shared/data/d2b/orders.csv
cluster-put:
	@$(PY) $(K8S_TOOLS_DIR)stack.py put "$(FILE)" --dir "$(K8S_CLUSTER_DIR)"

cluster-down:
	@$(PY) $(K8S_TOOLS_DIR)stack.py down --dir "$(K8S_CLUSTER_DIR)"
	@$(PY) $(K8S_TOOLS_DIR)controlplane.py down --dir "$(K8S_CLUSTER_DIR)"
