"""``filedrop status`` and ``filedrop history``: what has been loaded, per route and per file; what waits."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.table import Table

from filedrop.cli.common import (
    STATUS_STYLE,
    Output,
    OutputOpt,
    RoutesOpt,
    WarehouseOpt,
    emit,
    fail,
    machine_output,
    out,
    resolve_warehouse,
    routes_from,
    shown,
)
from filedrop.config import Settings
from filedrop.exitcodes import ExitCode
from filedrop.warehouse import connect, ensure_meta, runs
from filedrop.warehouse import history as load_history


def _fmt_time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


def _n(v: int | None) -> str:
    return "" if v is None else f"{v:,}"


def _size(n: int | None) -> str:
    if n is None:
        return ""
    size, unit = float(n), "B"
    for bigger in ("kB", "MB", "GB"):
        if size < 1000:
            break
        size, unit = size / 1000, bigger
    return f"{size:,.0f} B" if unit == "B" else f"{size:,.1f} {unit}"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m"


_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_since(value: str, now: datetime | None = None) -> datetime:
    """``--since``: a time ago (``90m``, ``6h``, ``2d``, ``1w``) or an ISO 8601 date or time (UTC unless it
    says otherwise)."""
    now = now or datetime.now(UTC)
    m = _RELATIVE.match(value.strip())
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"--since {value!r}: give a time ago (90m, 6h, 2d, 1w) or an ISO date or time "
                         "(2026-12-01, 2026-12-01T06:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class HistoryStatus(StrEnum):
    running = "running"
    loaded = "loaded"
    skipped = "skipped"
    skipped_duplicate = "skipped_duplicate"
    skipped_superseded = "skipped_superseded"
    failed = "failed"


def history(
    warehouse: WarehouseOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many rows, newest first.", min=1)] = 50,
    route: Annotated[str | None, typer.Option("--route", help="Only this route.")] = None,
    since: Annotated[str | None, typer.Option(
        "--since", help="Only loads started since: a time ago (90m, 6h, 2d, 1w) or an ISO date or time.",
        show_default=False)] = None,
    status: Annotated[HistoryStatus | None, typer.Option(
        "--status", help="Only loads with this outcome (skipped: both kinds).", show_default=False)] = None,
    table: Annotated[str | None, typer.Option("--table", help="Only loads into this staging table.")] = None,
    output: OutputOpt = Output.table,
) -> None:
    """The per-file load history (filedrop.ingest_history), newest first."""
    try:
        since_at = parse_since(since) if since else None
    except ValueError as exc:
        raise fail(str(exc)) from None
    settings = Settings()
    with machine_output(output) as as_json, connect(resolve_warehouse(settings, warehouse)) as conn:
        ensure_meta(conn, settings)
        rows = load_history.recent(conn, settings.meta_schema, limit, route, since=since_at,
                                   status=status.value if status else None, table=table)
        if as_json:
            emit(rows)
            return
    columns = ("started", "key", "route", "table", "status", "size", "parsed", "loaded", "rejected", "took",
               "error / message")
    cells = []
    for h in rows:
        note = h["first_error"] or h["message"] or ""
        if h["first_error_line"] is not None and h["status"] == "failed":
            note = f"line {h['first_error_line']}: {note}" if not note.startswith("line ") else note
        cells.append((_fmt_time(h["started_at"]), shown(h["key"]), h["route"], h["target_table"], h["status"],
                      _size(h["size_bytes"]), _n(h["rows_parsed"]), _n(h["rows_loaded"]), _n(h["rows_rejected"]),
                      _duration(h["duration_seconds"]), shown(note)))
    # On a narrow terminal the key and the figures are kept whole, the message wraps, and the start time,
    # route and table are cut (-o json has everything, with the engine and the load id).
    whole = {"key", "status", "size", "parsed", "loaded", "rejected", "took"}
    t = Table(title=f"{settings.meta_schema}.ingest_history", title_justify="left")
    for i, col in enumerate(columns):
        widest = max([len(col)] + [len(c[i]) for c in cells])
        t.add_column(col, justify="right" if col in ("size", "parsed", "loaded", "rejected", "took") else "left",
                     no_wrap=col in whole, overflow="fold" if col == "error / message" else "ellipsis",
                     min_width=widest if col in whole else None)
    for c in cells:
        style = STATUS_STYLE.get(c[4], "")
        t.add_row(*c[:4], f"[{style}]{c[4]}[/]", *c[5:])
    out.print(t)


def _filedrops(namespace: str) -> dict[str, Any]:
    """The FileDrops of a namespace as the API server has them: counts by phase, the oldest waiting one."""
    try:
        from filedrop.cluster.kube import Kube
        from filedrop.cluster.view import BacklogSummary, DropState
    except ImportError:
        raise fail("--namespace reads FileDrops from Kubernetes: pip install 'filedrop-pipeline[cluster]'") from None
    try:
        bodies = Kube().list_filedrops(namespace)
    except Exception as exc:  # noqa: BLE001 - no kubeconfig, no access, no server: say which
        raise fail(f"cannot list FileDrops in namespace {namespace}: {str(exc).strip().splitlines()[0]}",
                   ExitCode.TEMPFAIL) from None
    summary = BacklogSummary.of(DropState.of(b) for b in bodies)
    oldest = summary.oldest_waiting
    return {"namespace": namespace, "by_phase": summary.by_phase, "waiting": summary.waiting,
            "oldest_waiting": None if oldest is None else {
                "name": oldest.name, "key": oldest.key, "route": oldest.route, "phase": oldest.phase,
                "created": oldest.created, "age_seconds": round(summary.oldest_age(datetime.now(UTC)), 1)}}


def _queue(url: str) -> dict[str, Any]:
    """SQS's approximate counts of the queue of S3 notifications (what PIPE_STATUS calls pendingFileCount)."""
    import boto3
    from botocore.exceptions import BotoCoreError, ClientError

    names = {"ApproximateNumberOfMessages": "messages", "ApproximateNumberOfMessagesNotVisible": "in_flight",
             "ApproximateNumberOfMessagesDelayed": "delayed"}
    try:
        attrs = boto3.client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=list(names))["Attributes"]
    except (BotoCoreError, ClientError) as exc:
        raise fail(f"cannot read the queue {url}: {exc}", ExitCode.TEMPFAIL) from None
    return {"url": url, **{names[k]: int(v) for k, v in attrs.items() if k in names}}


def status(
    routes: RoutesOpt = None,
    warehouse: WarehouseOpt = None,
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-n", help="Also the FileDrops of this Kubernetes namespace: how many wait, the oldest.",
        show_default=False)] = None,
    queue: Annotated[str | None, typer.Option(
        "--queue", help="Also the depth of this SQS queue of S3 notifications.", show_default=False)] = None,
    output: OutputOpt = Output.table,
) -> None:
    """Per route: files loaded, failed, pending (in flight), rows, last load, last error; with --namespace the
    FileDrops waiting, with --queue the notifications not yet turned into FileDrops."""
    settings = Settings()
    route_list = routes_from(routes)
    with machine_output(output) as as_json:
        with connect(resolve_warehouse(settings, warehouse)) as conn:
            ensure_meta(conn, settings)
            stats = {s.route: s for s in load_history.route_status(conn, settings.meta_schema)}
            last_runs = runs.latest(conn, settings.meta_schema, limit=5)
        names = [r.name for r in route_list] + sorted(set(stats) - {r.name for r in route_list})
        tables = {r.name: r.spec.table for r in route_list}
        per_route: list[dict[str, Any]] = []
        for name in names:
            s = stats.get(name)
            per_route.append({"route": name, "table": tables.get(name, s.table if s else ""),
                              "loaded": s.loaded if s else 0, "failed": s.failed if s else 0,
                              "skipped": s.skipped if s else 0, "pending": s.running if s else 0,
                              "rows_loaded": s.rows_loaded if s else 0, "last_load": s.last_load if s else None,
                              "last_error": (s.last_error or "") if s else ""})
        drops = _filedrops(namespace) if namespace else None
        depth = _queue(queue) if queue else None
        transform_runs = [{"workflow": r.workflow, "status": r.status, "as_of_date": r.as_of_date,
                           "ingestion_date": r.ingestion_date, "started_at": r.started_at,
                           "finished_at": r.finished_at, "duration_seconds": r.duration_seconds,
                           "failures": r.failures} for r in last_runs]
        if as_json:
            emit({"routes": per_route, "transform_runs": transform_runs, **({"filedrops": drops} if drops else {}),
                  **({"queue": depth} if depth else {})})
            return
    t = Table(title="routes", title_justify="left")
    for col in ("route", "table", "loaded", "failed", "pending", "rows", "last load", "last error"):
        t.add_column(col, justify="right" if col in ("loaded", "failed", "pending", "rows") else "left")
    for r in per_route:
        t.add_row(r["route"], r["table"], str(r["loaded"]), f"[red]{r['failed']}[/]" if r["failed"] else "0",
                  str(r["pending"]), f"{r['rows_loaded']:,}", _fmt_time(r["last_load"]), shown(r["last_error"]))
    out.print(t)
    if drops is not None:
        phases = ", ".join(f"{n} {p}" for p, n in drops["by_phase"].items()) or "none"
        out.print(f"FileDrops in {drops['namespace']}: {phases}; {drops['waiting']} waiting", highlight=False)
        if drops["oldest_waiting"]:
            o = drops["oldest_waiting"]
            out.print(f"oldest waiting: {shown(o['key'])} ({o['phase']}, route {o['route'] or '-'}, "
                      f"{_duration(o['age_seconds'])})", highlight=False)
    if last_runs:
        _print_runs(last_runs)
    if depth is not None:
        out.print(f"queue: {depth.get('messages', 0)} notification(s) waiting, {depth.get('in_flight', 0)} being "
                  f"handled, {depth.get('delayed', 0)} delayed", highlight=False)


def _print_runs(last: list[runs.TransformRun]) -> None:
    """The analytics workflow's last runs (recorded by its exit handler), newest first."""
    t = Table(title="analytics runs (the workflow's exit handler)", title_justify="left")
    for col in ("run", "status", "as of", "started", "took", "failed steps"):
        t.add_column(col)
    for r in last:
        status = r.status if r.status == "Succeeded" else f"[red]{r.status}[/]"
        failed = "; ".join(f"{f['step'] or '?'}: {f['message']}" for f in r.failures)
        t.add_row(shown(r.workflow), status, str(r.as_of_date or "-"), _fmt_time(r.started_at),
                  _duration(r.duration_seconds), shown(failed))
    out.print(t)
