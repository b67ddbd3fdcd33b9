# Kubernetes for tests and for people (tools/k8s/README.md). Included by the top-level
# Makefile, which defines PY (the project's virtualenv Python).
#
#   make k8s-tools     build the pinned etcd, kube-apiserver, kube-controller-manager, kubectl
#                      and helm once per machine, into ~/.cache/filedrop/k8s-.../bin
#   make k8s-node-tools  build the node's kubelet, kube-proxy, kube-scheduler, containerd, ctr,
#                      coredns and pause/probe images once per machine (~/.cache/filedrop/k8s-node-.../bin)
#   make k8s-spark-operator  build the Kubeflow spark-operator's controller (~/.cache/filedrop/spark-operator-...)
#   make k8s-argo      build Argo Workflows' controller, executor, and server with its UI
#                      (~/.cache/filedrop/argo-workflows-...)
#   make node-deps     install Debian's runc, containernetworking-plugins, iptables, conntrack
#   make cluster       start the control plane and a node in the background, install the third-party
#                      CRDs and the repo's crds/, build and import the filedrop, Spark, spark-operator and
#                      Argo images, helm-install the spark-operator (its own chart), install Argo Workflows
#                      (its namespace install) and the chart with its workflows in namespace filedrop on
#                      real pods; prints `export KUBECONFIG=...`
#   make cluster-down  stop all of it, leaving the machine as it was

K8S_TOOLS_DIR := $(dir $(lastword $(MAKEFILE_LIST)))
# tools/ is a package: its modules run with `python -m` from the repository root (the top-level Makefile's directory)
FILEDROP_HOME ?= $(HOME)/.local/share/filedrop
K8S_CLUSTER_DIR ?= $(FILEDROP_HOME)/cluster
FILEDROP_THIRDPARTY ?= $(abspath $(CURDIR)/../shared/thirdparty)

NODE_DEBS := runc containernetworking-plugins iptables conntrack iproute2 util-linux

.PHONY: k8s-tools k8s-node-tools k8s-spark-operator k8s-argo node-deps cluster cluster-put cluster-transform cluster-down

k8s-tools:
	@bash $(K8S_TOOLS_DIR)build.sh >/dev/null

k8s-node-tools:
	@PYTHON=$(PY) bash $(K8S_TOOLS_DIR)build.sh node >/dev/null

# the Kubeflow spark-operator's controller from its Go module (tools/k8s/spark-operator/go.mod); its image is
# built from it by tools/images
k8s-spark-operator:
	@bash $(K8S_TOOLS_DIR)build.sh spark-operator >/dev/null

# Argo Workflows from its Go module (tools/k8s/argo-workflows/go.mod), the UI from its sources and npm
# (tools/k8s/argo-ui/build.sh); its image is built from them by tools/images
k8s-argo:
	@bash $(K8S_TOOLS_DIR)build.sh argo-workflows >/dev/null

node-deps:
	@missing=""; for p in $(NODE_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
		echo "installing Debian's$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

# The chart on the node's real pods (tools/k8s/stack.py up_pods): the filedrop image is built first.
cluster: k8s-tools k8s-node-tools k8s-spark-operator k8s-argo node-deps image-deps
	@$(PY) -m tools.k8s.controlplane up --dir "$(K8S_CLUSTER_DIR)" --node \
		--crds "$(FILEDROP_THIRDPARTY)" --crds "$(CURDIR)/crds"
	@$(PY) -m tools.k8s.stack up --dir "$(K8S_CLUSTER_DIR)"

# Drop a file into the local bucket: make cluster-put FILE=../shared/data/d2b/orders.csv [KEY=orders_data/x.csv]
cluster-put:
	@$(PY) -m tools.k8s.stack put "$(FILE)" --dir "$(K8S_CLUSTER_DIR)" $(if $(KEY),--key "$(KEY)")

# Run the dbt workflow now: make cluster-transform [DATE=2022-09-05]
cluster-transform:
	@$(PY) -m tools.k8s.stack transform --dir "$(K8S_CLUSTER_DIR)" $(if $(DATE),--date "$(DATE)")

cluster-down:
	@$(PY) -m tools.k8s.stack down --dir "$(K8S_CLUSTER_DIR)"
	@$(PY) -m tools.k8s.controlplane down --dir "$(K8S_CLUSTER_DIR)"
