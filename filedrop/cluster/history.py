"""What the operator asks the load history (``ingest_history``, DESIGN §3). Adapter layer.

The controller is given a :class:`LoadHistory`; :class:`WarehouseHistory` is the real one, reading PostgreSQL
through :mod:`filedrop.warehouse` (one short session per question). Tests give the controller an in-memory one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from filedrop.cluster.reconcile import Outcome
from filedrop.config import Settings
from filedrop.protocol import LoadedVersion
from filedrop.warehouse import connect, ensure_meta, history
from filedrop.warehouse.sql import ident


@dataclass(frozen=True)
class RouteFigures:
    """A FileRoute's status, as history counts it (object versions)."""

    files_loaded: int = 0
    files_failed: int = 0
    rows_loaded: int = 0
    last_loaded_at: datetime | None = None
    last_loaded_key: str | None = None
    last_error: str = ""

    def status(self, files_pending: int) -> dict[str, object]:
        """The FileRoute's ``status`` with the FileDrops still in flight."""
        status: dict[str, object] = {"filesPending": files_pending, "filesLoaded": self.files_loaded,
                                     "filesFailed": self.files_failed, "rowsLoaded": self.rows_loaded}
        if self.last_loaded_at:
            status["lastLoadedAt"] = self.last_loaded_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if self.last_loaded_key:
            status["lastLoadedKey"] = self.last_loaded_key
        status["lastError"] = self.last_error
        return status


class LoadHistory(Protocol):
    def prepare(self) -> None:
        """Create or upgrade the bookkeeping schema (the operator does it once, at start)."""

    def loaded_versions(self, bucket: str, key: str) -> list[LoadedVersion]:
        """The loaded versions of one (bucket, key), in load order."""

    def latest_outcome(self, filedrop: str) -> Outcome | None:
        """The newest attempt a FileDrop's loads recorded (None: no load of it has started)."""

    def route_figures(self, route: str) -> RouteFigures:
        """Files loaded and failed, rows, last load and outstanding error of one route."""


class WarehouseHistory:
    """:class:`LoadHistory` in the warehouse."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url, self.settings = url, settings

    @property
    def _meta(self) -> str:
        return self.settings.meta_schema

    def prepare(self) -> None:
        with connect(self.url) as conn:
            ensure_meta(conn, self.settings)

    def loaded_versions(self, bucket: str, key: str) -> list[LoadedVersion]:
        with connect(self.url) as conn:
            ensure_meta(conn, self.settings)  # one catalog read when current; a dropped schema comes back
            return history.loaded_versions(conn, self._meta, bucket, key)

    def latest_outcome(self, filedrop: str) -> Outcome | None:
        with connect(self.url) as conn:
            row = history.latest_for_filedrop(conn, self._meta, filedrop)
        if row is None:
            return None
        return Outcome(status=row["status"], load_id=row["load_id"], rows_parsed=row["rows_parsed"],
                       rows_loaded=row["rows_loaded"], rows_rejected=row["rows_rejected"],
                       first_error=row["first_error"], message=row["message"], retryable=bool(row["retryable"]))

    def route_figures(self, route: str) -> RouteFigures:
        with connect(self.url) as conn:
            stats = {s.route: s for s in history.route_status(conn, self._meta)}
            last = conn.execute(
                f"SELECT key FROM {ident(self._meta)}.ingest_history WHERE route = %s "
                "AND status = 'loaded' ORDER BY finished_at DESC LIMIT 1", (route,)).fetchone()
        s = stats.get(route)
        last_key = str(last[0]) if last else None
        if s is None:
            return RouteFigures(last_loaded_key=last_key)
        return RouteFigures(files_loaded=s.loaded, files_failed=s.failed, rows_loaded=int(s.rows_loaded),
                            last_loaded_at=s.last_load, last_loaded_key=last_key, last_error=s.last_error or "")
