"""Kubernetes for the tests: a small REST client (kube), the control-plane fixtures (cluster), the node's
pods, their host services and the spark-operator on the node (pods) and filedrop installed in a namespace
(topology).

The control plane itself is tools/k8s (:mod:`tools.k8s.controlplane`), which ``make cluster`` also uses.
"""
