"""Benchmark on the node (issue 16, docs/benchmarks.md "Spark on pods"), not part of `make test`: the same
~1 GB orders file loaded by a loader Job (direct engine) and by a SparkApplication whose driver and two
executors are pods, one after the other, interleaved ``FILEDROP_POD_BENCH_REPEAT`` times; and the pod start
overhead of each (FileDrop created -> its first pod Running). Run with `make bench-pods`; results are printed
and written to ``FILEDROP_POD_BENCH_OUT`` (JSON).

Times are wall-clock, polled by the test: from the start of the S3 upload (1 GB into moto, the same for both
engines) to the FileDrop's Loaded phase; and from the FileDrop's creation to the first container of its load
running (the loader Job's pod, or the Spark driver: spark-submit in the spark-operator's pod comes first)."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from bench.common import orders_file
from filedrop.routes import load_routes, route_named
from tests.conftest import DB
from tests.support.k8s.cluster import Cluster
from tests.support.k8s.pods import stack_in_new_namespace
from tests.support.k8s.topology import Stack
from tests.support.loads import route_variant

ORDERS = int(os.environ.get("FILEDROP_POD_BENCH_ORDERS", "27000000"))  # ~1 GB
REPEAT = int(os.environ.get("FILEDROP_POD_BENCH_REPEAT", "1"))
pytestmark = [pytest.mark.k8s, pytest.mark.podbench, pytest.mark.timeout(7200)]


def routes() -> list[Any]:
    """The d2b orders route twice, once per engine, appending to a table of its own."""
    orders = route_named(load_routes(), "orders")
    return [route_variant(orders, f"orders-{engine}", match={"prefix": f"{engine}/", "pattern": r".*\.csv"},
                          table=f"orders_{engine}", engine=engine, mode="append") for engine in ("spark", "direct")]


@pytest.fixture
def stack(node_cluster: Cluster, spark_operator: str, pod_warehouse: tuple[str, str], pod_aws: str,
          tmp_path: Path) -> Iterator[Stack]:
    with stack_in_new_namespace(node_cluster, pod_warehouse[1], pod_aws, tmp_path) as s:
        s.setup(routes(), notify=True)
        s.start_operator(FILEDROP_SPARK_IMAGE=spark_operator, FILEDROP_MAX_LOADS="1",
                         FILEDROP_SPARK_TIERS=json.dumps([{
                             "name": "pods", "max_bytes": None, "executors": 2, "driver_cores": 1,
                             "driver_memory": "2g", "executor_cores": 1, "executor_memory": "2g"}]),
                         FILEDROP_SPARK_CORE_REQUEST="200m")
        s.start_bridge()
        yield s


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def first_pod_running(stack: Stack, fd_name: str) -> float | None:
    pods = json.loads(stack.kubectl("get", "pods", "-n", stack.ns, "-l", f"filedrop.dev/filedrop={fd_name}",
                                    "-o", "json").stdout)["items"]
    starts = [_ts(c["state"]["running"]["startedAt"]) for p in pods for c in p["status"].get("containerStatuses", [])
              if "running" in c.get("state", {})]
    starts += [_ts(c["state"]["terminated"]["startedAt"]) for p in pods
               for c in p["status"].get("containerStatuses", []) if "terminated" in c.get("state", {})]
    return min(starts) if starts else None


def load_one(stack: Stack, key: str, path: Path) -> dict[str, float]:
    put_at = time.time()
    stack.s3.upload_file(str(path), stack.bucket, key)
    first_pod: float | None = None
    fd_name = ""

    def loaded() -> bool:
        nonlocal first_pod, fd_name
        fds = {f["spec"]["key"]: f for f in stack.filedrops()}
        fd = fds.get(key)
        if fd is None:
            return False
        fd_name = fd["metadata"]["name"]
        if first_pod is None:
            first_pod = first_pod_running(stack, fd_name)
        phase = (fd.get("status") or {}).get("phase")
        assert phase != "Failed", fd["status"]
        return phase == "Loaded"
    stack.wait(loaded, f"{key} Loaded", 3600)
    done = time.time()
    fd = {f["spec"]["key"]: f for f in stack.filedrops()}[key]
    created = _ts(fd["metadata"]["creationTimestamp"])
    return {"put_to_loaded_s": round(done - put_at, 1), "created_to_first_pod_running_s":
            round((first_pod or done) - created, 1), "rows": fd["status"]["rowsLoaded"]}


def test_spark_on_pods_against_the_loader_job(stack: Stack, pod_warehouse: tuple[str, str]) -> None:
    path = orders_file(Path(os.environ.get("FILEDROP_BENCH_DATA", Path.home() / ".cache/filedrop/bench-data")),
                       ORDERS)
    size = path.stat().st_size
    results: dict[str, list[dict[str, float]]] = {"direct": [], "spark": []}
    for i in range(REPEAT):
        for engine in ("direct", "spark"):  # A B A B
            results[engine].append(load_one(stack, f"{engine}/orders-{i}.csv", path))
    db = DB(pod_warehouse[0])
    for engine in ("direct", "spark"):
        assert db.one(f"SELECT count(*) FROM staging.orders_{engine}") == ORDERS * REPEAT
    summary = {
        "file_bytes": size, "orders": ORDERS, "repeat": REPEAT, "runs": results,
        "median_put_to_loaded_s": {e: statistics.median(r["put_to_loaded_s"] for r in runs)
                                   for e, runs in results.items()},
        "median_first_pod_s": {e: statistics.median(r["created_to_first_pod_running_s"] for r in runs)
                               for e, runs in results.items()},
        "load_average": os.getloadavg(),
    }
    text = json.dumps(summary, indent=2)
    print(text)
    out = os.environ.get("FILEDROP_POD_BENCH_OUT")
    if out:
        Path(out).write_text(text + "\n")
