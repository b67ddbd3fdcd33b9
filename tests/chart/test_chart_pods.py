"""`helm install` for real: the chart's pods run on a real node (tools/k8s/node.py) from the filedrop image
built by `make images` from operator/Dockerfile, in a namespace enforcing the restricted Pod Security profile.

moto's S3/SQS and PostgreSQL run on the host and listen on the node's bridge address, the only address pods
can reach outside the pod network: they stand in for AWS and RDS outside the cluster. The d2b files put into
the bucket go bridge pod -> FileDrops -> operator pod -> loader Job pods -> PostgreSQL, exactly once.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest
import yaml

from tests.chart.conftest import CHART, RESTRICTED, notifying_bucket
from tests.conftest import D2B, DB
from tests.support.k8s.cluster import Cluster, start_node_cluster, thirdparty_dir
from tests.support.servers import DebianPostgres, start_moto
from tools.images.build import build as build_images
from tools.k8s.node import BRIDGE_IP

pytestmark = pytest.mark.k8s

TAG = "dev"


@pytest.fixture(scope="module")
def node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """A control plane with a node, the CRDs, and the filedrop image (built or taken from make images' cache)."""
    image = build_images(["filedrop"], TAG, force=False)["images"][f"filedrop:{TAG}"]  # type: ignore[index]
    cluster = start_node_cluster(tmp_path_factory.mktemp("k8s-pods"))
    try:
        cluster.install_crds([thirdparty_dir(), CHART / "crds"])
        cluster.import_image(Path(image["archive"]))
        yield cluster
    finally:
        leftovers = cluster.cp.stop()
        assert not leftovers, f"the node left the machine changed: {leftovers}"


@pytest.fixture(scope="module")
def host_pg() -> Iterator[DebianPostgres]:
    """PostgreSQL on the host, reachable by pods at the bridge address (RDS stand-in)."""
    server = DebianPostgres(pod_address=BRIDGE_IP).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def host_moto() -> Iterator[str]:
    endpoint, stop = start_moto(BRIDGE_IP)
    try:
        yield endpoint
    finally:
        stop()


class Pods:
    def __init__(self, cluster: Cluster, ns: str, db: DB, queue: str) -> None:
        self.cluster, self.ns, self.db, self.queue = cluster, ns, db, queue

    def kubectl(self, *args: str, check: bool = True) -> str:
        return str(self.cluster.kubectl(*args, "-n", self.ns, check=check).stdout)

    def json(self, *args: str) -> Any:
        return self.cluster.kubectl_json(*args, "-n", self.ns)

    def filedrops(self) -> dict[str, dict[str, Any]]:
        return {fd["spec"]["key"]: fd for fd in self.json("get", "filedrops")["items"]}

    def story(self) -> str:
        """What a person would look at when something hangs."""
        parts = [self.kubectl("get", "pods,jobs,filedrops", "-o", "wide", check=False),
                 self.kubectl("get", "events", "--sort-by=.lastTimestamp", check=False)[-4000:]]
        for component in ("operator", "bridge"):
            parts.append(f"--- {component} logs\n"
                         + self.kubectl("logs", f"deployment/filedrop-{component}", "--tail=60", check=False))
        return "\n".join(parts)

    def wait(self, check: Any, what: str, timeout: float = 240) -> None:
        try:
            self.cluster.wait_for(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.story()}") from None

    def ready(self, deployment: str) -> bool:
        status = self.json("get", "deployment", deployment).get("status", {})
        return bool(status.get("readyReplicas", 0) >= 1)


@pytest.fixture
def pods(node_cluster: Cluster, host_pg: DebianPostgres, host_moto: str, tmp_path: Path,
         monkeypatch: pytest.MonkeyPatch) -> Iterator[Pods]:
    """The chart installed as a user would, its Secrets first (docs/install-eks.md), in a restricted namespace."""
    for var, value in {"AWS_ENDPOINT_URL": host_moto, "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(var, value)
    database = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(host_pg.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    ns = node_cluster.create_namespace(labels=RESTRICTED)
    node_cluster.kubectl("create", "secret", "generic", "filedrop-warehouse", "-n", ns,
                         f"--from-literal=url={host_pg.pod_url.rsplit('/', 1)[0]}/{database}")
    node_cluster.kubectl("create", "secret", "generic", "filedrop-aws", "-n", ns,
                         "--from-literal=AWS_ACCESS_KEY_ID=testing", "--from-literal=AWS_SECRET_ACCESS_KEY=testing")
    queue = boto3.client("sqs").create_queue(QueueName=f"events-{uuid.uuid4().hex[:8]}",
                                             Attributes={"VisibilityTimeout": "5"})["QueueUrl"]
    values = {
        "image": {"repository": "filedrop", "tag": TAG, "pullPolicy": "Never"},
        "aws": {"region": "us-east-1", "endpointUrl": host_moto, "existingSecret": "filedrop-aws"},
        "bridge": {"enabled": True, "queueUrl": queue, "waitSeconds": 1, "visibilityTimeout": 5, "replicas": 1},
        "operator": {"verbose": True, "backoffSeconds": 1, "peeringLifetime": 10},
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    res = node_cluster.helm("install", "filedrop", str(CHART), "-n", ns, "-f", str(tmp_path / "values.yaml"))
    assert "warning" not in res.stderr.lower(), res.stderr
    db = DB(f"{host_pg.url.rsplit('/', 1)[0]}/{database}")
    p = Pods(node_cluster, ns, db, queue)
    try:
        yield p
    finally:
        node_cluster.helm("uninstall", "filedrop", "-n", ns, "--wait", "--timeout", "120s", check=False)
        node_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_helm_install_runs_the_d2b_flow_on_real_pods(pods: Pods) -> None:
    # the operator and the bridge become Ready through their probes, under the restricted profile
    pods.wait(lambda: pods.ready("filedrop-operator") and pods.ready("filedrop-bridge"),
              "the operator and bridge pods Ready")

    s3, bucket = notifying_bucket(pods.queue)
    for name in ("orders.csv", "reviews.csv", "shipment_deliveries.csv"):
        s3.put_object(Bucket=bucket, Key=f"orders_data/{name}", Body=(D2B / name).read_bytes())

    def all_loaded() -> bool:
        fds = pods.filedrops()
        return len(fds) == 3 and all((fd.get("status") or {}).get("phase") == "Loaded" for fd in fds.values())
    pods.wait(all_loaded, "the three d2b FileDrops Loaded by loader Job pods")

    # rows landed exactly once
    assert pods.db.one("SELECT count(*) FROM staging.orders") == 10000
    assert pods.db.one("SELECT count(*) FROM staging.reviews") == 7236
    assert pods.db.one("SELECT count(*) FROM staging.shipment_deliveries") == 10000
    assert sorted(h["status"] for h in pods.db.history()) == ["loaded"] * 3

    # the loads ran in pods of the chart's loader ServiceAccount, and they completed
    loader_pods = pods.json("get", "pods", "-l", "filedrop.dev/filedrop")["items"]
    assert loader_pods, pods.story()
    assert {p["spec"]["serviceAccountName"] for p in loader_pods} == {"filedrop-loader"}
    assert {p["status"]["phase"] for p in loader_pods} == {"Succeeded"}

    # kubectl tells the story: the table shows Loaded, a loader pod's log says what it loaded
    table = pods.kubectl("get", "filedrops")
    assert sum(" Loaded " in ln for ln in table.splitlines()) == 3, table
    orders = next(fd for key, fd in pods.filedrops().items() if key.endswith("orders.csv"))
    job = orders["status"].get("job")
    assert job, json.dumps(orders["status"])
    log = pods.kubectl("logs", f"job/{job}")
    assert re.search(r"10,?000", log), log
    # kopf's finalizer is gone from final FileDrops: they delete without the operator
    assert [fd["metadata"].get("finalizers") for fd in pods.filedrops().values()] == [None, None, None]


def test_operator_pod_deleted_mid_flow_and_a_bad_header_on_real_pods(pods: Pods) -> None:
    """The Deployment brings a deleted operator pod back; nothing is lost or doubled; a file whose header
    does not match its FileRoute ends Failed with the reason, and the others load."""
    pods.wait(lambda: pods.ready("filedrop-operator") and pods.ready("filedrop-bridge"),
              "the operator and bridge pods Ready")
    [first] = pods.json("get", "pods", "-l", "app.kubernetes.io/component=operator")["items"]
    s3, bucket = notifying_bucket(pods.queue)
    s3.put_object(Bucket=bucket, Key="orders_data/orders_broken.csv", Body=b"order_no,when\n1,2022-01-01\n")
    for name in ("orders.csv", "reviews.csv"):
        s3.put_object(Bucket=bucket, Key=f"orders_data/{name}", Body=(D2B / name).read_bytes())
    # as soon as the operator has started on them, its pod goes
    pods.wait(lambda: any((fd.get("status") or {}).get("phase") for fd in pods.filedrops().values()),
              "the operator taking up the first FileDrop")
    pods.kubectl("delete", "pod", first["metadata"]["name"], "--wait=false")

    def replaced() -> bool:
        items = pods.json("get", "pods", "-l", "app.kubernetes.io/component=operator")["items"]
        return any(p["metadata"]["uid"] != first["metadata"]["uid"] for p in items) and pods.ready("filedrop-operator")
    pods.wait(replaced, "the Deployment's new operator pod Ready")

    def all_final() -> bool:
        fds = pods.filedrops()
        return len(fds) == 3 and all((fd.get("status") or {}).get("phase") in ("Loaded", "Failed")
                                     for fd in fds.values())
    pods.wait(all_final, "the three FileDrops final after the operator pod was replaced")
    phases = {key.rsplit("/", 1)[-1]: fd["status"] for key, fd in pods.filedrops().items()}
    assert phases["orders.csv"]["phase"] == phases["reviews.csv"]["phase"] == "Loaded", phases
    broken = phases["orders_broken.csv"]
    assert broken["phase"] == "Failed", broken
    assert "header does not match FileRoute orders" in broken["message"], broken
    assert "missing column(s)" in broken["message"], broken
    # exactly once: one loaded history row per loaded file, no rows of the broken file
    assert pods.db.one("SELECT count(*) FROM staging.orders") == 10000
    assert pods.db.one("SELECT count(*) FROM staging.reviews") == 7236
    loaded = [h for h in pods.db.history() if h["status"] == "loaded"]
    assert len(loaded) == 2, pods.db.history()
