"""The transform: run the dbt project that builds the analytics schema (DESIGN §1, §6).

A transform is: (locally) generate ``if_common.dim_dates`` from the ``holidays`` package, ``dbt build``
(seeds, models, unit and data tests), ``dbt docs generate --static`` copied to
``FILEDROP_HOME/docs/index.html``, and read back the analytics rows the run wrote. How dbt itself is
invoked is :mod:`filedrop.analytics.dbt`.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

from filedrop.analytics import dims
from filedrop.analytics.dbt import (
    OnNode,
    StepResult,
    TransformConfig,
    TransformError,
    connection_env,
    dbt_args,
    dbt_env,
    dbt_vars,
    parse_date,
    run_dbt,
)
from filedrop.config import Settings
from filedrop.warehouse import connect
from filedrop.warehouse.client import quote_name

__all__ = ["AnalyticsTable", "StepResult", "TransformConfig", "TransformError", "TransformReport",
           "TransformSchedule", "ensure_dim_dates", "parse_date", "read_analytics", "transform"]

log = logging.getLogger(__name__)


@dataclass
class AnalyticsTable:
    schema: str
    name: str
    columns: list[str]
    rows: list[tuple[Any, ...]]


@dataclass
class TransformReport:
    as_of: date
    ingestion_date: date
    steps: list[StepResult] = field(default_factory=list)
    docs: Path | None = None
    tables: list[AnalyticsTable] = field(default_factory=list)
    dim_dates: str | None = None  # what happened to if_common.dim_dates
    log_file: Path | None = None
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return bool(self.steps) and all(s.success for s in self.steps)


_DIM_DATES_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    calendar_dt date PRIMARY KEY,
    year_num integer NOT NULL,
    month_of_the_year_num integer NOT NULL,
    day_of_the_month_num integer NOT NULL,
    day_of_the_week_num integer NOT NULL,
    working_day boolean NOT NULL
)"""


def ensure_dim_dates(url: str, cfg: TransformConfig) -> str:
    """Create or refresh ``if_common.dim_dates`` from the ``holidays`` package (local runs only).

    One transaction: readers see the old calendar or the new one. Rewritten only when it differs from
    the generated one (a new country, or a newer ``holidays`` release). Returns what it did.
    """
    if not cfg.builds_if_common:
        raise TransformError("if_common is read-only for target prod; dim_dates is not generated there")
    try:
        days = [d.as_row() for d in dims.calendar(cfg.holiday_country)]
    except (dims.DimsError, ImportError) as exc:
        raise TransformError(f"dim_dates: {exc}") from None
    table = quote_name(cfg.if_common_schema, "dim_dates")
    with connect(url) as conn:
        with conn.transaction():
            conn.lock_ddl("filedrop.dim_dates")
            conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_name(cfg.if_common_schema)}")
            conn.execute(_DIM_DATES_DDL.format(table=table))
            current = conn.all(
                "SELECT calendar_dt::text, year_num, month_of_the_year_num, day_of_the_month_num, "
                f"day_of_the_week_num, working_day::text FROM {table} ORDER BY calendar_dt")
            if [tuple(r) for r in current] == days:
                return f"{cfg.if_common_schema}.dim_dates up to date ({cfg.holiday_country} holidays)"
            conn.execute(f"DELETE FROM {table}")
            with conn.copy(f"COPY {table} FROM STDIN") as copy:
                for row in days:
                    copy.write_row(row)
    return f"{cfg.if_common_schema}.dim_dates generated: {len(days):,} days, {cfg.holiday_country} holidays"


# --- the transform -------------------------------------------------------------------------------

def transform(url: str, settings: Settings, *, as_of: str | date | None = None,
              ingestion_date: str | date | None = None, cfg: TransformConfig | None = None,
              on_step: Callable[[str], None] | None = None, on_node: OnNode | None = None,
              docs: bool = True) -> TransformReport:
    """``dbt build`` then ``dbt docs generate``; the analytics rows written for ``ingestion_date``.

    Docs are generated even when the build failed (they describe the project, not the data).
    """
    cfg = cfg or TransformConfig.from_settings(settings)
    report = TransformReport(as_of=parse_date(as_of, "--as-of"),
                             ingestion_date=parse_date(ingestion_date, "--ingestion-date"),
                             log_file=cfg.log_path / "dbt.log")
    if not (cfg.project_dir / "dbt_project.yml").is_file():
        raise TransformError(f"no dbt project at {cfg.project_dir} (set FILEDROP_DBT_PROJECT_DIR)")
    started = time.monotonic()
    env = {**connection_env(url), **dbt_env(cfg)}
    say = on_step or (lambda _msg: None)
    if cfg.builds_if_common:
        report.dim_dates = ensure_dim_dates(url, cfg)
    variables = dbt_vars(report.as_of, report.ingestion_date)
    say("dbt build")
    build = run_dbt(dbt_args(["build"], cfg, variables), env, on_node)
    report.steps.append(build)
    if docs:
        say("dbt docs generate")
        step = run_dbt(dbt_args(["docs", "generate", "--static"], cfg, variables), env)
        report.steps.append(step)
        static = cfg.target_path / "static_index.html"
        if step.success and static.is_file():
            cfg.docs_dir.mkdir(parents=True, exist_ok=True)
            report.docs = cfg.docs_dir / "index.html"
            shutil.copyfile(static, report.docs)
    report.tables = read_analytics(url, cfg, report.ingestion_date,
                                   [n.name for n in build.nodes if "analytics" in n.tags
                                    and n.resource_type == "model" and n.status == "success"])
    report.seconds = time.monotonic() - started
    return report


def read_analytics(url: str, cfg: TransformConfig, ingestion_date: date, tables: list[str]) -> list[AnalyticsTable]:
    """The rows of each analytics table for ``ingestion_date``."""
    out = []
    with connect(url) as conn:
        for name in sorted(tables):
            cur = conn.execute(f"SELECT * FROM {quote_name(cfg.analytics_schema, name)} WHERE ingestion_date = %s",
                               (ingestion_date,))
            columns = [c.name for c in cur.description or []]
            out.append(AnalyticsTable(cfg.analytics_schema, name, columns, cur.fetchall()))
    return out


class TransformSchedule:
    """When a watching ``filedrop run`` transforms: the fire times of a cron expression, local time.

    Fire times missed while busy (a long load, a suspended laptop) collapse into one transform.
    """

    def __init__(self, expression: str, now: datetime | None = None) -> None:
        from croniter import croniter

        if not croniter.is_valid(expression):
            raise TransformError(f"--transform-schedule {expression!r} is not a cron expression "
                                 "(five fields, e.g. '0 6 * * *' for 06:00 every day)")
        self.expression = expression
        self._times = croniter(expression, now or _now())
        self.next_at: datetime = self._times.get_next(datetime)

    def seconds_until(self, now: datetime | None = None) -> float:
        return max(0.0, (self.next_at - (now or _now())).total_seconds())

    def due(self, now: datetime | None = None) -> bool:
        """True once per fire time that has passed; advances to the next fire time in the future."""
        now = now or _now()
        if now < self.next_at:
            return False
        while self.next_at <= now:
            self.next_at = self._times.get_next(datetime)
        return True


def _now() -> datetime:
    return datetime.now().astimezone()
