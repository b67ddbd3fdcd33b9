"""Benchmark on the node (issue 19 item 3, docs/benchmarks.md "Small files in the cluster"), not part of
`make test`: small files through the whole cluster runtime — S3 put (moto) -> SQS -> bridge -> FileDrop ->
operator -> rows queryable in PostgreSQL — with a loader Job (a pod) per file, and loaded by the operator
itself (``FILEDROP_INLINE_MAX_BYTES``). Run with `make bench-pods`; results are printed and written to
``FILEDROP_SMALL_BENCH_OUT`` (JSON).

- latency: ``FILEDROP_SMALL_BENCH_LATENCY_FILES`` files of about 1 MB, put one at a time; for each, the time
  from the put returning to its rows being visible in staging (polled every 20 ms): p50, p95, max.
- throughput: ``FILEDROP_SMALL_BENCH_FILES`` files of about 10 KB put at once (the Job-per-file path gets
  ``FILEDROP_SMALL_BENCH_JOB_FILES``, fewer: at a pod per file the full count would take most of an hour); files/s
  from the first put to the last file's rows visible.

The two paths alternate (Job, inline, Job, inline ... ``FILEDROP_SMALL_BENCH_REPEAT`` rounds), each on an
operator started for it with the same limits (4 loads at once, 4 per table)."""

from __future__ import annotations

import json
import os
import statistics
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import DB
from tests.k8s.test_operator_e2e import ITEMS_ROUTE
from tests.support.k8s.cluster import Cluster, wait_for
from tests.support.k8s.pods import stack_in_new_namespace
from tests.support.k8s.topology import Stack
from tests.support.loads import route_variant

LATENCY_FILES = int(os.environ.get("FILEDROP_SMALL_BENCH_LATENCY_FILES", "10"))
FILES = int(os.environ.get("FILEDROP_SMALL_BENCH_FILES", "1000"))
JOB_FILES = int(os.environ.get("FILEDROP_SMALL_BENCH_JOB_FILES", "100"))
REPEAT = int(os.environ.get("FILEDROP_SMALL_BENCH_REPEAT", "1"))
pytestmark = [pytest.mark.k8s, pytest.mark.podbench, pytest.mark.timeout(7200)]

ROUTE = route_variant(ITEMS_ROUTE, "items", mode="append")  # the end-to-end tests' route, appending
MODES = {"job": "0", "inline": str(8 * 1024 * 1024)}


def body(rows: int, start: int) -> bytes:
    return ("id,name\n" + "".join(f"{i},item-{i:012d}\n" for i in range(start, start + rows))).encode()


@pytest.fixture
def stack(node_cluster: Cluster, pod_warehouse: tuple[str, str], pod_aws: str, tmp_path: Path) -> Iterator[Stack]:
    with stack_in_new_namespace(node_cluster, pod_warehouse[1], pod_aws, tmp_path) as s:
        s.setup([ROUTE], notify=True)
        s.start_bridge()
        yield s


def operator_for(stack: Stack, mode: str) -> None:
    stack.stop("operator")
    stack.start_operator(FILEDROP_INLINE_MAX_BYTES=MODES[mode], FILEDROP_INLINE_LOADS="4", FILEDROP_MAX_LOADS="4",
                         FILEDROP_MAX_LOADS_PER_TABLE="4")

    def healthy() -> bool:
        try:
            return bool(stack.http(stack.liveness_port, "/healthz"))
        except OSError:
            return False
    stack.wait(healthy, "the operator to answer", 120)


def visible(db: DB, keys: list[str]) -> int:
    if db.one("SELECT to_regclass('staging.items')") is None:  # the first load creates it
        return 0
    return int(db.one("SELECT count(DISTINCT _source_key) FROM staging.items WHERE _source_key = ANY(%s)", (keys,)))


def until_visible(stack: Stack, db: DB, keys: list[str], timeout: float) -> None:
    """Poll every 20 ms until the rows of all ``keys`` are queryable."""
    wait_for(lambda: visible(db, keys) == len(keys), timeout, f"{len(keys)} file(s) queryable",
                           interval=0.02, details=lambda: f"FileDrops: {stack.phases()}\n{stack.logs()}")


def latency_run(stack: Stack, db: DB, tag: str) -> list[float]:
    seconds = []
    for i in range(LATENCY_FILES):
        key = f"items_{tag}_lat_{i}.csv"
        data = body(26_000, i * 26_000)  # about 1 MB
        stack.put(key, data)
        put_at = time.monotonic()
        until_visible(stack, db, [key], 600)
        seconds.append(time.monotonic() - put_at)
    return seconds


def throughput_run(stack: Stack, db: DB, tag: str, files: int) -> dict[str, Any]:
    keys = [f"items_{tag}_tp_{i}.csv" for i in range(files)]
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda ik: stack.put(ik[1], body(250, ik[0] * 250)), enumerate(keys)))  # about 10 KB
    put_s = time.monotonic() - started
    until_visible(stack, db, keys, 7000)
    total = time.monotonic() - started
    return {"files": files, "put_s": round(put_s, 1), "total_s": round(total, 1),
            "files_per_s": round(files / total, 2)}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def test_small_files_inline_against_a_job_per_file(stack: Stack, pod_warehouse: tuple[str, str]) -> None:
    db = DB(pod_warehouse[0])
    latency: dict[str, list[float]] = {m: [] for m in MODES}
    throughput: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for r in range(REPEAT):
        for mode in MODES:  # A B A B
            operator_for(stack, mode)
            latency[mode] += latency_run(stack, db, f"{mode}{r}")
            throughput[mode].append(throughput_run(stack, db, f"{mode}{r}", JOB_FILES if mode == "job" else FILES))
    engines: dict[str, int] = {}
    for fd in stack.filedrops():
        engine = fd["status"]["engine"]
        engines[engine] = engines.get(engine, 0) + 1
        assert fd["status"]["phase"] == "Loaded", fd["status"]
    # every file loaded once, by the path its round used
    assert engines == {"direct": REPEAT * (LATENCY_FILES + JOB_FILES), "inline": REPEAT * (LATENCY_FILES + FILES)}
    assert db.one("SELECT count(*) FROM filedrop.ingest_history WHERE status = 'loaded'") == sum(engines.values())
    summary = {
        "repeat": REPEAT,
        "latency_1mb_s": {m: {"p50": pct(v, 0.5), "p95": pct(v, 0.95), "max": round(max(v), 2), "n": len(v),
                              "mean": round(statistics.mean(v), 2)} for m, v in latency.items()},
        "throughput_10kb": throughput,
        "load_average": os.getloadavg(),
    }
    text = json.dumps(summary, indent=2)
    print(text)
    out = os.environ.get("FILEDROP_SMALL_BENCH_OUT")
    if out:
        Path(out).write_text(text + "\n")
