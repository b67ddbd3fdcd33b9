"""Fixtures of the chart tests: the real control plane of tests/k8s (tests/support/k8s/cluster.py), and
helpers to render, validate and install the chart with its Helm binary.

The control plane fixtures are cluster.py's own functions, registered here with package scope: tests/k8s
registers them for its directory only, so in a run of the whole suite each directory gets its own control
plane, and package scope stops ours when tests/chart is done instead of keeping two up until the end.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from tests.support.k8s import cluster as _cluster
from tests.support.k8s.cluster import current_cluster, k8s_namespace  # noqa: F401  (fixtures)
from tests.support.k8s.pods import host_moto, host_pg, node_cluster, pod_aws, pod_warehouse  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "filedrop"
ALL_ON = CHART / "ci" / "all-on-values.yaml"

k8s_cluster = pytest.fixture(scope="package", name="k8s_cluster")(_cluster.k8s_cluster.__wrapped__)
k8s_thirdparty_crds = pytest.fixture(scope="package", name="k8s_thirdparty_crds")(
    _cluster.k8s_thirdparty_crds.__wrapped__)

RESTRICTED = {f"pod-security.kubernetes.io/{mode}": "restricted" for mode in ("enforce", "warn", "audit")}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "k8s: needs the real Kubernetes control plane (tools/k8s; built once by `make k8s-tools`)")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    outcome = yield
    report = outcome.get_result()
    cluster = current_cluster()
    uses = {"k8s_cluster", "node_cluster"} & set(getattr(item, "fixturenames", ()))
    if report.failed and cluster is not None and uses:
        report.sections.append(("k8s control plane logs", cluster.log_tails(25)))


@pytest.fixture(scope="package")
def chart_crds(k8s_cluster: Any, k8s_thirdparty_crds: list[str]) -> list[str]:
    """The chart's CRDs (filedrop's and kopf's), plus Argo's and spark-operator's from shared/thirdparty."""
    return list(k8s_cluster.install_crds([CHART / "crds"]))


@pytest.fixture
def restricted_namespace(k8s_cluster: Any) -> Any:
    """A fresh namespace that enforces (and warns about) the restricted Pod Security profile."""
    name = k8s_cluster.create_namespace(labels=RESTRICTED)
    yield name
    k8s_cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)


def helm_template(cluster: Any, namespace: str, *args: str, release: str = "filedrop") -> list[dict[str, Any]]:
    """``helm template`` of the chart (no CRDs), as parsed documents."""
    res = cluster.helm("template", release, str(CHART), "--namespace", namespace, *args)
    return [d for d in yaml.safe_load_all(res.stdout) if d]


def dump(docs: list[dict[str, Any]]) -> str:
    return "---\n".join(json.dumps(d) + "\n" for d in docs)


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def notifying_bucket(queue: str) -> tuple[Any, str]:
    """A new bucket (boto3's S3 client, its name) whose s3:ObjectCreated events go to the SQS ``queue``."""
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    bucket = f"drop-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    return s3, bucket


def older_crd(crd: dict[str, Any]) -> dict[str, Any]:
    """The CRD as a previous release had it: without the KEY printer column and with another description (what
    the CRD upgrade hook must bring up to date)."""
    old = json.loads(json.dumps(crd))
    [version] = old["spec"]["versions"]
    columns = version["additionalPrinterColumns"]
    assert any(c["name"] == "Key" for c in columns)
    version["additionalPrinterColumns"] = [c for c in columns if c["name"] != "Key"]
    version["schema"]["openAPIV3Schema"]["description"] = "an older release's description"
    return old
