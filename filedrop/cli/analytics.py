"""``filedrop transform`` and ``filedrop export``: the analytics built with dbt, and their export to S3."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.columns import Columns
from rich.console import JustifyMethod
from rich.progress import Progress, TextColumn
from rich.table import Table

from filedrop.analytics import export as analytics_export
from filedrop.analytics import transform as analytics_transform
from filedrop.cli.common import AsOfOpt, WarehouseOpt, err, error, fail, out, resolve_warehouse
from filedrop.config import Settings
from filedrop.exitcodes import ExitCode

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


def run_transform(url: str, settings: Settings, as_of: str | None, ingestion_date: str | None) -> bool:
    """Run the transform with a progress line, print its outcome and the analytics rows; True when ok.

    ``filedrop transform`` and ``filedrop run`` (after loading, or on its schedule) both run it."""
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
        error(str(exc))
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


def transform(
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
        raise fail(str(exc)) from None
    ok = run_transform(resolve_warehouse(settings, warehouse), settings, as_of, ingestion_date)
    raise typer.Exit(ExitCode.OK if ok else ExitCode.FAILED)


def export(
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
        raise fail(str(exc)) from None
    url = resolve_warehouse(settings, warehouse)
    t = Table(title="export", title_justify="left")
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("table", "left"), ("object", "left"), ("rows", "right"), ("bytes", "right"))
    for col, just in columns:
        t.add_column(col, justify=just)
    try:
        report = analytics_export.export(url, to, schema, export_id)
    except analytics_export.ExportError as exc:
        raise fail(str(exc)) from None
    for item in report.tables:
        t.add_row(item.table, item.uri, f"{item.rows:,}", f"{item.bytes:,}")
    out.print(t)
    for uri in report.removed:
        out.print(f"removed {uri} (not part of this export)", highlight=False)
