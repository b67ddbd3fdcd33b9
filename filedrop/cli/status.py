"""``filedrop status`` and ``filedrop history``: what has been loaded, per route and per file."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table

from filedrop.cli.common import STATUS_STYLE, RoutesOpt, WarehouseOpt, out, resolve_warehouse, routes_from, shown
from filedrop.config import Settings
from filedrop.warehouse import connect, ensure_meta
from filedrop.warehouse import history as load_history


def _fmt_time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _n(v: int | None) -> str:
    return "" if v is None else f"{v:,}"


def history(
    warehouse: WarehouseOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many rows, newest first.")] = 50,
    route: Annotated[str | None, typer.Option("--route", help="Only this route.")] = None,
) -> None:
    """The per-file load history (filedrop.ingest_history), newest first."""
    settings = Settings()
    with connect(resolve_warehouse(settings, warehouse)) as conn:
        ensure_meta(conn, settings)
        rows = load_history.recent(conn, settings.meta_schema, limit, route)
    t = Table(title=f"{settings.meta_schema}.ingest_history", title_justify="left")
    for col in ("started", "key", "route", "status", "parsed", "loaded", "rejected", "engine", "load_id",
                "error / message"):
        t.add_column(col, justify="right" if col in ("parsed", "loaded", "rejected") else "left")
    for h in rows:
        style = STATUS_STYLE.get(h["status"], "")
        note = h["first_error"] or h["message"] or ""
        if h["first_error_line"] is not None and h["status"] == "failed":
            note = f"line {h['first_error_line']}: {note}" if not note.startswith("line ") else note
        t.add_row(_fmt_time(h["started_at"]), shown(h["key"]), h["route"], f"[{style}]{h['status']}[/]",
                  _n(h["rows_parsed"]), _n(h["rows_loaded"]), _n(h["rows_rejected"]), h["engine"],
                  h["load_id"][:12], shown(note))
    out.print(t)


def status(routes: RoutesOpt = None, warehouse: WarehouseOpt = None) -> None:
    """Per route: files loaded, failed, pending (in flight), rows, last load, last error."""
    settings = Settings()
    route_list = routes_from(routes)
    with connect(resolve_warehouse(settings, warehouse)) as conn:
        ensure_meta(conn, settings)
        stats = {s.route: s for s in load_history.route_status(conn, settings.meta_schema)}
    t = Table(title="routes", title_justify="left")
    for col in ("route", "table", "loaded", "failed", "pending", "rows", "last load", "last error"):
        t.add_column(col, justify="right" if col in ("loaded", "failed", "pending", "rows") else "left")
    names = [r.name for r in route_list] + sorted(set(stats) - {r.name for r in route_list})
    tables = {r.name: r.spec.table for r in route_list}
    for name in names:
        s = stats.get(name)
        t.add_row(name, tables.get(name, s.table if s else ""), str(s.loaded if s else 0),
                  f"[red]{s.failed}[/]" if s and s.failed else "0", str(s.running if s else 0),
                  f"{s.rows_loaded:,}" if s else "0", _fmt_time(s.last_load if s else None),
                  shown(s.last_error or "") if s else "")
    out.print(t)
