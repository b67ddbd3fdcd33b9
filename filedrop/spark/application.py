"""The SparkApplication (``sparkoperator.k8s.io/v1beta2``, Kubeflow spark-operator) that loads one FileDrop.

Pure: :func:`build_spark_application` returns a dict; the operator does the one API call. The job runs
:mod:`filedrop.spark.job` — the whole load protocol, so the driver checks history, loads through the
Spark engine and records the outcome — with resources from :mod:`filedrop.spark.sizing`.

Secrets never appear in the manifest: the warehouse password reaches driver and executors as
``PGPASSWORD`` from a Kubernetes Secret (``secretKeyRef``), and S3 credentials come from
IRSA (web identity: the service account's role) or from a Secret the same way.

Environment, security contexts and volumes are in the driver's and executor's pod *templates*
(``spec.driver.template``), not in the SparkPodSpec fields of the same names: spark-submit builds the pods
on the template, so they arrive whether or not the spark-operator's mutating webhook runs. The SparkPodSpec
fields reach a pod only through that webhook, and without it they are dropped without a word (the pod
would then lack the warehouse URL and fail restricted Pod Security).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from filedrop.objects import SourceObject
from filedrop.spark.sizing import Tier

API_VERSION = "sparkoperator.k8s.io/v1beta2"
KIND = "SparkApplication"
FILEDROP_API_VERSION = "filedrop.dev/v1alpha1"
#: Where the image puts the job's main file (spark_images/Dockerfile).
MAIN_FILE = "local:///opt/filedrop/job.py"
#: The container names spark-submit looks for in the pod templates (the spark-operator passes them).
DRIVER_CONTAINER = "spark-kubernetes-driver"
EXECUTOR_CONTAINER = "spark-kubernetes-executor"


@dataclass(frozen=True)
class SparkJobConfig:
    """Cluster settings that are the same for every load (chart values)."""

    image: str
    namespace: str
    service_account: str = "filedrop-spark"
    spark_version: str = "4.3.0"
    image_pull_policy: str = "IfNotPresent"
    #: Secret holding the warehouse connection: keys ``url`` (no password) and ``password``.
    warehouse_secret: str = "filedrop-warehouse"
    #: Optional Secret with AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (without IRSA).
    aws_secret: str | None = None
    #: ``AWS_ENDPOINT_URL`` for an S3-compatible server; None for AWS.
    s3_endpoint: str | None = None
    aws_region: str = "us-east-1"
    ttl_seconds: int = 3600
    staging_schema: str = "staging"
    meta_schema: str = "filedrop"
    routes_config_map: str | None = "filedrop-routes"
    extra_spark_conf: Mapping[str, str] = field(default_factory=dict)
    #: CPU the driver and each executor pod request (``coreRequest``, e.g. "250m"); None: their cores.
    #: Spark's default asks a whole core per core, which a small node may not have for driver + executors.
    core_request: str | None = None


def application_name(filedrop_name: str, attempt: int) -> str:
    """Deterministic per FileDrop and attempt: a retried reconcile finds, never twins, its job."""
    return f"{filedrop_name}-load-{attempt}"[:63].rstrip("-")


ROUTES_DIR = "/etc/filedrop/routes"


def job_arguments(obj: SourceObject, route: str, filedrop_name: str, routes_dir: str | None = ROUTES_DIR,
                  route_json: str | None = None, replay: str = "") -> list[str]:
    """Arguments of :mod:`filedrop.spark.job`: the object version exactly as the FileDrop names it."""
    args = [f"s3://{obj.bucket}/{obj.key}", "--route", route, "--etag", obj.etag, "--size", str(obj.size),
            "--filedrop", filedrop_name]
    if route_json:
        args += ["--route-json", route_json]
    if replay:
        args += ["--replay", replay]
    if obj.version_id:
        args += ["--version-id", obj.version_id]
    if obj.sequencer:
        args += ["--sequencer", obj.sequencer]
    if obj.last_modified is not None:
        args += ["--last-modified", obj.last_modified.isoformat()]
    if routes_dir:
        args += ["--routes", routes_dir]
    return args


def _env(cfg: SparkJobConfig, tier: Tier, *, driver: bool) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = [
        {"name": "FILEDROP_WAREHOUSE_URL", "valueFrom": {"secretKeyRef": {"name": cfg.warehouse_secret, "key": "url"}}},
        {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": cfg.warehouse_secret, "key": "password",
                                                             "optional": True}}},
        {"name": "FILEDROP_STAGING_SCHEMA", "value": cfg.staging_schema},
        {"name": "FILEDROP_META_SCHEMA", "value": cfg.meta_schema},
        {"name": "AWS_REGION", "value": cfg.aws_region},
    ]
    if cfg.s3_endpoint:
        env.append({"name": "AWS_ENDPOINT_URL", "value": cfg.s3_endpoint})
    if cfg.aws_secret:
        env += [{"name": k, "valueFrom": {"secretKeyRef": {"name": cfg.aws_secret, "key": k}}}
                for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")]
    if driver and tier.driver_only:
        env.append({"name": "FILEDROP_SPARK_MASTER", "value": f"local[{tier.driver_cores}]"})
    return env


def build_spark_application(*, filedrop: Mapping[str, Any], route: str, obj: SourceObject, tier: Tier,
                            config: SparkJobConfig, attempt: int = 1, route_json: str | None = None,
                            replay: str = "") -> dict[str, Any]:
    """The SparkApplication for one FileDrop (``filedrop`` is the CR: metadata name, namespace, uid)."""
    meta = filedrop["metadata"]
    name = application_name(meta["name"], attempt)
    labels = {
        "app.kubernetes.io/name": "filedrop",
        "app.kubernetes.io/component": "spark-load",
        "app.kubernetes.io/managed-by": "filedrop-operator",
        "filedrop.dev/filedrop": meta["name"],
        "filedrop.dev/route": route,
        "filedrop.dev/tier": tier.name,
    }
    spark_conf = {
        # The operator owns retries; a task retried after its COPY committed would load rows twice.
        "spark.task.maxFailures": "1",
        "spark.speculation": "false",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "65536",
        "spark.sql.session.timeZone": "UTC",
        "spark.kubernetes.driver.label.filedrop.dev/filedrop": meta["name"],
        "spark.kubernetes.executor.label.filedrop.dev/filedrop": meta["name"],
    }
    spark_conf.update(config.extra_spark_conf)
    hadoop_conf = {
        "fs.s3a.aws.credentials.provider": (
            "software.amazon.awssdk.auth.credentials.WebIdentityTokenFileCredentialsProvider,"
            "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider,"
            "org.apache.hadoop.fs.s3a.auth.IAMInstanceCredentialsProvider"),
        "fs.s3a.endpoint.region": config.aws_region,
        "fs.s3a.change.detection.mode": "server",
        "fs.s3a.change.detection.source": "etag",
    }
    if config.s3_endpoint:
        hadoop_conf.update({"fs.s3a.endpoint": config.s3_endpoint, "fs.s3a.path.style.access": "true",
                            "fs.s3a.connection.ssl.enabled": str(config.s3_endpoint.startswith("https")).lower()})
    pod_security = {"runAsNonRoot": True, "runAsUser": 185, "fsGroup": 185,
                    "seccompProfile": {"type": "RuntimeDefault"}}
    container_security = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                          "readOnlyRootFilesystem": False}
    volume_mounts = []
    volumes = []
    if config.routes_config_map and not route_json:
        volumes.append({"name": "routes", "configMap": {"name": config.routes_config_map}})
        volume_mounts.append({"name": "routes", "mountPath": ROUTES_DIR, "readOnly": True})
    args = job_arguments(obj, route, meta["name"], ROUTES_DIR if config.routes_config_map and not route_json else None,
                         route_json, replay)

    def template(container: str, env: list[dict[str, Any]]) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "securityContext": pod_security,
            "containers": [{"name": container, "env": env, "securityContext": container_security,
                            **({"volumeMounts": volume_mounts} if volume_mounts else {})}],
        }
        if volumes:
            spec["volumes"] = volumes
        return {"spec": spec}

    requests = {"coreRequest": config.core_request} if config.core_request else {}
    driver: dict[str, Any] = {
        "cores": tier.driver_cores,
        "memory": tier.driver_memory,
        "serviceAccount": config.service_account,
        "labels": labels,
        **requests,
        "template": template(DRIVER_CONTAINER, _env(config, tier, driver=True)),
    }
    executor: dict[str, Any] = {
        # driver-only tiers run local[cores] in the driver and start no executor: the schema still
        # wants an executor section, so it states the smallest one.
        "instances": max(tier.executors, 1),
        "cores": tier.executor_cores,
        "memory": tier.executor_memory,
        "labels": labels,
        **requests,
        "template": template(EXECUTOR_CONTAINER, _env(config, tier, driver=False)),
    }
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace", config.namespace),
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": FILEDROP_API_VERSION, "kind": "FileDrop", "name": meta["name"], "uid": meta["uid"],
                "controller": True, "blockOwnerDeletion": True,
            }],
        },
        "spec": {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "image": config.image,
            "imagePullPolicy": config.image_pull_policy,
            "mainApplicationFile": MAIN_FILE,
            "arguments": args,
            "sparkVersion": config.spark_version,
            "restartPolicy": {"type": "Never"},
            "timeToLiveSeconds": config.ttl_seconds,
            "sparkConf": spark_conf,
            "hadoopConf": hadoop_conf,
            "driver": driver,
            "executor": executor,
        },
    }
