"""The metrics an SRE alerts on, scraped the way Prometheus does (the text exposition), without servers.

The present-state gauges come from the FileDrops and FileRoutes as watched, so they are right after a
restart (a fresh Backlog fed the current objects) and can never go below zero.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from filedrop.cluster import metrics
from filedrop.cluster.bridge import Bridge
from filedrop.cluster.metrics import Backlog, BacklogCollector, HealthServer
from tests.unit.test_bridge import BUCKET, ROUTES, FakeKube, MemoryQueue, s3_event

NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def iso(seconds_before_now: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(NOW - seconds_before_now, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def drop(name: str, phase: str | None, route: str = "orders", age: float = 60, ns: str = "data") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": ns, "creationTimestamp": iso(age),
                         "labels": {"filedrop.dev/route": route}},
            "status": {"phase": phase, "route": route} if phase else {}}


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def scrape(backlog: Backlog) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    registry = CollectorRegistry()
    registry.register(BacklogCollector(backlog, clock=lambda: NOW))
    return samples(generate_latest(registry).decode())


def test_gauges_count_the_filedrops_as_watched_and_age_the_oldest_waiting_one() -> None:
    backlog = Backlog()
    for name, phase, age in [("a", None, 30), ("b", "Queued", 600), ("c", "Loading", 900), ("d", "Loaded", 5000),
                             ("e", "Loading", 10), ("f", "Failed", 7000)]:
        backlog.filedrop(f"data/{name}", drop(name, phase, age=age))
    backlog.fileroute("data", "orders", {"status": {"lastLoadedAt": iso(3600)}})
    backlog.fileroute("data", "reviews", {"status": {}})  # never loaded: no sample, so no false freshness
    got = scrape(backlog)
    assert got[("filedrop_loads_running", ())] == 2
    assert got[("filedrop_files_waiting", ())] == 2
    assert got[("filedrop_oldest_waiting_file_age_seconds", ())] == 600  # Queued b, not the Loading or final ones
    by_phase = {dict(k[1])["phase"]: v for k, v in got.items() if k[0] == "filedrop_filedrops"}
    assert by_phase == {"Pending": 1, "Queued": 1, "Loading": 2, "Loaded": 1, "Failed": 1}
    last = {dict(k[1])["route"]: v for k, v in got.items() if k[0] == "filedrop_route_last_loaded_timestamp_seconds"}
    assert last == {"orders": NOW - 3600}


def test_a_routes_files_in_flight_come_from_the_watched_filedrops() -> None:
    backlog = Backlog()
    for name, phase, route, ns in [("a", None, "orders", "data"), ("b", "Queued", "orders", "data"),
                                   ("c", "Loading", "orders", "data"), ("d", "Loaded", "orders", "data"),
                                   ("e", "Queued", "reviews", "data"), ("f", "Queued", "orders", "other")]:
        backlog.filedrop(f"{ns}/{name}", drop(name, phase, route=route, ns=ns))
    assert backlog.in_flight("data", "orders") == 3
    backlog.filedrop("data/c", drop("c", "Loaded"))
    backlog.filedrop("data/a", None)
    assert (backlog.in_flight("data", "orders"), backlog.in_flight("data", "reviews")) == (1, 1)
    # the operator's own patch answer (resourceVersion 20) is newer than a watch event that trails it (12)
    backlog.filedrop("data/b", {**drop("b", "Loaded"), "metadata": {**drop("b", None)["metadata"],
                                                                     "resourceVersion": "20"}})
    backlog.filedrop("data/b", {**drop("b", "Queued"), "metadata": {**drop("b", None)["metadata"],
                                                                     "resourceVersion": "12"}})
    assert backlog.in_flight("data", "orders") == 0


def test_phase_changes_and_deletions_move_the_gauges_and_none_goes_below_zero() -> None:
    backlog = Backlog()
    backlog.filedrop("data/a", drop("a", "Loading"))
    backlog.filedrop("data/a", drop("a", "Loaded"))  # the same object, a later event
    backlog.filedrop("data/b", drop("b", "Loading"))
    backlog.filedrop("data/b", None)  # deleted while loading
    backlog.filedrop("data/never-seen", None)  # a deletion for an object this process never saw
    got = scrape(backlog)
    assert got[("filedrop_loads_running", ())] == 0
    assert got[("filedrop_oldest_waiting_file_age_seconds", ())] == 0
    assert [v for k, v in got.items() if k[0] == "filedrop_filedrops"] == [1]
    assert all(v >= 0 for v in got.values())


def test_a_restarted_operator_reports_the_loads_running_from_its_first_scrape() -> None:
    # What a new process sees: kopf lists every FileDrop again, no increments ever happened in it.
    backlog = Backlog()
    backlog.filedrop("data/a", drop("a", "Loading"))
    assert scrape(backlog)[("filedrop_loads_running", ())] == 1
    backlog.filedrop("data/a", drop("a", "Loaded"))  # the load it inherited ends
    assert scrape(backlog)[("filedrop_loads_running", ())] == 0


def test_the_byte_counter_and_build_info_follow_prometheus_naming() -> None:
    from prometheus_client import REGISTRY

    names = {f.name for f in REGISTRY.collect()}
    assert "filedrop_loaded_bytes" in names  # exposed as filedrop_loaded_bytes_total: the unit before _total
    assert "filedrop_bytes_loaded" not in names
    build = samples(generate_latest(REGISTRY).decode())
    [(labels, value)] = [(dict(k[1]), v) for k, v in build.items() if k[0] == "filedrop_build_info"]
    assert value == 1 and labels["version"] == metrics.filedrop.__version__


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_the_bridge_serves_its_counters_and_a_health_check_that_fails_when_polling_stops() -> None:
    kube, queue = FakeKube(ROUTES), MemoryQueue()
    bridge = Bridge(kube, queue, "https://sqs/q", "data", wait_seconds=1)
    before = samples(generate_latest(metrics.BRIDGE_REGISTRY).decode())
    queue.send(s3_event("orders.csv"))
    queue.send(s3_event("README.txt"))
    queue.send("not json")
    queue.send(s3_event("orders.csv", bucket="elsewhere"))
    bridge.allowed_buckets = frozenset({BUCKET})
    bridge.poll_once()
    stale = {"now": False}
    server = HealthServer(0, lambda: bridge.health(stale_after=-1) if stale["now"] else bridge.health(),
                          host="127.0.0.1").start()
    try:
        status, text = get(f"http://127.0.0.1:{server.port}/metrics")
        assert status == 200
        after = samples(text)

        def grew(name: str, **labels: str) -> float:
            key = (name, tuple(sorted(labels.items())))
            return after[key] - before.get(key, 0)

        assert grew("filedrop_bridge_messages_total", outcome="deleted") == 2
        assert grew("filedrop_bridge_messages_total", outcome="unparseable") == 1
        assert grew("filedrop_bridge_messages_total", outcome="refused") == 1
        assert grew("filedrop_bridge_filedrops_created_total") == 1
        assert grew("filedrop_bridge_unmatched_objects_total") == 1
        assert after[("filedrop_bridge_last_poll_timestamp_seconds", ())] > 0
        assert "filedrop_files_total" not in text  # the operator's metrics are not the bridge's
        assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200
        stale["now"] = True
        status, why = get(f"http://127.0.0.1:{server.port}/healthz")
        assert status == 503 and "no SQS receive finished" in why
    finally:
        server.stop()


def test_a_routes_first_failure_is_an_increase() -> None:
    # increase() over a series that appears at 1 is 0: the series exist at 0 once the route is seen
    metrics.route_seen("first-failure")
    got = samples(generate_latest(metrics.REGISTRY).decode())
    assert got[("filedrop_files_total", (("phase", "Failed"), ("route", "first-failure")))] == 0


def test_an_idle_client_does_not_hold_up_the_health_check() -> None:
    import socket

    kube, queue = FakeKube(ROUTES), MemoryQueue()
    bridge = Bridge(kube, queue, "https://sqs/q", "data", wait_seconds=1)
    server = HealthServer(0, bridge.health, host="127.0.0.1").start()
    idle = socket.create_connection(("127.0.0.1", server.port))  # connects, sends nothing
    try:
        assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200
    finally:
        idle.close()
        server.stop()
