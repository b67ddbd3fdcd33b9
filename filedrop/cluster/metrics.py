"""Prometheus metrics of the operator (DESIGN §4) and the bridge, and the bridge's health endpoint.

Two kinds, kept apart on purpose:

* **counters and histograms** of what this process saw happen (files reaching a final phase, rows, bytes,
  durations, lag): they start at zero with the process, as Prometheus' ``rate``/``increase`` expect;
* **gauges of the present state** (FileDrops by phase, loads running, the oldest waiting file, each route's
  last load) are never incremented: :class:`Backlog` keeps the FileDrops and FileRoutes as the API server's
  watch shows them, and :class:`BacklogCollector` computes the gauges from it at each scrape. After a restart
  the watch lists everything again, so the gauges are right from the first scrape (never below zero).
"""

from __future__ import annotations

import logging
import platform
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    ProcessCollector,
    make_wsgi_app,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

import filedrop
from filedrop.cluster.view import BacklogSummary, DropState, FileDropView, parse_time

log = logging.getLogger(__name__)

#: the labels of ``filedrop_build_info``, which the operator's and the bridge's registries both expose
BUILD_LABELS = {"version": filedrop.__version__, "python_version": platform.python_version()}
BUILD = Info("filedrop_build", "The running filedrop's version (the value is always 1)")
BUILD.info(BUILD_LABELS)

FILES = Counter("filedrop_files_total", "FileDrops this operator took to a final phase", ["route", "phase"])
ROWS = Counter("filedrop_rows_loaded_total", "Rows loaded into staging", ["route"])
REJECTED = Counter("filedrop_rows_rejected_total", "Rows quarantined", ["route"])
BYTES = Counter("filedrop_loaded_bytes_total", "Bytes of the files loaded", ["route"])
DURATION = Histogram("filedrop_load_duration_seconds", "From job start to final phase", ["route"],
                     buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
LAG = Histogram("filedrop_event_to_loaded_seconds", "From the S3 event to the rows being queryable", ["route"],
                buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600))

class Backlog:
    """The FileDrops and FileRoutes of the watched namespaces, as the last watch event of each showed it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._drops: dict[str, DropState] = {}
        self._versions: dict[str, int] = {}  # key -> resourceVersion of the body recorded
        self._last_loaded: dict[tuple[str, str], float] = {}  # (namespace, route) -> status.lastLoadedAt

    def filedrop(self, key: str, body: Mapping[str, Any] | None) -> None:
        """Record a FileDrop as ``body`` shows it, unless an older version of it (the operator records its own
        status patches' answers, which its watch events can trail); ``None``: it was deleted."""
        with self._lock:
            if body is None:
                self._drops.pop(key, None)
                self._versions.pop(key, None)
                return
            try:
                version = int((body.get("metadata") or {}).get("resourceVersion") or 0)
            except (TypeError, ValueError):
                version = 0
            if version and version < self._versions.get(key, 0):
                return
            self._drops[key] = DropState.of(body)
            self._versions[key] = version

    def fileroute(self, namespace: str, name: str, body: Mapping[str, Any] | None) -> None:
        """Record a FileRoute's last load (its status, written from the load history); ``None``: deleted."""
        key = (namespace, name)
        try:
            loaded = parse_time((body.get("status") or {}).get("lastLoadedAt")) if body is not None else None
        except ValueError:
            loaded = None
        with self._lock:
            if loaded is None:
                self._last_loaded.pop(key, None)
            else:
                self._last_loaded[key] = loaded.timestamp()

    def in_flight(self, namespace: str, route: str) -> int:
        """The route's FileDrops not yet final (Pending, Queued, Loading)."""
        with self._lock:
            return sum(1 for d in self._drops.values() if d.namespace == namespace and d.route == route
                       and d.phase in ("Pending", "Queued", "Loading"))

    def snapshot(self) -> tuple[list[DropState], dict[tuple[str, str], float]]:
        with self._lock:
            return list(self._drops.values()), dict(self._last_loaded)


class BacklogCollector(Collector):
    """The present-state gauges, computed from a :class:`Backlog` at each scrape."""

    def __init__(self, backlog: Backlog, clock: Callable[[], float] = time.time) -> None:
        self.backlog, self.clock = backlog, clock

    def collect(self) -> Iterator[GaugeMetricFamily]:
        drops, last_loaded = self.backlog.snapshot()
        now = self.clock()
        by_phase = GaugeMetricFamily("filedrop_filedrops", "FileDrops by phase and route, as the API server has them",
                                     labels=["namespace", "route", "phase"])
        tally = Tally((d.namespace, d.route, d.phase) for d in drops)
        for labels, n in sorted(tally.items()):
            by_phase.add_metric(list(labels), n)
        yield by_phase
        summary = BacklogSummary.of(drops)
        yield GaugeMetricFamily("filedrop_loads_running", "FileDrops in phase Loading (a loader Job or Spark "
                                "application running)", value=summary.by_phase.get("Loading", 0))
        yield GaugeMetricFamily("filedrop_files_waiting", "FileDrops in phase Pending or Queued",
                                value=summary.waiting)
        yield GaugeMetricFamily("filedrop_oldest_waiting_file_age_seconds",
                                "Age of the oldest FileDrop in phase Pending or Queued (0 when none waits)",
                                value=summary.oldest_age(datetime.fromtimestamp(now, UTC)))
        last = GaugeMetricFamily("filedrop_route_last_loaded_timestamp_seconds",
                                 "When each FileRoute last loaded a file (Unix time, from the load history)",
                                 labels=["namespace", "route"])
        for (namespace, route), at in sorted(last_loaded.items()):
            last.add_metric([namespace, route], at)
        yield last


def serve(port: int, backlog: Backlog | None = None) -> None:
    """The operator's /metrics (kopf serves its own /healthz on the liveness port)."""
    if backlog is not None:
        REGISTRY.register(BacklogCollector(backlog))
    start_http_server(port)


def _seconds_since(value: str | None, now: datetime) -> float | None:
    when = parse_time(value)
    return None if when is None else (now - when).total_seconds()


def route_seen(route: str) -> None:
    """Create the route's final-phase series at zero, so ``increase()`` sees its first failure (a series that
    appears at 1 increases by nothing)."""
    for phase in ("Loaded", "Skipped", "Failed"):
        FILES.labels(route, phase)


def finished(fd: FileDropView, status: Mapping[str, Any]) -> None:
    """Record a FileDrop reaching a final phase (``status`` is the patch being applied)."""
    route = status.get("route") or fd.status.route or ""
    phase = status["phase"]
    FILES.labels(route, phase).inc()
    now = datetime.now(UTC)
    if phase == "Loaded":
        ROWS.labels(route).inc(status.get("rowsLoaded") or 0)
        REJECTED.labels(route).inc(status.get("rowsRejected") or 0)
        BYTES.labels(route).inc(fd.spec.size)
        took = _seconds_since(fd.status.started_at, now)
        if took is not None:
            DURATION.labels(route).observe(took)
        lag = _seconds_since(fd.spec.event_time, now)
        if lag is not None:
            LAG.labels(route).observe(lag)


# --- the bridge -------------------------------------------------------------------------------------------

BRIDGE_REGISTRY = CollectorRegistry(auto_describe=True)
ProcessCollector(registry=BRIDGE_REGISTRY)
BRIDGE_BUILD = Info("filedrop_build", "The running filedrop's version (the value is always 1)",
                    registry=BRIDGE_REGISTRY)
BRIDGE_BUILD.info(BUILD_LABELS)
BRIDGE_MESSAGES = Counter("filedrop_bridge_messages_total", "SQS messages handled, by outcome",
                          ["outcome"], registry=BRIDGE_REGISTRY)
BRIDGE_FILEDROPS = Counter("filedrop_bridge_filedrops_created_total", "FileDrops the bridge created",
                           registry=BRIDGE_REGISTRY)
BRIDGE_UNMATCHED = Counter("filedrop_bridge_unmatched_objects_total", "Objects named by events that no FileRoute "
                           "matches", registry=BRIDGE_REGISTRY)
BRIDGE_LAST_POLL = Gauge("filedrop_bridge_last_poll_timestamp_seconds", "When the bridge last finished a receive "
                         "from SQS and the handling of its batch (Unix time)", registry=BRIDGE_REGISTRY)


class _Quiet(WSGIRequestHandler):
    #: a client that connects and sends nothing is dropped after this many seconds
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("metrics/health: " + format, *args)


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow or idle client cannot hold up the probes."""

    daemon_threads = True


class HealthServer:
    """The bridge's ``/metrics`` and ``/healthz`` on one port.

    ``/healthz`` answers 200 while ``healthy()`` holds (the poll loop finished a round recently), 503 otherwise:
    a bridge stuck on the API server or SQS is restarted by its liveness probe.
    """

    def __init__(self, port: int, healthy: Callable[[], tuple[bool, str]], host: str = "0.0.0.0") -> None:
        metrics_app = make_wsgi_app(BRIDGE_REGISTRY)

        def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
            if environ.get("PATH_INFO") == "/healthz":
                ok, why = healthy()
                start_response("200 OK" if ok else "503 Service Unavailable",
                               [("Content-Type", "text/plain; charset=utf-8")])
                return [why.encode() + b"\n"]
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]

        self.server: WSGIServer = make_server(host, port, app, server_class=_ThreadingServer, handler_class=_Quiet)
        self.port = self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, name="bridge-health", daemon=True)

    def start(self) -> HealthServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
