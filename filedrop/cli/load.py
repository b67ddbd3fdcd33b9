"""``filedrop run``, ``filedrop load`` and ``filedrop sample``: discover and load files, load one, make some."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.console import JustifyMethod
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn
from rich.table import Table

from filedrop.analytics import transform as analytics_transform
from filedrop.cli.analytics import run_transform
from filedrop.cli.common import (
    STATUS_STYLE,
    AsOfOpt,
    EngineOpt,
    Output,
    OutputOpt,
    RoutesOpt,
    WarehouseOpt,
    emit,
    err,
    error,
    fail,
    machine_output,
    out,
    resolve_warehouse,
    routes_from,
    shown,
)
from filedrop.config import Settings
from filedrop.exitcodes import ExitCode
from filedrop.load.session import LoadResult, load_object
from filedrop.load.sources import Listed, SourceError, describe_uri, pinned_object
from filedrop.local import pipeline
from filedrop.objects import SourceObject
from filedrop.routes import FileRoute, RouteError, parse_route, route_named
from filedrop.warehouse import WarehouseError, prepare_meta
from filedrop.warehouse.client import ServerError


class _Bars:
    """Rich progress: one bar over all bytes of the run, its label naming the file in flight."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.task = progress.add_task("discovering", total=None)

    def discovered(self, matched: list[tuple[Listed, FileRoute]]) -> None:
        total = sum(item.size for item, _ in matched)
        self.progress.update(self.task, total=total or None, description=f"{len(matched)} file(s)")

    def start_file(self, obj: SourceObject, route: FileRoute) -> Callable[[int], None]:
        self.progress.update(self.task, description=f"{route.name}: {shown(obj.key)}")
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


def _results_table(results: list[LoadResult]) -> Table:
    t = Table(title="loads", title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("file", "left"), ("route", "left"), ("status", "left"), ("parsed", "right"), ("loaded", "right"),
        ("rejected", "right"), ("message", "left"))
    for col, just in columns:
        t.add_column(col, justify=just)
    for r in results:
        style = STATUS_STYLE.get(r.status, "")
        msg = r.first_error if r.status == "failed" else r.message
        t.add_row(shown(r.obj.key), r.route, f"[{style}]{r.status}[/]", f"{r.rows_parsed:,}", f"{r.rows_loaded:,}",
                  f"{r.rows_rejected:,}", shown(msg or ""))
    return t


def result_json(r: LoadResult) -> dict[str, object]:
    """One load's outcome for ``-o json``."""
    return {"uri": r.obj.uri, "bucket": r.obj.bucket, "key": r.obj.key, "etag": r.obj.etag, "size": r.obj.size,
            "route": r.route, "status": r.status, "engine": r.engine, "load_id": r.load_id,
            "rows_parsed": r.rows_parsed, "rows_loaded": r.rows_loaded, "rows_rejected": r.rows_rejected,
            "first_error": r.first_error, "first_error_line": r.first_error_line, "message": r.message,
            "retryable": r.retryable}


def report_json(report: pipeline.RunReport) -> dict[str, object]:
    """A pass of ``filedrop run`` for ``-o json`` (one JSON Lines document, ``"kind": "load"``)."""
    return {"kind": "load", "files": [result_json(r) for r in report.results],
            "counts": pipeline.summarize(report.results), "unmatched": report.unmatched, "errors": report.errors,
            "cleaned": report.cleaned, "seconds": round(report.seconds, 3), "ok": report.ok}


def _print_report(report: pipeline.RunReport, as_json: bool = False) -> None:
    if as_json:
        emit(report_json(report))
        return
    if report.cleaned:
        out.print(f"cleaned up {len(report.cleaned)} load(s) left by a loader that died: "
                  + ", ".join(report.cleaned))
    if report.results:
        out.print(_results_table(report.results))
    for u in report.unmatched:
        out.print(f"[yellow]unmatched[/] (no FileRoute): {shown(u)}", highlight=False)
    for e in report.errors:
        out.print(f"[bold red]error:[/] {shown(e)}", highlight=False)
    counts = pipeline.summarize(report.results)
    rows = sum(r.rows_loaded for r in report.results if r.status == "loaded")
    rejected = sum(r.rows_rejected for r in report.results if r.status == "loaded")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) or "nothing to load"
    out.print(f"{len(report.results)} file(s): {summary}; {rows:,} rows loaded, {rejected:,} rows rejected; "
              f"{len(report.unmatched)} unmatched; {report.seconds:.1f}s", highlight=False)


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
    output: OutputOpt = Output.table,
) -> None:
    """Discover files, match them to FileRoutes, load each not yet loaded, then transform.

    Prints what happened. The transform (dbt build + docs, `filedrop transform`) runs after loading
    unless --no-transform; with --watch only on --transform-schedule. Exits non-zero when any file or
    the transform failed, so cron and CI notice. With -o json, stdout is JSON Lines: a "load" document
    per pass, a "transform" document per transform.
    """
    settings = Settings()
    route_list = routes_from(routes)
    if not source and not queue:
        raise fail("give --source DIR|s3://bucket/prefix, or --queue SQS_URL")
    if engine not in (None, "auto", "direct", "spark"):
        raise fail(f"--engine must be auto, direct or spark, not {engine!r}")
    schedule = None
    try:
        if as_of is not None:
            analytics_transform.parse_date(as_of, "--as-of")
        if transform_schedule is not None:
            if not watch or no_transform:
                raise fail("--transform-schedule needs --watch (and no --no-transform)")
            schedule = analytics_transform.TransformSchedule(transform_schedule)
    except analytics_transform.TransformError as exc:
        raise fail(str(exc)) from None
    url = resolve_warehouse(settings, warehouse)
    if schedule is not None:
        err.print(f"transform on '{schedule.expression}', next at {schedule.next_at:%Y-%m-%d %H:%M %Z}",
                  highlight=False)
    any_failed = False
    with machine_output(output) as as_json:
        try:
            any_failed = _run_loop(url, settings, route_list, source, queue, engine, watch, interval, schedule,
                                   as_of, as_json)
            if not watch and not no_transform:
                any_failed = not _transform(url, settings, as_of, as_json) or any_failed
        except KeyboardInterrupt:
            err.print("stopped")
    raise typer.Exit(ExitCode.FAILED if any_failed else ExitCode.OK)


def _transform(url: str, settings: Settings, as_of: str | None, as_json: bool) -> bool:
    ok = run_transform(url, settings, as_of, None)
    if as_json:
        emit({"kind": "transform", "as_of": as_of, "ok": ok})
    return ok


def _run_loop(url: str, settings: Settings, route_list: list[FileRoute], source: str | None, queue: str | None,
              engine: str | None, watch: bool, interval: float,
              schedule: analytics_transform.TransformSchedule | None = None, as_of: str | None = None,
              as_json: bool = False) -> bool:
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
                raise fail(str(exc)) from None
            error(str(exc))
            report = pipeline.RunReport(errors=[str(exc)])
        if not watch or report.results or report.errors or report.unmatched:
            _print_report(report, as_json)
        any_failed = any_failed or not report.ok
        if not watch:
            return any_failed
        if schedule is not None and schedule.due():
            any_failed = not _transform(url, settings, as_of, as_json) or any_failed
            err.print(f"next transform at {schedule.next_at:%Y-%m-%d %H:%M %Z}", highlight=False)
        if not queue:
            # the poll interval the user asked for, shortened to meet the next scheduled transform
            time.sleep(min(interval, schedule.seconds_until()) if schedule is not None else interval)


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
    output: OutputOpt = Output.table,
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
            r = route_named(routes_from(routes), route)
        if etag:
            obj = pinned_object(uri, etag=etag, size=size, version_id=version_id, sequencer=sequencer)
        else:
            obj = describe_uri(uri)
    except (RouteError, SourceError, json.JSONDecodeError) as exc:
        raise fail(str(exc)) from None
    url = resolve_warehouse(settings, warehouse)
    prepare_meta(url, settings)
    with _progress() as progress:
        task = progress.add_task(shown(obj.key), total=obj.size or None)
        result = load_object(url, settings, r, obj, engine=engine, filedrop=filedrop, replay=replay,
                             on_bytes=lambda n: progress.advance(task, n))
    if output is Output.json:
        emit(result_json(result))
    else:
        out.print(_results_table([result]))
    if result.status == "failed":
        raise typer.Exit(ExitCode.TEMPFAIL if result.retryable else ExitCode.FAILED)
    raise typer.Exit(ExitCode.OK)


def sample(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write the files into.")],
    orders: Annotated[int, typer.Option("--orders", help="Number of orders (and shipments).")] = 10_000,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 0,
    gzip: Annotated[bool, typer.Option("--gzip", help="Write .csv.gz files.")] = False,
) -> None:
    """Write deterministic d2b-shaped files: orders, reviews, shipment_deliveries."""
    try:
        from filedrop.local.sample import SampleSpec, total_rows, write_sample
    except ImportError as exc:
        raise fail(f"filedrop sample needs {exc.name}: pip install 'filedrop-pipeline[sample]'") from None
    spec = SampleSpec(orders=orders, seed=seed, gzip=gzip)
    started = time.monotonic()
    try:
        with Progress(TextColumn("writing"), BarColumn(), TextColumn("{task.completed:,}/{task.total:,} rows"),
                      TimeRemainingColumn(), console=err, transient=True) as progress:
            task = progress.add_task("rows", total=total_rows(spec))
            paths = write_sample(out_dir, spec, on_rows=lambda n: progress.advance(task, n))
    except (ValueError, OSError) as exc:
        raise fail(str(exc)) from None
    for p in paths:
        out.print(f"{p}  {p.stat().st_size:,} bytes", highlight=False)
    out.print(f"done in {time.monotonic() - started:.1f}s", highlight=False)
