"""filedrop installed in one namespace of the real control plane, driven like production: CRDs,
RBAC, Secrets, FileRoutes, a bucket whose events go to an SQS queue (moto), and `filedrop operator`
and `filedrop bridge` as subprocesses with their ServiceAccounts' tokens. Shared by the end-to-end
tests and the fault-injection suite."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import boto3
import yaml

from filedrop.cluster.resources import route_manifest
from tests.support.k8s.kube import token_kubeconfig
from tests.support.servers import free_port

REPO = Path(__file__).resolve().parents[3]

AWS_SECRET = "aws-secret-Zq8v1x"  # moto accepts any keys; a distinctive one can be searched for


class Stack:
    """One namespace with filedrop installed: CRDs, RBAC, secrets, routes, bucket, queue, operator, bridge."""

    def __init__(self, cluster: Any, ns: str, warehouse: str, endpoint: str, tmp: Path, env: dict[str, str],
                 loader_image: str | None = None) -> None:
        self.cluster, self.ns, self.warehouse, self.endpoint, self.tmp = cluster, ns, warehouse, endpoint, tmp
        self.env = env
        self.loader_image = loader_image  # the loader Jobs' image (the operator's default otherwise)
        self.bucket = f"drop-{uuid.uuid4().hex[:8]}"
        self.s3 = boto3.client("s3")
        self.sqs = boto3.client("sqs")
        self.queue = self.sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex[:8]}",
                                           Attributes={"VisibilityTimeout": "5"})["QueueUrl"]
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def kubectl(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, **kw)

    def apply(self, docs: list[dict[str, Any]] | str) -> None:
        text = docs if isinstance(docs, str) else yaml.safe_dump_all(docs)
        self.kubectl("apply", "-n", self.ns, "-f", "-", input=text)

    def setup(self, routes: list[Any], notify: bool = True, notify_prefix: str = "") -> None:
        self.apply((REPO / "operator" / "rbac.yaml").read_text().replace("__NAMESPACE__", self.ns))
        self.kubectl("create", "secret", "generic", "filedrop-warehouse", "-n", self.ns,
                     f"--from-literal=url={self.warehouse}")
        self.kubectl("create", "secret", "generic", "aws-creds", "-n", self.ns,
                     "--from-literal=AWS_ACCESS_KEY_ID=testing", f"--from-literal=AWS_SECRET_ACCESS_KEY={AWS_SECRET}",
                     "--from-literal=AWS_DEFAULT_REGION=us-east-1")
        self.apply([{"apiVersion": "kopf.dev/v1", "kind": "KopfPeering", "metadata": {"name": "filedrop"}}])
        self.apply([route_manifest(r) for r in routes])
        self.s3.create_bucket(Bucket=self.bucket)
        if notify:
            attributes = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=["QueueArn"])["Attributes"]
            arn = attributes["QueueArn"]
            self.s3.put_bucket_notification_configuration(Bucket=self.bucket, NotificationConfiguration={
                "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"], **({"Filter": {
                    "Key": {"FilterRules": [{"Name": "prefix", "Value": notify_prefix}]}}} if notify_prefix else {})}]})

    def token_kubeconfig(self, service_account: str) -> str:
        token = self.kubectl("create", "token", service_account, "-n", self.ns, "--duration=2h").stdout.strip()
        admin = yaml.safe_load(Path(self.cluster.kubeconfig).read_text())
        cluster = admin["clusters"][0]["cluster"]
        ca = cluster.get("certificate-authority-data")
        if ca is None and cluster.get("certificate-authority"):
            import base64

            ca = base64.b64encode(Path(cluster["certificate-authority"]).read_bytes()).decode()
        path = self.tmp / f"{service_account}.kubeconfig"
        path.write_text(token_kubeconfig(self.cluster.server, ca, token, self.ns))
        return str(path)

    def start(self, name: str, args: list[str], service_account: str, extra_env: dict[str, str] | None = None) -> None:
        env = {**self.env, "KUBECONFIG": self.token_kubeconfig(service_account), **(extra_env or {})}
        log = open(self.tmp / f"{name}.log", "ab")
        self.procs[name] = subprocess.Popen([sys.executable, "-m", "filedrop", *args], env=env, stdout=log,
                                            stderr=subprocess.STDOUT)

    def start_operator(self, **limits: str) -> None:
        """The operator, with ``limits`` as extra environment. Every load gets a Job (the tests of Jobs, pods and
        their faults rely on that) unless FILEDROP_INLINE_MAX_BYTES is given."""
        self.metrics_port, self.liveness_port = free_port(), free_port()
        env = {"FILEDROP_WAREHOUSE_URL": self.warehouse, "FILEDROP_LOADER_ENV_SECRET": "aws-creds",
               "AWS_ENDPOINT_URL": self.endpoint, "FILEDROP_BACKOFF_SECONDS": "1",
               "FILEDROP_METRICS_PORT": str(self.metrics_port), "FILEDROP_PEERING_LIFETIME": "10",
               "FILEDROP_INLINE_MAX_BYTES": "0",
               **({"FILEDROP_LOADER_IMAGE": self.loader_image} if self.loader_image else {}), **limits}
        self.start("operator", ["-v", "operator", "--namespace", self.ns,
                                "--liveness", f"http://127.0.0.1:{self.liveness_port}/healthz"],
                   "filedrop-operator", env)

    def http(self, port: int, path: str) -> str:
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return str(resp.read().decode())

    def start_bridge(self) -> None:
        self.bridge_port = free_port()
        self.start("bridge", ["bridge", "--queue", self.queue, "--namespace", self.ns, "--wait", "1",
                              "--visibility", "5", "--allowed-bucket", self.bucket,
                              "--metrics-port", str(self.bridge_port)], "filedrop-bridge",
                   {"AWS_ENDPOINT_URL": self.endpoint})

    def stop(self, name: str, sig: int = signal.SIGTERM) -> None:
        proc = self.procs.pop(name, None)
        if proc and proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-4000:]}"
                         for p in sorted(self.tmp.glob("*.log")))

    def filedrops(self) -> list[dict[str, Any]]:
        return list(json.loads(self.kubectl("get", "filedrops", "-n", self.ns, "-o", "json").stdout)["items"])

    def phases_by_name(self) -> dict[str, str]:
        return {fd["metadata"]["name"]: (fd.get("status") or {}).get("phase", "") for fd in self.filedrops()}

    def phases(self) -> dict[str, str]:
        return {fd["spec"]["key"]: (fd.get("status") or {}).get("phase", "") for fd in self.filedrops()}

    def wait(self, check: Any, what: str, timeout: float = 120) -> Any:
        def alive_and(check: Any) -> Any:
            for name, proc in list(self.procs.items()):  # an operator or bridge that died fails the wait at once
                assert proc.poll() is None, f"{name} exited with {proc.returncode}\n{self.logs()}"
            return check()
        try:
            return self.cluster.wait_for(lambda: alive_and(check), timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nFileDrops: {self.phases()}\n{self.logs()}") from None

    def put(self, key: str, body: bytes) -> dict[str, Any]:
        return dict(self.s3.put_object(Bucket=self.bucket, Key=key, Body=body))

    def send(self, body: str) -> None:
        self.sqs.send_message(QueueUrl=self.queue, MessageBody=body)

    def queue_depth(self) -> int:
        attrs = self.sqs.get_queue_attributes(QueueUrl=self.queue, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return sum(int(v) for v in attrs.values())


def s3_event(bucket: str, key: str, etag: str, size: int, sequencer: str, version_id: str | None = None) -> str:
    from urllib.parse import quote_plus

    obj: dict[str, Any] = {"key": quote_plus(key), "size": size, "eTag": etag}
    if sequencer:
        obj["sequencer"] = sequencer
    if version_id:
        obj["versionId"] = version_id
    return json.dumps({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
                                    "eventTime": "2026-11-26T10:00:00.000Z",
                                    "s3": {"bucket": {"name": bucket}, "object": obj}}]})
