"""Argo Workflows on this machine's cluster: upstream's namespace install (manifests/namespace-install, read
from the Go module release the binaries are built from, tools/k8s/argo-workflows/go.mod) with the image
`make images` builds (tools/k8s/argo-workflows/Dockerfile, ``docker.io/library/filedrop-argo``).

What upstream's kustomization renders, changed only where this cluster needs it:
- no CustomResourceDefinitions: the cluster already has Argo's CRDs from ../shared/thirdparty (they validate
  what filedrop submits; the install's "minimal" CRDs validate nothing) and no PriorityClass (cluster-scoped;
  one node, nothing to preempt);
- the restricted Pod Security profile: seccomp ``RuntimeDefault`` and upstream's uid 8737 on both pods, and the
  executor's containers (init and wait, in every workflow pod) hardened the same way;
- the executor image is the same image (argoexec is on its PATH), never pulled;
- ``argo server`` with ``--auth-mode=server`` (the server's own ServiceAccount; this is a local test cluster)
  over plain HTTP, reached at its pod's address, and without the UI's pop-ups (first visit, new version, survey);
- no artifact repository: the filedrop chart makes the namespace's (``argo.artifactRepository``, here on
  moto's S3 with :func:`chart_repository_values`), through which the docs step hands the docs site to
  publish-docs and where the steps' logs are archived;
- requests sized for one small node.
Used by `make cluster` (tools/k8s/stack.py) and the tests on pods (tests/support/k8s/pods.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from tools.k8s.base import module_dir, pinned_version

HERE = Path(__file__).resolve().parent
MODULE = "github.com/argoproj/argo-workflows/v3"
REPOSITORY = "library/filedrop-argo"
UID = 8737
SERVER_PORT = 2746
#: Where artifacts and archived logs go inside the bucket (<prefix>/<workflow>/<pod>/...).
ARTIFACT_PREFIX = "argo-artifacts"

RESTRICTED_CONTAINER = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                        "readOnlyRootFilesystem": True, "runAsNonRoot": True,
                        "seccompProfile": {"type": "RuntimeDefault"}}


def version() -> str:
    """The pinned release, from the wrapper module's go.mod (e.g. 3.7.18)."""
    return pinned_version(HERE / "argo-workflows", MODULE)


def image() -> str:
    return f"docker.io/{REPOSITORY}:{version()}"


def controller_config() -> dict[str, str]:
    """workflow-controller-configmap's data. The controller parses it strictly and exits on a key it does not
    know (3.7 has no ``containerRuntimeExecutor``: emissary is its only executor)."""
    executor = {
        "imagePullPolicy": "IfNotPresent",
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"memory": "256Mi"}},
        "securityContext": RESTRICTED_CONTAINER,
    }
    return {"executor": yaml.safe_dump(executor)}


def chart_repository_values(bucket: str, s3_endpoint: str, credentials_secret: str,
                            region: str = "us-east-1") -> dict[str, Any]:
    """The filedrop chart's ``argo.artifactRepository`` for a bucket on a test S3 (``http://host:port``)."""
    endpoint = urlsplit(s3_endpoint)
    if endpoint.scheme not in ("http", "https") or not endpoint.netloc:
        raise ValueError(f"the S3 endpoint must be http(s)://host:port, not {s3_endpoint!r}")
    return {"s3": {"bucket": bucket, "endpoint": endpoint.netloc, "insecure": endpoint.scheme == "http",
                   "region": region, "keyPrefix": ARTIFACT_PREFIX, "credentialsSecret": credentials_secret}}


def _harden(pod: dict[str, Any]) -> None:
    pod["securityContext"] = {"runAsNonRoot": True, "runAsUser": UID, "runAsGroup": UID,
                              "seccompProfile": {"type": "RuntimeDefault"}}
    for c in pod["containers"]:
        c["securityContext"] = copy.deepcopy(RESTRICTED_CONTAINER)
        c["image"] = image()
        c["imagePullPolicy"] = "IfNotPresent"


def manifests(rendered: str, namespace: str, config: dict[str, str]) -> list[dict[str, Any]]:
    """Upstream's namespace install (``rendered``: what ``kubectl kustomize`` makes of it) for ``namespace``,
    changed as the module docstring says."""
    docs = [d for d in yaml.safe_load_all(rendered) if d]
    out = []
    for doc in docs:
        kind = doc["kind"]
        if kind in ("CustomResourceDefinition", "PriorityClass"):
            continue
        doc["metadata"]["namespace"] = namespace
        if kind == "ConfigMap" and doc["metadata"]["name"] == "workflow-controller-configmap":
            doc["data"] = dict(config)
        if kind == "Deployment":
            pod = doc["spec"]["template"]["spec"]
            _harden(pod)
            [c] = pod["containers"]
            if doc["metadata"]["name"] == "workflow-controller":
                pod.pop("priorityClassName", None)
                c["args"] = ["--namespaced", "--executor-image", image(), "--executor-image-pull-policy",
                             "IfNotPresent"]
                c["env"] = [*c.get("env", []), {"name": "LEADER_ELECTION_DISABLE", "value": "true"}]
                c["resources"] = {"requests": {"cpu": "50m", "memory": "128Mi"}}
            else:  # argo-server
                c["command"] = ["argo"]
                c["args"] = ["server", "--namespaced", "--auth-mode=server", "--secure=false"]
                # no first-visit, new-version or survey pop-ups (their links lead off this machine)
                c["env"] = [*c.get("env", []), *({"name": f"{m}_MODAL", "value": "false"}
                                                   for m in ("FIRST_TIME_USER", "NEW_VERSION", "FEEDBACK"))]
                c["readinessProbe"] = {"httpGet": {"path": "/", "port": SERVER_PORT, "scheme": "HTTP"},
                                       "periodSeconds": 2}
                c["resources"] = {"requests": {"cpu": "20m", "memory": "64Mi"}}
        out.append(doc)
    return out


def install(kubectl: Callable[..., str], namespace: str, config: dict[str, str], timeout: str = "180s") -> None:
    """Apply the install to ``namespace`` and wait until the controller and the server are ready;
    ``kubectl(*args, input=...)`` runs kubectl against the cluster, returns its output and raises when it
    fails."""
    install_dir = module_dir(HERE / "argo-workflows", MODULE) / "manifests" / "namespace-install"
    rendered = kubectl("kustomize", str(install_dir))
    docs = manifests(rendered, namespace, config)
    kubectl("apply", "--server-side", "--force-conflicts", "-n", namespace, "-f", "-",
            input=yaml.safe_dump_all(docs))
    for name in ("workflow-controller", "argo-server"):
        kubectl("rollout", "status", f"deployment/{name}", "-n", namespace, f"--timeout={timeout}")


def workflow_run(template: str, parameters: dict[str, str], namespace: str | None = None) -> dict[str, Any]:
    """A Workflow that runs the WorkflowTemplate ``template`` with ``parameters`` (for ``kubectl create``;
    its name is generated)."""
    metadata: dict[str, str] = {"generateName": f"{template}-"}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "metadata": metadata,
            "spec": {"workflowTemplateRef": {"name": template},
                     "arguments": {"parameters": [{"name": k, "value": v} for k, v in parameters.items()]}}}


def server_url(kubectl_json: Callable[..., Any], namespace: str) -> str:
    """``http://<pod IP>:2746`` of the running argo-server pod (reachable from the node's host)."""
    pods = kubectl_json("get", "pods", "-n", namespace, "-l", "app=argo-server")["items"]
    ready = [p for p in pods if p["status"].get("podIP") and p["metadata"].get("deletionTimestamp") is None]
    if not ready:
        raise RuntimeError(f"no argo-server pod with an address in namespace {namespace}")
    return f"http://{ready[0]['status']['podIP']}:{SERVER_PORT}"
