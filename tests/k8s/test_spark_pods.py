"""Large files through the Spark engine on real pods (issue 16).

The Kubeflow spark-operator v2.5.2, built from Go modules and deployed by its own chart (tools/k8s/sparkop.py),
runs filedrop's SparkApplications: spark-submit in the controller's pod creates the driver pod, the driver
creates two executor pods, all from the Spark image of spark_images/Dockerfile. Executors find the driver
through its headless Service (cluster DNS), read the object over S3A from moto at the node's bridge address
and COPY their splits in parallel into PostgreSQL on the host. The namespace enforces restricted Pod Security,
as the chart's does.

The operator and the bridge are host processes here, as in test_operator_e2e.py (the same Stack); the
loader Jobs of the direct engine run as pods from the filedrop image.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DB
from tests.support.k8s.cluster import Cluster
from tests.support.k8s.pods import kill_container, stack_in_new_namespace
from tests.support.k8s.topology import Stack
from tests.support.loads import items_route, route_variant

# module setup builds the Spark and spark-operator images when their inputs changed (minutes), then imports them
pytestmark = [pytest.mark.k8s, pytest.mark.timeout(1800)]

ITEMS = items_route("replace_source", "continue", max_bad=1)
ROUTES = [
    ITEMS,
    # the same columns and rules through the direct engine, for the engines-agree comparison
    route_variant(ITEMS, "items-direct", match={"prefix": "direct/", "pattern": r"^copy.*\.csv$"},
                  table="items_direct", engine="direct"),
]

ROWS = 1_200_000  # ~47 MB: two splits whose COPYs last long enough to be caught
#: one tier, two executors; a fraction of a core each, so driver and executors fit beside the control plane
SPARK_ENV = {
    "FILEDROP_SPARK_THRESHOLD_BYTES": str(1 << 20),
    "FILEDROP_SPARK_TIERS": json.dumps([{"name": "pods", "max_bytes": None, "executors": 2, "driver_cores": 1,
                                         "driver_memory": "1g", "executor_cores": 1, "executor_memory": "1g"}]),
    "FILEDROP_SPARK_CORE_REQUEST": "200m",
}


@cache
def big_file() -> bytes:
    """Quoted commas and newlines, quotes inside quotes and empty dates: records that cross split boundaries
    and parse differently if an engine gets CSV wrong. No bad row: a bad row sends the Spark engine to its
    one-task path (tests/spark/test_engines_agree.py covers that), and this file is for the parallel one."""
    def row(i: int) -> str:
        if i % 1000 == 0:
            return f'{i},"line {i}\nsays ""hi"", twice",{i % 97},\n'
        return f'{i},"name {i}, ok",{i % 97},2022-03-{1 + i % 28:02d}\n'
    return ("id,name,qty,day\n" + "".join(row(i) for i in range(1, ROWS + 1))).encode()


@pytest.fixture
def db(pod_warehouse: tuple[str, str]) -> DB:
    return DB(pod_warehouse[0])


@pytest.fixture
def stack(node_cluster: Cluster, spark_operator: str, pod_warehouse: tuple[str, str], pod_aws: str,
          tmp_path: Path) -> Iterator[Stack]:
    restricted = {f"pod-security.kubernetes.io/{m}": "restricted" for m in ("enforce", "warn")}
    with stack_in_new_namespace(node_cluster, pod_warehouse[1], pod_aws, tmp_path, labels=restricted) as s:
        s.setup(ROUTES)
        s.start_operator(FILEDROP_SPARK_IMAGE=spark_operator, **SPARK_ENV)
        s.start_bridge()
        yield s


class SparkPods:
    """The namespace's Spark pods, remembered while a test waits (executors are deleted when the job ends)."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.seen: dict[str, dict[str, Any]] = {}

    def poll(self) -> list[dict[str, Any]]:
        pods = json.loads(self.stack.kubectl("get", "pods", "-n", self.stack.ns, "-l", "spark-role",
                                             "-o", "json").stdout)["items"]
        for p in pods:
            self.seen[p["metadata"]["name"]] = p
        return list(pods)

    def role(self, role: str) -> list[dict[str, Any]]:
        return [p for p in self.seen.values() if p["metadata"]["labels"].get("spark-role") == role]

    def copying(self, db: DB, role: str) -> dict[str, Any] | None:
        """A running pod of ``role`` whose COPY is in progress (pg_stat_progress_copy, matched by pod IP)."""
        copying = {ip for (ip,) in db.rows("SELECT host(a.client_addr) FROM pg_stat_progress_copy c "
                                           "JOIN pg_stat_activity a USING (pid) WHERE a.state = 'active'")}
        pods = self.poll()
        if not copying:
            return None
        executor_ips = {p["status"].get("podIP") for p in pods if p["metadata"]["labels"]["spark-role"] == "executor"}
        if not executor_ips & copying:
            return None  # the driver's own sessions are not the COPY
        for p in pods:
            if p["metadata"]["labels"]["spark-role"] == role and p["status"].get("phase") == "Running":
                return p
        return None


def phase(stack: Stack, key: str) -> dict[str, Any]:
    fd = {f["spec"]["key"]: f for f in stack.filedrops()}.get(key) or {}
    return dict(fd.get("status") or {})


def applications(stack: Stack) -> dict[str, str]:
    apps = json.loads(stack.kubectl("get", "sparkapplications", "-n", stack.ns, "-o", "json").stdout)["items"]
    return {a["metadata"]["name"]: ((a.get("status") or {}).get("applicationState") or {}).get("state", "")
            for a in apps}


def staged(db: DB, table: str, key: str) -> list[tuple[Any, ...]]:
    return db.rows(f"SELECT id, name, qty, day, _row_number FROM staging.{table} WHERE _source_key = %s "
                   "ORDER BY _row_number", (key,))


def test_a_large_file_loads_through_executor_pods_and_agrees_with_the_direct_engine(stack: Stack, db: DB,
                                                                                     spark_operator: str) -> None:
    spark_image = spark_operator  # the fixture installs the spark-operator and gives the Spark job image
    body = big_file()
    stack.put("items_big.csv", body)         # above the threshold: a SparkApplication
    stack.put("direct/copy_big.csv", body)  # the same bytes through the direct engine's loader Job
    stack.put("items_tiny.csv", b"id,name,qty,day\n1,a,1,2022-03-01\n")  # under it: a loader Job
    spark = SparkPods(stack)

    def loaded() -> bool:
        spark.poll()
        failed = {fd["spec"]["key"]: fd["status"] for fd in stack.filedrops() if fd.get("status", {}).get("phase")
                  == "Failed"}
        assert not failed, failed
        return set(stack.phases().values()) == {"Loaded"} and len(stack.phases()) == 3
    stack.wait(loaded, "three files Loaded", 600)

    engines = {fd["spec"]["key"]: fd["status"]["engine"] for fd in stack.filedrops()}
    assert engines == {"items_big.csv": "spark", "direct/copy_big.csv": "direct", "items_tiny.csv": "direct"}
    assert list(applications(stack).values()) == ["COMPLETED"]
    assert phase(stack, "items_big.csv")["rowsLoaded"] == ROWS
    spark_rows, direct_rows = staged(db, "items", "items_big.csv"), staged(db, "items_direct", "direct/copy_big.csv")
    assert len(spark_rows) == ROWS and spark_rows == direct_rows  # _row_number included
    assert spark_rows[999] == (1000, "line 1000\nsays \"hi\", twice", 1000 % 97, None, 1000)
    assert db.rows("SELECT engine, rows_loaded, rows_rejected FROM filedrop.ingest_history WHERE key = "
                   "'items_big.csv'") == [("spark", ROWS, 0)]

    # a driver pod and two executor pods, all from the Spark image, admitted under restricted Pod Security
    [driver] = spark.role("driver")
    executors = spark.role("executor")
    assert len(executors) >= 2, sorted(spark.seen)
    for pod in [driver, *executors]:
        [container] = pod["spec"]["containers"]
        assert container["image"] == spark_image
        env = {e["name"] for e in container.get("env", [])}
        assert "FILEDROP_WAREHOUSE_URL" in env, (pod["metadata"]["name"], env)  # from the pod template
    # both executors registered with the driver and ran tasks of the load
    log = stack.kubectl("logs", "-n", stack.ns, driver["metadata"]["name"]).stdout
    ran = set(re.findall(r"Finished task \S+ in stage \S+ \(TID \d+\) in \d+ ms on \S+ \(executor (\d+)\)", log))
    assert len(ran) >= 2, log[-3000:]
    # the parallel path: each block COPYs from the executor that read it, none fell back to one task; the
    # file's first records hold quoted line ends, so its blocks are planned (no one-pass read first)
    assert re.search(r"items_big\.csv: spark parallel \([2-9]\d* blocks, planned\), 1200000 rows", log), log[-3000:]
    assert "planning the blocks" in log and "blocks written" in log


def kill_during_copy(stack: Stack, db: DB, node_cluster: Cluster, role: str) -> str:
    """Put the big file, wait for its executors' COPY and SIGKILL the ``role`` pod's container; its name."""
    stack.put("items_big.csv", big_file())
    spark = SparkPods(stack)
    pod = stack.wait(lambda: spark.copying(db, role), f"the {role} pod while executors COPY", 600)
    kill_container(node_cluster, pod)
    return str(pod["metadata"]["name"])


def loaded_once(stack: Stack, db: DB) -> dict[str, Any]:
    status = stack.wait(lambda: phase(stack, "items_big.csv").get("phase") == "Loaded"
                        and phase(stack, "items_big.csv"), "items_big.csv Loaded after the kill", 900)
    assert status["rowsLoaded"] == ROWS, status
    assert db.rows("SELECT count(*), count(DISTINCT id) FROM staging.items") == [(ROWS, ROWS)]
    history = db.history()
    assert [h["status"] for h in history].count("loaded") == 1, history
    assert "running" not in [h["status"] for h in history], history
    assert db.leftover_tables() == []
    return status


@pytest.mark.long
def test_a_killed_driver_fails_its_application_and_the_retry_loads_once(stack: Stack, db: DB,
                                                                         node_cluster: Cluster) -> None:
    killed = kill_during_copy(stack, db, node_cluster, "driver")
    status = loaded_once(stack, db)
    assert status["attempts"] == 2, status
    apps = applications(stack)
    assert sorted(apps.values()) == ["COMPLETED", "FAILED"], apps
    assert apps[killed.removesuffix("-driver")] == "FAILED", (killed, apps)


@pytest.mark.long
def test_a_killed_executor_leaves_nothing_doubled(stack: Stack, db: DB, node_cluster: Cluster) -> None:
    """Tasks may not be retried inside Spark (spark.task.maxFailures=1: a task retried after its COPY
    committed would load twice): an executor lost mid-COPY fails the application, and the operator's retry
    loads the file once."""
    kill_during_copy(stack, db, node_cluster, "executor")
    status = loaded_once(stack, db)
    assert status["attempts"] == 2, status
    assert sorted(applications(stack).values()) == ["COMPLETED", "FAILED"]
