"""The cluster runtime end to end on a real node (issue 6; real pods since issue 15).

S3 (moto, with a real S3 -> SQS notification) -> `filedrop bridge` -> FileDrop -> `filedrop operator`
(kopf, peering on) -> loader Job -> its pod on the node, from the filedrop image (`make images`) ->
`filedrop load` -> PostgreSQL. moto and PostgreSQL run on the host at the node's bridge address.

The operator and the bridge run as host subprocesses with their ServiceAccounts' tokens (RBAC of
operator/rbac.yaml), not as admin: these tests SIGKILL and restart them at chosen moments and read the
operator's metrics; tests/chart/test_chart_pods.py runs them as the chart's pods.

Large files through the Spark engine and the real spark-operator: tests/k8s/test_spark_pods.py.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from filedrop.cluster.resources import filedrop_manifest, route_manifest
from filedrop.routes import load_routes, parse_routes_yaml
from tests.conftest import D2B, DB
from tests.support.k8s.cluster import Cluster
from tests.support.k8s.pods import LOADER_IMAGE, stack_in_new_namespace
from tests.support.k8s.topology import AWS_SECRET, Stack, s3_event
from tests.support.servers import DebianPostgres, free_port

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.k8s

ITEMS_ROUTE = parse_routes_yaml("""
apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {name: items}
spec:
  match: {pattern: '^items.*\\.csv$'}
  table: items
  columns:
    - {name: id, type: integer, nullable: false}
    - {name: name, type: text}
  mode: replace_source
""")[0]


@pytest.fixture
def db(pod_warehouse: tuple[str, str]) -> DB:
    return DB(pod_warehouse[0])


@pytest.fixture
def stack(node_cluster: Cluster, pod_warehouse: tuple[str, str], pod_aws: str, tmp_path: Path) -> Iterator[Stack]:
    """filedrop in a fresh namespace of the node's cluster; the warehouse URL (role filedrop with a password,
    at the bridge address) is the one the loader pods get from the Secret, and the operator's too."""
    with stack_in_new_namespace(node_cluster, pod_warehouse[1], pod_aws, tmp_path) as s:
        yield s


def loader_logs(stack: Stack) -> str:
    """`kubectl logs` of every loader pod of the namespace."""
    return str(stack.kubectl("logs", "-n", stack.ns, "-l", "filedrop.dev/filedrop", "--tail=-1", "--prefix",
                             "--max-log-requests=20", check=False).stdout)


def test_d2b_files_flow_from_s3_to_staging(stack: Stack, db: DB, host_pg: DebianPostgres) -> None:
    # The warehouse URL has a password, as in production: it must never show up anywhere visible.
    assert host_pg.pod_password in stack.warehouse
    stack.setup(load_routes())
    stack.start_operator()
    stack.start_bridge()
    for f in ("orders.csv", "reviews.csv", "shipment_deliveries.csv"):
        stack.put(f"orders_data/{f}", (D2B / f).read_bytes())
    stack.put("orders_data/README.txt", b"no route for me")

    stack.wait(lambda: set(stack.phases().values()) == {"Loaded"} and len(stack.phases()) == 3,
               "three FileDrops Loaded")
    assert db.one("SELECT count(*) FROM staging.orders") == 10000
    assert db.one("SELECT count(*) FROM staging.reviews") == 7236
    assert db.one("SELECT count(*) FROM staging.shipment_deliveries") == 10000
    fds = {fd["spec"]["key"]: fd for fd in stack.filedrops()}
    orders = fds["orders_data/orders.csv"]
    assert orders["status"]["rowsLoaded"] == 10000 and orders["status"]["route"] == "orders"
    assert orders["metadata"]["labels"]["filedrop.dev/route"] == "orders"
    assert {h["filedrop"] for h in db.history()} == {fd["metadata"]["name"] for fd in fds.values()}

    table = stack.kubectl("get", "filedrops", "-n", stack.ns).stdout
    header = table.splitlines()[0].split()
    assert header == ["NAME", "KEY", "ROUTE", "PHASE", "ROWS", "SIZE", "AGE"]
    assert any(ln.split()[1:5] == ["orders_data/orders.csv", "orders", "Loaded", "10000"]
               for ln in table.splitlines()[1:])
    # every FileDrop is Ready: what `kubectl wait` and status tools read
    stack.kubectl("wait", "filedrops", "--all", "-n", stack.ns, "--for=condition=Ready", "--timeout=30s")
    [ready] = orders["status"]["conditions"]
    assert (ready["type"], ready["status"], ready["reason"], ready["observedGeneration"]) == (
        "Ready", "True", "Loaded", orders["metadata"]["generation"])
    stack.wait(lambda: "1" == stack.kubectl("get", "fileroute", "orders", "-n", stack.ns, "-o",
                                            "jsonpath={.status.filesLoaded}").stdout, "FileRoute status")
    routes = stack.kubectl("get", "fileroutes", "-n", stack.ns).stdout
    assert routes.splitlines()[0].split() == ["NAME", "TABLE", "PATTERN", "LOADED", "FAILED", "LAST", "LOAD",
                                              "READY"]
    stack.kubectl("wait", "fileroutes", "--all", "-n", stack.ns, "--for=condition=Ready", "--timeout=30s")
    events = stack.kubectl("get", "events", "-n", stack.ns, "--field-selector",
                           f"involvedObject.name={orders['metadata']['name']}").stdout
    assert "Loaded" in events
    visible = "\n".join([
        stack.logs(),
        stack.kubectl("get", "events,filedrops,fileroutes,jobs,pods", "-n", stack.ns, "-o", "yaml").stdout,
        loader_logs(stack),
    ])
    assert "orders_data/orders.csv" in visible  # the scan really covers these outputs
    assert re.search(r"10,?000", loader_logs(stack))  # the loader pods' own logs are in it
    pods = json.loads(stack.kubectl("get", "pods", "-n", stack.ns, "-o", "json").stdout)["items"]
    assert len(pods) == 3 and {p["status"]["phase"] for p in pods} == {"Succeeded"}
    assert {c["image"] for p in pods for c in p["spec"]["containers"]} == {LOADER_IMAGE}
    assert host_pg.pod_password not in visible and AWS_SECRET not in visible
    metrics = stack.http(stack.metrics_port, "/metrics")
    assert 'filedrop_files_total{phase="Loaded",route="orders"} 1.0' in metrics
    assert 'filedrop_rows_loaded_total{route="reviews"} 7236.0' in metrics
    assert "filedrop_event_to_loaded_seconds_count" in metrics
    size = len((D2B / "orders.csv").read_bytes())
    assert f'filedrop_loaded_bytes_total{{route="orders"}} {float(size)}' in metrics
    assert f'filedrop_filedrops{{namespace="{stack.ns}",phase="Loaded",route="orders"}} 1.0' in metrics
    assert "filedrop_loads_running 0.0" in metrics and "filedrop_build_info{" in metrics
    assert stack.http(stack.liveness_port, "/healthz")  # kopf's liveness probe answers
    # the README.txt notification was consumed (no route: counted, not a FileDrop) and nothing is left queued
    stack.wait(lambda: stack.queue_depth() == 0, "the queue to drain")
    bridge_metrics = stack.http(stack.bridge_port, "/metrics")
    assert "filedrop_bridge_filedrops_created_total 3.0" in bridge_metrics
    assert "filedrop_bridge_unmatched_objects_total 1.0" in bridge_metrics
    assert stack.http(stack.bridge_port, "/healthz").startswith("ok")
    bridge = stack.procs["bridge"]
    stack.stop("bridge")  # SIGTERM: finishes the batch in hand, says what it did
    assert bridge.returncode == 0
    assert "4 FileDrops created" not in stack.logs() and "3 FileDrops created" in stack.logs()


def test_duplicates_reordering_and_odd_messages(stack: Stack, db: DB) -> None:
    stack.setup([ITEMS_ROUTE], notify=False)
    stack.s3.put_bucket_versioning(Bucket=stack.bucket, VersioningConfiguration={"Status": "Enabled"})
    stack.start_operator()
    stack.start_bridge()
    v1 = stack.put("in/items.csv", b"id,name\n1,old\n")
    v2 = stack.put("in/items.csv", b"id,name\n1,new\n2,new\n")
    e1 = s3_event(stack.bucket, "in/items.csv", v1["ETag"].strip('"'), 14, "0A", v1["VersionId"])
    e2 = s3_event(stack.bucket, "in/items.csv", v2["ETag"].strip('"'), 22, "0B", v2["VersionId"])
    stack.send(e2)
    stack.send(e2)  # delivered twice
    stack.wait(lambda: list(stack.phases().values()) == ["Loaded"], "the newer version Loaded")
    stack.send(e1)  # the older version arrives late
    stack.put("in/items extra.csv", b"id,name\n9,x\n")
    stack.send(json.dumps({"Type": "Notification", "Message": s3_event(stack.bucket, "in/items extra.csv",
                                                                    "abc", 3, "01")}))  # SNS-wrapped, own key
    stack.send(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": stack.bucket}))
    stack.send(s3_event(stack.bucket, "in/unrouted.json", "abc", 3, "01"))
    stack.send("{this is not json")
    stack.send(s3_event("someone-elses-bucket", "in/items.csv", "abc", 3, "0F"))  # refused: not our bucket

    def settled() -> bool:
        p = stack.phases()
        return len(p) == 2 and "" not in p.values() and all(v in ("Loaded", "Skipped", "Failed") for v in p.values())
    stack.wait(settled, "every FileDrop final")
    fds = stack.filedrops()
    by_version = {fd["spec"].get("versionId"): fd["status"] for fd in fds if fd["spec"]["key"] == "in/items.csv"}
    assert by_version[v2["VersionId"]]["phase"] == "Loaded"
    assert by_version[v1["VersionId"]]["phase"] == "Skipped"
    assert "skipped_superseded" in by_version[v1["VersionId"]]["message"]
    assert db.rows("SELECT id, name FROM staging.items WHERE _source_key = 'in/items.csv' ORDER BY id") == [
        (1, "new"), (2, "new")]
    # the SNS-wrapped event named an ETag that is not the object's: that version was overwritten before
    # it was read, so it is superseded (Skipped, no retry), and the load says so
    extra = [fd for fd in fds if fd["spec"]["key"] == "in/items extra.csv"]
    assert len(extra) == 1 and extra[0]["status"]["phase"] == "Skipped"
    assert "overwritten by a newer version" in extra[0]["status"]["message"]
    # only the malformed message and the foreign bucket's are left, for the dead-letter queue
    stack.wait(lambda: stack.queue_depth() == 2, "only the malformed and the foreign message to remain")
    assert all(fd["spec"]["bucket"] == stack.bucket for fd in fds)


def test_retry_permanent_failure_and_replay(stack: Stack, db: DB) -> None:
    stack.setup([ITEMS_ROUTE])
    # A warehouse Secret pointing nowhere: every attempt fails before loading -> transient, retried.
    stack.kubectl("delete", "secret", "filedrop-warehouse", "-n", stack.ns)
    stack.kubectl("create", "secret", "generic", "filedrop-warehouse", "-n", stack.ns,
                  f"--from-literal=url=postgresql://postgres@127.0.0.1:{free_port()}/nowhere")
    stack.start_operator(FILEDROP_MAX_ATTEMPTS="5")
    stack.start_bridge()
    stack.put("items_ok.csv", b"id,name\n1,a\n")
    stack.wait(lambda: any(int((fd.get("status") or {}).get("attempts") or 0) >= 1
                           and (fd.get("status") or {}).get("phase") == "Queued" for fd in stack.filedrops()),
               "a failed first attempt queued for retry")
    stack.kubectl("delete", "secret", "filedrop-warehouse", "-n", stack.ns)
    stack.kubectl("create", "secret", "generic", "filedrop-warehouse", "-n", stack.ns,
                  f"--from-literal=url={stack.warehouse}")
    stack.wait(lambda: stack.phases().get("items_ok.csv") == "Loaded", "the retried load")
    [ok] = [fd for fd in stack.filedrops() if fd["spec"]["key"] == "items_ok.csv"]
    assert ok["status"]["attempts"] >= 2
    events = stack.kubectl("get", "events", "-n", stack.ns, "--field-selector",
                           f"involvedObject.name={ok['metadata']['name']}").stdout
    assert "Retrying" in events

    stack.put("items_bad.csv", b"id,colour\n1,red\n")  # wrong header: permanent
    stack.wait(lambda: stack.phases().get("items_bad.csv") == "Failed", "the permanent failure")
    [bad] = [fd for fd in stack.filedrops() if fd["spec"]["key"] == "items_bad.csv"]
    assert bad["status"]["attempts"] == 1
    assert "header does not match FileRoute items" in bad["status"]["firstError"]
    events = stack.kubectl("get", "events", "-n", stack.ns, "--field-selector",
                           f"involvedObject.name={bad['metadata']['name']}").stdout
    assert "LoadFailed" in events

    stack.kubectl("annotate", "-n", stack.ns, f"filedrops.filedrop.dev/{ok['metadata']['name']}",
                  "filedrop.dev/replay=1")
    stack.wait(lambda: len([h for h in db.history() if h["status"] == "loaded" and h["key"] == "items_ok.csv"]) == 2,
               "the replayed load")
    stack.wait(lambda: stack.phases().get("items_ok.csv") == "Loaded", "the replayed FileDrop Loaded")
    assert db.rows("SELECT id, name FROM staging.items") == [(1, "a")]  # replace_source: same rows, once
    assert sorted(h["replay"] for h in db.history() if h["status"] == "loaded") == ["", "1"]


def test_concurrency_limit_and_operator_restart(stack: Stack, db: DB) -> None:
    stack.setup([ITEMS_ROUTE])
    stack.start_operator(FILEDROP_MAX_LOADS="1")
    stack.start_bridge()
    for i in range(4):
        stack.put(f"items_{i}.csv", f"id,name\n{i},n{i}\n".encode())
    # Kill the operator as soon as a load is running; a new one must resume without twins.
    stack.wait(lambda: "Loading" in stack.phases().values(), "a load in flight")
    stack.stop("operator", signal.SIGKILL)
    stack.start_operator(FILEDROP_MAX_LOADS="1")
    stack.wait(lambda: len(stack.phases()) == 4 and set(stack.phases().values()) == {"Loaded"}, "all four Loaded")
    loads = db.rows("SELECT started_at, finished_at FROM filedrop.ingest_history WHERE status = 'loaded' "
                    "ORDER BY started_at")
    assert len(loads) == 4
    for (_, end), (start, _) in zip(loads, loads[1:], strict=False):
        assert start >= end, "two loads overlapped although the limit is 1"
    jobs = json.loads(stack.kubectl("get", "jobs", "-n", stack.ns, "-o", "json").stdout)["items"]
    per_drop: dict[str, int] = {}
    for job in jobs:
        owner = job["metadata"]["labels"]["filedrop.dev/filedrop"]
        per_drop[owner] = per_drop.get(owner, 0) + 1
    assert sorted(per_drop.values()) == [1, 1, 1, 1]  # one job each: no twin after the restart
    assert db.one("SELECT count(*) FROM staging.items") == 4
    # The restarted operator's gauges come from the FileDrops, not from what it counted since it started
    # (it inherited a running load whose end it saw; counting that gave -1).
    metrics = stack.http(stack.metrics_port, "/metrics")
    assert "filedrop_loads_running 0.0" in metrics, metrics
    assert f'filedrop_filedrops{{namespace="{stack.ns}",phase="Loaded",route="items"}} 4.0' in metrics, metrics
    assert "filedrop_oldest_waiting_file_age_seconds 0.0" in metrics


def test_fileroutes_say_why_they_cannot_be_used(stack: Stack, db: DB) -> None:
    """A route whose pattern overlaps another's, or whose regex does not compile, says so on itself (the API
    server accepts both); fixing it makes it Ready, and a file that matched both routes fails with the reason."""
    stack.setup([ITEMS_ROUTE])
    stack.start_operator()
    stack.start_bridge()
    overlapping = {**route_manifest(ITEMS_ROUTE), "metadata": {"name": "items-2022"}}
    overlapping["spec"] = {**overlapping["spec"], "table": "items_2022",
                           "match": {"pattern": "^items_2022.*\\.csv$"}}
    broken = {**overlapping, "metadata": {"name": "broken"}}
    broken["spec"] = {**overlapping["spec"], "table": "broken", "match": {"pattern": "^items_(2022.*\\.csv$"}}
    stack.apply([overlapping, broken])

    def ready(name: str) -> dict[str, Any] | None:
        route = json.loads(stack.kubectl("get", "fileroute", name, "-n", stack.ns, "-o", "json").stdout)
        conditions = (route.get("status") or {}).get("conditions") or []
        return conditions[0] if conditions and route["status"].get("observedGeneration") == route["metadata"][
            "generation"] else None
    stack.wait(lambda: ready("items-2022") and ready("broken") and ready("items"), "the routes' conditions")
    assert ready("items-2022")["reason"] == "Overlapping" and "FileRoute items" in ready("items-2022")["message"]
    assert ready("items")["status"] == "False" and "items-2022" in ready("items")["message"]
    assert ready("broken")["reason"] == "Invalid" and "not a valid regular expression" in ready("broken")["message"]
    table = stack.kubectl("get", "fileroutes", "-n", stack.ns, "-o", "wide").stdout
    assert any(ln.split()[0] == "broken" and "Invalid" in ln.split() for ln in table.splitlines()), table

    # a file matching both routes fails, naming them
    stack.put("items_2022_01.csv", b"id,name\n1,a\n")
    stack.wait(lambda: stack.phases().get("items_2022_01.csv") == "Failed", "the ambiguous file Failed")
    [fd] = [f for f in stack.filedrops() if f["spec"]["key"] == "items_2022_01.csv"]
    assert "matches several FileRoutes" in fd["status"]["message"]
    assert fd["status"]["conditions"][0]["reason"] == "NoRoute"

    # narrowing the first route's pattern makes both Ready (a new generation, judged again)
    stack.kubectl("patch", "fileroute", "items", "-n", stack.ns, "--type=merge",
                  "-p", json.dumps({"spec": {"match": {"pattern": "^items_[0-9]\\.csv$"}}}))
    stack.wait(lambda: (ready("items") or {}).get("status") == "True"
               and (ready("items-2022") or {}).get("status") == "True", "both routes Ready after the fix")
    assert ready("items")["observedGeneration"] == 2


def test_service_accounts_have_least_privilege(stack: Stack) -> None:
    stack.setup([ITEMS_ROUTE], notify=False)

    def can(sa: str, verb: str, resource: str) -> bool:
        res = stack.kubectl("auth", "can-i", verb, resource, "-n", stack.ns,
                            f"--as=system:serviceaccount:{stack.ns}:{sa}", check=False)
        return res.stdout.strip() == "yes"

    assert can("filedrop-bridge", "create", "filedrops.filedrop.dev")
    assert not can("filedrop-bridge", "delete", "filedrops.filedrop.dev")
    assert not can("filedrop-bridge", "get", "secrets")
    assert can("filedrop-operator", "create", "jobs.batch")
    assert not can("filedrop-operator", "delete", "jobs.batch")
    assert not can("filedrop-operator", "get", "secrets")
    assert not can("filedrop-loader", "list", "pods")
    # the operator's identity really is the ServiceAccount: a FileDrop it may not create is refused
    kubeconfig = stack.token_kubeconfig("filedrop-bridge")
    fd = filedrop_manifest(bucket="b", key="k", etag="e", size=1)
    res = subprocess.run([str(Path(stack.cluster.bin_dir) / "kubectl"), "--kubeconfig", kubeconfig, "delete",
                          "filedrops", "--all", "-n", stack.ns], capture_output=True, text=True)
    assert res.returncode != 0 and "forbidden" in res.stderr
    assert fd["metadata"]["name"].startswith("fd-")


def test_backfill_creates_filedrops_for_what_history_lacks(stack: Stack, db: DB) -> None:
    stack.setup([ITEMS_ROUTE], notify=False)  # files that arrived while nothing listened
    stack.start_operator()
    for i in range(3):
        stack.put(f"old/items_{i}.csv", f"id,name\n{i},n{i}\n".encode())
    stack.put("old/other.json", b"{}")
    env = {**stack.env, "KUBECONFIG": stack.token_kubeconfig("filedrop-bridge"), "AWS_ENDPOINT_URL": stack.endpoint}
    cmd = [sys.executable, "-m", "filedrop", "backfill", "--bucket", stack.bucket, "--prefix", "old/",
           "--namespace", stack.ns, "--warehouse", stack.warehouse]
    first = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "3 FileDrops created" in first.stdout and "1 unmatched" in first.stdout
    stack.wait(lambda: len(stack.phases()) == 3 and set(stack.phases().values()) == {"Loaded"}, "backfilled loads")
    assert {fd["spec"]["source"] for fd in stack.filedrops()} == {"backfill"}
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert "0 FileDrops created, 3 already loaded or present" in again.stdout
    assert db.one("SELECT count(*) FROM staging.items") == 3




def test_small_files_are_loaded_by_the_operator_without_a_pod(stack: Stack, db: DB) -> None:
    """Files up to FILEDROP_INLINE_MAX_BYTES are loaded in the operator's own processes: no Job, no pod, the same
    rows and history as a Job's load; a larger file still gets a loader Job on the node. An operator killed
    while it loads inline leaves no twin: its successor decides from the load history."""
    stack.setup([ITEMS_ROUTE])
    stack.start_operator(FILEDROP_INLINE_MAX_BYTES="1000", FILEDROP_INLINE_LOADS="4", FILEDROP_MAX_LOADS_PER_TABLE="4")
    stack.start_bridge()
    for i in range(6):
        stack.put(f"items_{i}.csv", f"id,name\n{i},n{i}\n".encode())
    big = "id,name\n" + "".join(f"{i},{'x' * 20}\n" for i in range(100, 200))
    stack.put("items_big.csv", big.encode())
    stack.wait(lambda: "Loading" in stack.phases().values(), "a load in flight")
    stack.stop("operator", signal.SIGKILL)
    stack.start_operator(FILEDROP_INLINE_MAX_BYTES="1000", FILEDROP_INLINE_LOADS="4", FILEDROP_MAX_LOADS_PER_TABLE="4")
    stack.wait(lambda: len(stack.phases()) == 7 and set(stack.phases().values()) == {"Loaded"}, "all seven Loaded",
               timeout=240)
    engines = {fd["spec"]["key"]: fd["status"]["engine"] for fd in stack.filedrops()}
    assert engines == {**{f"items_{i}.csv": "inline" for i in range(6)}, "items_big.csv": "direct"}, engines
    jobs = json.loads(stack.kubectl("get", "jobs", "-n", stack.ns, "-o", "json").stdout)["items"]
    assert [j["metadata"]["labels"]["filedrop.dev/filedrop"] for j in jobs] == [
        fd["metadata"]["name"] for fd in stack.filedrops() if fd["spec"]["key"] == "items_big.csv"]
    assert db.one("SELECT count(*) FROM staging.items") == 106
    assert db.rows("SELECT _source_key, count(*) FROM staging.items GROUP BY 1 HAVING count(*) > 1 "
                   "AND _source_key <> 'items_big.csv'") == []
    assert db.one("SELECT count(*) FROM filedrop.ingest_history WHERE status = 'loaded'") == 7
