"""Manifests of the direct-loader ``batch/v1`` Job the operator creates for a FileDrop. Pure.

Names are deterministic per (FileDrop, attempt), so a retried reconcile can never make a twin; the
Job is owned by its FileDrop (garbage-collected with it) and runs ``filedrop load`` pinned to the
exact object version, with the route passed as JSON and the warehouse URL from a Secret.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from filedrop.cluster.reconcile import JobState
from filedrop.cluster.resources import FILEDROP_LABEL, GROUP, ROUTE_LABEL, VERSION, _label_value
from filedrop.routes import FileRoute

RESTRICTED_CONTAINER = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}


@dataclass(frozen=True)
class JobSettings:
    """How the operator's load Jobs look; set from the operator's environment (chart values)."""

    image: str = "ghcr.io/filedrop/filedrop:0.1.0"
    service_account: str = "filedrop-loader"
    warehouse_secret: str = "filedrop-warehouse"
    warehouse_secret_key: str = "url"
    ttl_seconds_after_finished: int = 3600
    active_deadline_seconds: int = 6 * 3600
    cpu_request: str = "250m"
    memory_request: str = "256Mi"
    memory_limit: str = "512Mi"
    #: extra environment for the loader (e.g. AWS_ENDPOINT_URL, AWS_REGION); never secrets.
    env: dict[str, str] = field(default_factory=dict)
    #: a Secret whose keys become environment variables (e.g. AWS keys outside EKS); optional.
    env_secret: str | None = None


def job_name(filedrop: str, attempt: int) -> str:
    return f"{filedrop}-{attempt}"


def owner_reference(filedrop: Mapping[str, Any]) -> dict[str, Any]:
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": "FileDrop", "name": filedrop["metadata"]["name"],
            "uid": filedrop["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def load_command(filedrop: Mapping[str, Any], route: FileRoute, engine: str, replay: str = "") -> list[str]:
    """``filedrop load`` for exactly the version the FileDrop names."""
    spec = filedrop["spec"]
    cmd = ["filedrop", "load", f"s3://{spec['bucket']}/{spec['key']}", "--route", route.name,
           "--route-json", json.dumps(route.model_dump(by_alias=True, exclude_none=True, mode="json"),
                                      separators=(",", ":")),
           "--engine", engine, "--filedrop", filedrop["metadata"]["name"],
           "--etag", spec["etag"], "--size", str(int(spec.get("size") or 0))]
    if spec.get("versionId"):
        cmd += ["--version-id", spec["versionId"]]
    if spec.get("sequencer"):
        cmd += ["--sequencer", spec["sequencer"]]
    if replay:
        cmd += ["--replay", replay]
    return cmd


def build_loader_job(filedrop: Mapping[str, Any], route: FileRoute, attempt: int, settings: JobSettings,
                     replay: str = "") -> dict[str, Any]:
    """The Job that loads one FileDrop with the direct engine."""
    name = job_name(filedrop["metadata"]["name"], attempt)
    labels = {
        "app.kubernetes.io/name": "filedrop",
        "app.kubernetes.io/component": "loader",
        "app.kubernetes.io/managed-by": "filedrop-operator",
        FILEDROP_LABEL: filedrop["metadata"]["name"],
        ROUTE_LABEL: _label_value(route.name),
    }
    env = [{"name": "FILEDROP_WAREHOUSE_URL",
            "valueFrom": {"secretKeyRef": {"name": settings.warehouse_secret, "key": settings.warehouse_secret_key}}},
           {"name": "HOME", "value": "/tmp"}]
    env += [{"name": k, "value": v} for k, v in sorted(settings.env.items())]
    container: dict[str, Any] = {
        "name": "load",
        "image": settings.image,
        "command": load_command(filedrop, route, "direct", replay),
        "env": env,
        "resources": {"requests": {"cpu": settings.cpu_request, "memory": settings.memory_request},
                      "limits": {"memory": settings.memory_limit}},
        "securityContext": RESTRICTED_CONTAINER,
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    if settings.env_secret:
        container["envFrom"] = [{"secretRef": {"name": settings.env_secret}}]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": filedrop["metadata"].get("namespace"), "labels": labels,
                     "ownerReferences": [owner_reference(filedrop)]},
        "spec": {
            "backoffLimit": 0,  # the operator owns retries (with backoff, and only when worth it)
            "ttlSecondsAfterFinished": settings.ttl_seconds_after_finished,
            "activeDeadlineSeconds": settings.active_deadline_seconds,
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "restartPolicy": "Never",
                    "serviceAccountName": settings.service_account,
                    "automountServiceAccountToken": False,
                    "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001,
                                        "fsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
                    "containers": [container],
                    "volumes": [{"name": "tmp", "emptyDir": {}}],
                },
            },
        },
    }


def job_state(job: Mapping[str, Any] | None) -> tuple[JobState, str]:
    """(``none`` | ``running`` | ``succeeded`` | ``failed``, message) from a Job's status."""
    if job is None:
        return "none", "the load job does not exist"
    status = job.get("status") or {}
    for cond in status.get("conditions") or []:
        if cond.get("status") != "True":
            continue
        if cond.get("type") == "Complete":
            return "succeeded", ""
        if cond.get("type") == "Failed":
            return "failed", cond.get("message") or cond.get("reason") or "the load job failed"
    if status.get("succeeded"):
        return "succeeded", ""
    return "running", ""


def spark_state(app: Mapping[str, Any] | None) -> tuple[JobState, str]:
    """The same for a SparkApplication (spark-operator's ``status.applicationState``)."""
    if app is None:
        return "none", "the SparkApplication does not exist"
    state = ((app.get("status") or {}).get("applicationState") or {})
    value = state.get("state", "")
    if value == "COMPLETED":
        return "succeeded", ""
    if value in ("FAILED", "SUBMISSION_FAILED"):
        return "failed", state.get("errorMessage") or f"Spark application {value.lower()}"
    return "running", ""
