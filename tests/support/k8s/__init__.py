"""Kubernetes for the tests: a small REST client (kube), the local stand-in for the spark-operator until
issue 16 runs the real one (runner), the control-plane fixtures (cluster), the node's pods and their host
services (pods) and filedrop installed in a namespace (topology).

The control plane itself is tools/k8s (:mod:`tools.k8s.controlplane`), which ``make cluster`` also uses.
"""
