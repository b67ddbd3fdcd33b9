"""The Kubeflow spark-operator on this machine's cluster: upstream's Helm chart, read from the same Go
module release the controller is built from (tools/k8s/spark-operator/go.mod), with the controller image
`make images` builds (tools/k8s/spark-operator/Dockerfile, ``docker.io/library/filedrop-spark-operator``).

Installed as the chart installs it (a controller Deployment, its ServiceAccount and RBAC), with these values:
- no webhook: filedrop's SparkApplications carry env, security contexts and volumes in pod templates
  (filedrop/spark/application.py), which spark-submit applies itself;
- no UI Service (a ClusterIP Service per application that nothing here reads) and no leader election (one
  replica);
- no Spark ServiceAccount or Role: the filedrop chart (or operator/rbac.yaml) makes the driver's own;
- ``spark.jobNamespaces``: the namespaces whose SparkApplications it runs ([""]: every namespace).
Used by `make cluster` (tools/k8s/stack.py) and the tests on pods (tests/support/k8s/pods.py).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml

from tools.k8s.base import module_dir, pinned_version

HERE = Path(__file__).resolve().parent
MODULE = "github.com/kubeflow/spark-operator/v2"
RELEASE = "spark-operator"
NAMESPACE = "spark-operator"
REPOSITORY = "library/filedrop-spark-operator"


def version() -> str:
    """The pinned release, from the wrapper module's go.mod (e.g. 2.5.2)."""
    return pinned_version(HERE / "spark-operator", MODULE)


def chart_dir() -> Path:
    """Upstream's chart inside the module (Go's module cache)."""
    chart = module_dir(HERE / "spark-operator", MODULE) / "charts" / "spark-operator-chart"
    if not (chart / "Chart.yaml").is_file():
        raise RuntimeError(f"no chart at {chart}")
    return chart


def values(job_namespaces: Sequence[str]) -> dict[str, Any]:
    return {
        "image": {"registry": "docker.io", "repository": REPOSITORY, "tag": version(), "pullPolicy": "IfNotPresent"},
        "controller": {
            "leaderElection": {"enable": False},
            "uiService": {"enable": False},
            # spark-submit is a JVM per submission in this pod: two at a time are plenty on a small node
            "workers": 2,
        },
        "webhook": {"enable": False},
        "spark": {"jobNamespaces": list(job_namespaces), "serviceAccount": {"create": False},
                  "rbac": {"create": False}},
        "prometheus": {"metrics": {"enable": False}},
    }


def install(helm: Callable[..., Any], values_file: Path, job_namespaces: Sequence[str],
            namespace: str = NAMESPACE, timeout: str = "5m") -> None:
    """``helm upgrade --install`` of the chart; ``helm(*args)`` runs helm against the cluster and raises
    when it fails. The chart's CRDs come along where the cluster lacks them: the controller also watches
    SparkConnects (v1alpha1), whose CRD ../shared/thirdparty does not have; helm leaves existing CRDs alone."""
    values_file.write_text(yaml.safe_dump(values(job_namespaces)))
    helm("upgrade", "--install", RELEASE, str(chart_dir()), "-n", namespace, "--create-namespace",
         "-f", str(values_file), "--wait", "--timeout", timeout)
