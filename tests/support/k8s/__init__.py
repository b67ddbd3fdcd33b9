"""Kubernetes for the tests: a small REST client (kube), the local stand-in for the kubelet and the
spark-operator (runner), the control-plane fixtures (cluster) and filedrop installed in a namespace (topology).

The control plane itself is tools/k8s (:mod:`tools.k8s.controlplane`), which ``make cluster`` also uses.
"""
