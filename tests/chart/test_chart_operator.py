"""The chart's operator and bridge, end to end on the real control plane.

The chart is installed into a namespace that enforces the restricted Pod Security profile. No kubelet runs
its Deployments, so the test runs each Deployment's container the way the pod would: its command and args,
its environment resolved from the chart's ConfigMap and Secret references, and the chart ServiceAccount's
token (RBAC as installed). An S3 upload (moto, real S3 -> SQS notification) then flows bridge -> FileDrop ->
operator -> load Job (run by the local runner, under the chart's loader ServiceAccount and Pod Security) ->
PostgreSQL.

test_chart_pods.py runs the same flow on real pods (a node, the image built from operator/Dockerfile); this
test stays for what it shows beside that: the operator's metrics and health endpoints and the peering object,
read from the host.
"""

from __future__ import annotations

import base64
import json
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from tests.chart.conftest import CHART, notifying_bucket
from tests.conftest import D2B, DB
from tests.support.k8s.kube import token_kubeconfig
from tests.support.k8s.runner import LocalRunner
from tests.support.servers import free_port

pytestmark = [pytest.mark.k8s, pytest.mark.parametrize("pg_server", ["pg18-embedded"], indirect=True)]


@dataclass
class Release:
    cluster: Any
    runner: Any
    ns: str
    tmp: Path
    queue: str
    ports: dict[str, int]
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def kubeconfig(self, service_account: str) -> str:
        token = self.cluster.kubectl("create", "token", service_account, "-n", self.ns, "--duration=1h").stdout.strip()
        admin = yaml.safe_load(Path(self.cluster.kubeconfig).read_text())["clusters"][0]["cluster"]
        ca = admin.get("certificate-authority-data") or base64.b64encode(
            Path(admin["certificate-authority"]).read_bytes()).decode()
        path = self.tmp / f"{service_account}.kubeconfig"
        path.write_text(token_kubeconfig(self.cluster.server, ca, token, self.ns))
        return str(path)

    def run_deployment(self, component: str) -> list[str]:
        """Start the Deployment's container locally, as its pod would run; returns its argv."""
        deploy = self.cluster.kubectl_json("get", "deployment", f"filedrop-{component}", "-n", self.ns)
        pod = deploy["spec"]["template"]["spec"]
        [container] = pod["containers"]
        env = self.runner._container_env(deploy, container, self.kubeconfig(pod["serviceAccountName"]))
        argv = LocalRunner._argv(container, env)
        log = open(self.tmp / f"{component}.log", "ab")
        self.procs[component] = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT)
        return argv

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}"
                         for p in sorted(self.tmp.glob("*.log")))

    def filedrops(self) -> dict[str, dict[str, Any]]:
        items = self.cluster.kubectl_json("get", "filedrops", "-n", self.ns)["items"]
        return {fd["spec"]["key"]: fd for fd in items}

    def wait(self, check: Any, what: str, timeout: float = 180) -> None:
        for name, proc in self.procs.items():
            assert proc.poll() is None, f"{name} exited with {proc.returncode}\n{self.logs()}"
        try:
            self.cluster.wait_for(check, timeout, what)
        except AssertionError as exc:
            phases = {k: (fd.get("status") or {}).get("phase") for k, fd in self.filedrops().items()}
            raise AssertionError(f"{exc}\nFileDrops: {phases}\n{self.logs()}") from None

    def http(self, port: int, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:  # noqa: S310
            return str(resp.read().decode())


@pytest.fixture
def release(k8s_cluster: Any, chart_crds: list[str], local_runner: Any, restricted_namespace: str, warehouse: str,
            aws: str, tmp_path: Path) -> Iterator[Release]:
    ns = restricted_namespace
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex[:8]}",
                             Attributes={"VisibilityTimeout": "5"})["QueueUrl"]
    # What an installer creates first (docs/install-eks.md): the Secrets the chart refers to.
    k8s_cluster.kubectl("create", "secret", "generic", "filedrop-warehouse", "-n", ns,
                        f"--from-literal=url={warehouse}")
    k8s_cluster.kubectl("create", "secret", "generic", "filedrop-aws", "-n", ns,
                        "--from-literal=AWS_ACCESS_KEY_ID=testing", "--from-literal=AWS_SECRET_ACCESS_KEY=testing")
    ports = {"metrics": free_port(), "health": free_port()}
    values = {
        "aws": {"region": "us-east-1", "endpointUrl": aws, "existingSecret": "filedrop-aws"},
        "bridge": {"enabled": True, "queueUrl": queue, "waitSeconds": 1, "visibilityTimeout": 5, "replicas": 1},
        "operator": {"verbose": True, "metricsPort": ports["metrics"], "healthPort": ports["health"],
                     "backoffSeconds": 1, "peeringLifetime": 10},
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    res = k8s_cluster.helm("install", "filedrop", str(CHART), "-n", ns, "-f", str(tmp_path / "values.yaml"))
    assert "warning" not in res.stderr.lower(), res.stderr
    rel = Release(k8s_cluster, local_runner, ns, tmp_path, queue, ports)
    try:
        yield rel
    finally:
        for proc in rel.procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()


def test_chart_operator_and_bridge_load_the_d2b_files(release: Release, db: DB) -> None:
    operator_argv = release.run_deployment("operator")
    assert operator_argv[:3] == ["filedrop", "--verbose", "operator"] and "--peering" in operator_argv
    release.run_deployment("bridge")
    s3, bucket = notifying_bucket(release.queue)
    for name in ("orders.csv", "reviews.csv", "shipment_deliveries.csv"):
        s3.put_object(Bucket=bucket, Key=f"orders_data/{name}", Body=(D2B / name).read_bytes())

    def all_loaded() -> bool:
        fds = release.filedrops()
        return len(fds) == 3 and all((fd.get("status") or {}).get("phase") == "Loaded" for fd in fds.values())
    release.wait(all_loaded, "the three d2b FileDrops Loaded")
    assert db.one("SELECT count(*) FROM staging.orders") == 10000
    assert db.one("SELECT count(*) FROM staging.reviews") == 7236
    assert db.one("SELECT count(*) FROM staging.shipment_deliveries") == 10000
    assert {h["status"] for h in db.history()} == {"loaded"}
    # kopf's finalizer stays only while a FileDrop is followed: final ones delete without the operator
    assert [fd["metadata"].get("finalizers") for fd in release.filedrops().values()] == [None, None, None]

    # the load Jobs ran under the chart's loader ServiceAccount, in the restricted namespace
    jobs = release.cluster.kubectl_json("get", "jobs", "-n", release.ns)["items"]
    assert len(jobs) == 3
    assert {j["spec"]["template"]["spec"]["serviceAccountName"] for j in jobs} == {"filedrop-loader"}
    # the chart's routes (d2b defaults) and NOTES' commands show what happened
    table = release.cluster.kubectl("get", "filedrops", "-n", release.ns).stdout
    assert sum(" Loaded " in ln for ln in table.splitlines()) == 3
    release.wait(lambda: "1" == release.cluster.kubectl("get", "fileroute", "orders", "-n", release.ns, "-o",
                                                        "jsonpath={.status.filesLoaded}").stdout, "FileRoute status")
    # the probes' and the metrics Service's ports are the ones the operator serves
    assert release.http(release.ports["health"], "/healthz")
    metrics = release.http(release.ports["metrics"], "/metrics")
    assert 'filedrop_files_total{phase="Loaded",route="orders"} 1.0' in metrics
    deploy = release.cluster.kubectl_json("get", "deployment", "filedrop-operator", "-n", release.ns)
    probe = deploy["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]
    assert probe == {"path": "/healthz", "port": "health", "scheme": "HTTP"}
    peering = release.cluster.kubectl_json("get", "kopfpeering", "filedrop", "-n", release.ns)
    assert peering.get("status"), "the operator did not take part in peering"
    assert json.dumps(peering["status"])  # one active operator registered
