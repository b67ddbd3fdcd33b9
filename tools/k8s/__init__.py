"""A real Kubernetes control plane on loopback (tools/k8s/README.md): ``python -m tools.k8s.controlplane``
starts and stops it, ``python -m tools.k8s.stack`` runs filedrop's topology on it."""
