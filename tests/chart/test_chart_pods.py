"""`helm install` for real: the chart's pods run on a real node (tools/k8s/node.py) from the filedrop image
built by `make images` from operator/Dockerfile, in a namespace enforcing the restricted Pod Security profile.

moto's S3/SQS and PostgreSQL run on the host and listen on the node's bridge address, the only address pods
can reach outside the pod network: they stand in for AWS and RDS outside the cluster. The d2b files put into
the bucket go bridge pod -> FileDrops -> operator pod -> loader Job pods -> PostgreSQL, exactly once.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
import yaml

from tests.chart.conftest import CHART, RESTRICTED, notifying_bucket, older_crd
from tests.conftest import D2B, DB
from tests.support.k8s.cluster import Cluster
from tests.support.k8s.pods import TAG, kill_container
from tests.support.servers import DebianPostgres

pytestmark = pytest.mark.k8s


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

    def wait(self, check: Any, what: str, timeout: float = 240) -> Any:
        try:
            return self.cluster.wait_for(check, timeout, what)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.story()}") from None

    def http(self, component: str, port: int, path: str) -> str:
        """GET from the component's pod at its pod IP (the host is on the pod network's bridge)."""
        [pod] = self.json("get", "pods", "-l", f"app.kubernetes.io/component={component}",
                          "--field-selector=status.phase=Running")["items"]
        url = f"http://{pod['status']['podIP']}:{port}{path}"
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310  (a pod of this test)
            return str(resp.read().decode())

    def ready(self, deployment: str) -> bool:
        status = self.json("get", "deployment", deployment).get("status", {})
        return bool(status.get("readyReplicas", 0) >= 1)


@pytest.fixture
def pods(node_cluster: Cluster, pod_warehouse: tuple[str, str], pod_aws: str, tmp_path: Path,
         request: pytest.FixtureRequest) -> Iterator[Pods]:
    """The chart installed as a user would, its Secrets first (docs/install-eks.md), in a restricted namespace.
    The test's parameter is more operator values: ``peering`` (default off: ``--standalone``) and
    ``inlineMaxBytes`` (default 0 here, so every file gets a loader Job; None: the chart's default)."""
    admin_url, pod_url = pod_warehouse
    ns = node_cluster.create_namespace(labels=RESTRICTED)
    node_cluster.kubectl("create", "secret", "generic", "filedrop-warehouse", "-n", ns,
                         f"--from-literal=url={pod_url}")
    node_cluster.kubectl("create", "secret", "generic", "filedrop-aws", "-n", ns,
                         "--from-literal=AWS_ACCESS_KEY_ID=testing", "--from-literal=AWS_SECRET_ACCESS_KEY=testing")
    queue = boto3.client("sqs").create_queue(QueueName=f"events-{uuid.uuid4().hex[:8]}",
                                             Attributes={"VisibilityTimeout": "5"})["QueueUrl"]
    values = {
        "image": {"repository": "filedrop", "tag": TAG, "pullPolicy": "Never"},
        "aws": {"region": "us-east-1", "endpointUrl": pod_aws, "existingSecret": "filedrop-aws"},
        "bridge": {"enabled": True, "queueUrl": queue, "waitSeconds": 1, "visibilityTimeout": 5, "replicas": 1},
        "operator": {k: v for k, v in {"verbose": True, "backoffSeconds": 1, "peeringLifetime": 10, "inlineMaxBytes": 0,
                                       **getattr(request, "param", {})}.items() if v is not None},
    }
    (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
    res = node_cluster.helm("install", "filedrop", str(CHART), "-n", ns, "-f", str(tmp_path / "values.yaml"))
    assert "warning" not in res.stderr.lower(), res.stderr
    db = DB(admin_url)
    p = Pods(node_cluster, ns, db, queue)
    try:
        yield p
    finally:
        node_cluster.helm("uninstall", "filedrop", "-n", ns, "--wait", "--timeout", "120s", check=False)
        node_cluster.kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.mark.parametrize("pods", [{"peering": True, "inlineMaxBytes": None}], ids=["peering"], indirect=True)
def test_helm_install_runs_the_d2b_flow_on_real_pods(pods: Pods) -> None:
    """The chart's defaults: the d2b files (under 1 MB each) are loaded by the operator pod itself, no pod each."""
    # the operator and the bridge become Ready through their probes, under the restricted profile
    pods.wait(lambda: pods.ready("filedrop-operator") and pods.ready("filedrop-bridge"),
              "the operator and bridge pods Ready")

    s3, bucket = notifying_bucket(pods.queue)
    for name in ("orders.csv", "reviews.csv", "shipment_deliveries.csv"):
        s3.put_object(Bucket=bucket, Key=f"orders_data/{name}", Body=(D2B / name).read_bytes())

    def all_loaded() -> bool:
        fds = pods.filedrops()
        return len(fds) == 3 and all((fd.get("status") or {}).get("phase") == "Loaded" for fd in fds.values())
    pods.wait(all_loaded, "the three d2b FileDrops Loaded by the operator")

    # rows landed exactly once
    assert pods.db.one("SELECT count(*) FROM staging.orders") == 10000
    assert pods.db.one("SELECT count(*) FROM staging.reviews") == 7236
    assert pods.db.one("SELECT count(*) FROM staging.shipment_deliveries") == 10000
    assert sorted(h["status"] for h in pods.db.history()) == ["loaded"] * 3

    # the loads ran in the operator's pod: no Job, no loader pod
    assert pods.json("get", "jobs,pods", "-l", "filedrop.dev/filedrop")["items"] == [], pods.story()
    assert {fd["status"]["engine"] for fd in pods.filedrops().values()} == {"inline"}

    # kubectl tells the story: the table shows Loaded, the operator's log says what it loaded
    table = pods.kubectl("get", "filedrops")
    assert sum(" Loaded " in ln for ln in table.splitlines()) == 3, table
    orders = next(fd for key, fd in pods.filedrops().items() if key.endswith("orders.csv"))
    job = orders["status"].get("job")
    assert job and orders["status"]["rowsLoaded"] == 10000, json.dumps(orders["status"])
    log = pods.kubectl("logs", "deployment/filedrop-operator")
    assert f"inline load {job} succeeded" in log, log[-3000:]
    # kopf's finalizer is gone from final FileDrops: they delete without the operator
    assert [fd["metadata"].get("finalizers") for fd in pods.filedrops().values()] == [None, None, None]
    # the route's status counts the file; the operator's metrics and health ports answer in its pod
    pods.wait(lambda: pods.kubectl("get", "fileroute", "orders", "-o", "jsonpath={.status.filesLoaded}") == "1",
              "the orders FileRoute's status")
    metrics = pods.http("operator", 9090, "/metrics")
    assert 'filedrop_files_total{phase="Loaded",route="orders"} 1.0' in metrics, metrics[-2000:]
    assert f'filedrop_filedrops{{namespace="{pods.ns}",phase="Loaded",route="orders"}} 1.0' in metrics
    assert "filedrop_loads_running 0.0" in metrics
    assert pods.http("operator", 8081, "/healthz")
    # the bridge's own metrics and the health endpoint its probes use
    assert "filedrop_bridge_filedrops_created_total 3.0" in pods.http("bridge", 9090, "/metrics")
    assert pods.http("bridge", 9090, "/healthz").startswith("ok")
    # the operator took part in kopf's peering (the chart's KopfPeering object)
    assert pods.json("get", "kopfpeering", "filedrop").get("status"), "the operator did not register in peering"


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
    # the default operator runs --standalone (no KopfPeering); the new pod's gauges count what the FileDrops say
    assert pods.json("get", "kopfpeerings")["items"] == []
    metrics = pods.http("operator", 9090, "/metrics")
    assert "filedrop_loads_running 0.0" in metrics, metrics[-3000:]
    assert f'filedrop_filedrops{{namespace="{pods.ns}",phase="Failed",route="orders"}} 1.0' in metrics


ORDERS_HEADER = "order_id,customer_id,order_date,product_id,unit_price,quantity,total_price\n"


BIG_ROWS = 1_500_000  # ~50 MB: its COPY lasts long enough to be caught


def put_big_orders(pods: Pods) -> None:
    body = ORDERS_HEADER + "".join(f"{i},{i % 97},2022-07-13,{i % 50},139,{i % 9},{139 * (i % 9)}\n"
                                   for i in range(1, BIG_ROWS + 1))
    s3, bucket = notifying_bucket(pods.queue)
    s3.put_object(Bucket=bucket, Key="orders_data/orders_big.csv", Body=body.encode())


def copying_pod(pods: Pods) -> dict[str, Any]:
    """The loader pod whose COPY runs (caught in pg_stat_progress_copy, matched to the pod by its IP)."""
    def find() -> dict[str, Any] | None:
        ips = {ip for (ip,) in pods.db.rows("SELECT host(a.client_addr) FROM pg_stat_progress_copy c "
                                            "JOIN pg_stat_activity a USING (pid)")}
        if not ips:
            return None
        for pod in pods.json("get", "pods", "-l", "filedrop.dev/filedrop")["items"]:
            if pod["status"].get("podIP") in ips and pod["status"].get("containerStatuses"):
                return dict(pod)
        return None
    return dict(pods.wait(find, "a loader pod in its COPY", 180))


def kill_loader(pods: Pods, node_cluster: Cluster, pod: dict[str, Any]) -> None:
    """SIGKILL the pod's container through the container runtime; wait until the kubelet reports exit 137."""
    kill_container(node_cluster, pod)

    def terminated() -> Any:
        now = pods.json("get", "pod", pod["metadata"]["name"])
        return now["status"].get("containerStatuses", [{}])[0].get("state", {}).get("terminated")
    state = pods.wait(terminated, "the killed loader container seen as terminated", 60)
    assert state["exitCode"] == 137, state


def loaded_once_after_a_retry(pods: Pods, timeout: float) -> None:
    """orders_big.csv Loaded by its second attempt: every row once, one loaded history row, nothing left."""
    def loaded() -> Any:
        fd = pods.filedrops().get("orders_data/orders_big.csv") or {}
        return (fd.get("status") or {}).get("phase") == "Loaded" and fd["status"]
    status = pods.wait(loaded, "the file Loaded by a retry", timeout)
    assert status["attempts"] == 2, status
    assert status["rowsLoaded"] == BIG_ROWS, status
    assert pods.db.rows("SELECT count(*), count(DISTINCT order_id) FROM staging.orders") == [(BIG_ROWS, BIG_ROWS)]
    history = pods.db.history()
    assert [h["status"] for h in history].count("loaded") == 1, history
    assert "running" not in [h["status"] for h in history], history
    assert pods.db.leftover_tables() == []
    jobs = pods.json("get", "jobs", "-l", "filedrop.dev/filedrop")["items"]
    assert sorted((j.get("status") or {}).get("succeeded", 0) for j in jobs) == [0, 1], [j["status"] for j in jobs]


def test_loader_container_killed_during_its_copy_is_retried_and_loads_once(pods: Pods, node_cluster: Cluster) -> None:
    """SIGKILL of a loader's container while its COPY streams: the pod fails, the operator retries with a new
    Job, the rows land once, nothing is left."""
    pods.wait(lambda: pods.ready("filedrop-operator") and pods.ready("filedrop-bridge"),
              "the operator and bridge pods Ready")
    put_big_orders(pods)
    kill_loader(pods, node_cluster, copying_pod(pods))
    loaded_once_after_a_retry(pods, 300)


BLACKHOLE = "FILEDROP-TEST-BLACKHOLE"  # a FILEDROP- chain: the node's cleanup removes it should the test crash


def test_a_loader_pod_gone_without_a_word_does_not_hold_its_file_hostage(pods: Pods, node_cluster: Cluster,
                                                                          host_pg: DebianPostgres) -> None:
    """A loader pod that vanishes mid-COPY without closing its connection (its packets lost, as when its node
    dies): PostgreSQL must notice the dead peer and end the session, so the claim it held passes to the retry,
    which loads the file once. A session waiting for COPY data from a dead peer otherwise waits for hours
    (the kernel's keepalive default), and every retry gives up after FILEDROP_CLAIM_WAIT_SECONDS (900 s)."""
    pods.wait(lambda: pods.ready("filedrop-operator") and pods.ready("filedrop-bridge"),
              "the operator and bridge pods Ready")
    put_big_orders(pods)
    victim = copying_pod(pods)
    rule = ["-s", victim["status"]["podIP"], "-p", "tcp", "--dport", str(host_pg.port), "-j", "DROP"]
    subprocess.run(["iptables", "-w", "5", "-N", BLACKHOLE], check=True)
    try:
        subprocess.run(["iptables", "-w", "5", "-A", BLACKHOLE, *rule], check=True)
        subprocess.run(["iptables", "-w", "5", "-I", "INPUT", "-j", BLACKHOLE], check=True)
        kill_loader(pods, node_cluster, victim)  # its FIN (and all else) never reaches PostgreSQL
        loaded_once_after_a_retry(pods, 240)
    finally:
        subprocess.run(["iptables", "-w", "5", "-D", "INPUT", "-j", BLACKHOLE], check=False)
        subprocess.run(["iptables", "-w", "5", "-F", BLACKHOLE], check=False)
        subprocess.run(["iptables", "-w", "5", "-X", BLACKHOLE], check=False)


def test_helm_upgrade_with_the_crd_hook_brings_the_crds_up_to_date(pods: Pods, node_cluster: Cluster) -> None:
    """crds.upgradeHook: `helm upgrade` runs a Job (a pod of the filedrop image, restricted profile) that replaces
    an older filedrop CRD by the chart's, then removes itself and its rights."""
    current = yaml.safe_load((CHART / "crds" / "filedrop.yaml").read_text())
    node_cluster.kubectl("replace", "-f", "-", input=json.dumps(older_crd(current)))
    try:
        res = node_cluster.helm("upgrade", "filedrop", str(CHART), "-n", pods.ns, "--reuse-values",
                                "--set", "crds.upgradeHook.enabled=true", "--wait", "--timeout", "5m")
        assert "warning" not in res.stderr.lower(), res.stderr
        stored = node_cluster.kubectl_json("get", "crd", "filedrops.filedrop.dev")
        assert stored["spec"]["versions"] == current["spec"]["versions"]
        # the Job ran in a pod and succeeded; then helm deleted it with its ServiceAccount and ClusterRole
        events = pods.json("get", "events", "--field-selector", "involvedObject.kind=Job")["items"]
        assert any(e["involvedObject"]["name"] == "filedrop-crds" and e["reason"] == "Completed" for e in events), [
            (e["involvedObject"]["name"], e["reason"], e.get("message")) for e in events]
        assert not pods.json("get", "jobs,serviceaccounts", "-l", "app.kubernetes.io/component=crds")["items"]
        assert node_cluster.kubectl("get", "clusterrole", f"filedrop-crds-{pods.ns}", check=False).returncode != 0
        # the release works on: the operator is Ready after the upgrade
        pods.wait(lambda: pods.ready("filedrop-operator"), "the operator Ready after the upgrade")
    finally:
        node_cluster.kubectl("replace", "-f", str(CHART / "crds" / "filedrop.yaml"))
