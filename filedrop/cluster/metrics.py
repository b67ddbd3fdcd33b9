"""Prometheus metrics of the operator (DESIGN §4): files by phase, rows, bytes, durations, lag."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import Counter, Gauge, Histogram, start_http_server

from filedrop.cluster.view import FileDropView

FILES = Counter("filedrop_files_total", "FileDrops that reached a final phase", ["route", "phase"])
LOADING = Gauge("filedrop_loads_running", "Loads in flight")
ROWS = Counter("filedrop_rows_loaded_total", "Rows loaded into staging", ["route"])
REJECTED = Counter("filedrop_rows_rejected_total", "Rows quarantined", ["route"])
BYTES = Counter("filedrop_bytes_loaded_total", "Bytes of files loaded", ["route"])
DURATION = Histogram("filedrop_load_duration_seconds", "From job start to final phase", ["route"],
                     buckets=(1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600))
LAG = Histogram("filedrop_event_to_loaded_seconds", "From the S3 event to the rows being queryable", ["route"],
                buckets=(0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600))


def serve(port: int) -> None:
    start_http_server(port)


def started(route: str) -> None:
    LOADING.inc()


def _seconds_since(value: str | None, now: datetime) -> float | None:
    if not value:
        return None
    return (now - datetime.fromisoformat(value.replace("Z", "+00:00"))).total_seconds()


def finished(fd: FileDropView, status: Mapping[str, Any]) -> None:
    """Record a FileDrop reaching a final phase (``status`` is the patch being applied)."""
    route = status.get("route") or fd.status.route or ""
    phase = status["phase"]
    FILES.labels(route, phase).inc()
    if fd.status.phase == "Loading":
        LOADING.dec()
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
