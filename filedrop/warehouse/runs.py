"""The record of the analytics runs (``<meta>.transform_runs``): one row per workflow run, written by the
workflow's exit handler whatever the run's outcome, read by ``filedrop status``.

The table is created by the first run that records (not by the bookkeeping schema's upgrade: the loads never
touch it). A retried exit handler writes the same row again (the workflow's name is the key).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from filedrop.warehouse.client import Client
from filedrop.warehouse.history import clean
from filedrop.warehouse.sql import ident

__all__ = ["FINAL_STATUSES", "TransformRun", "ensure_table", "latest", "parse_failures", "record"]

#: The statuses Argo gives a finished workflow (``{{workflow.status}}`` in the exit handler).
FINAL_STATUSES = ("Succeeded", "Failed", "Error")


@dataclass(frozen=True)
class TransformRun:
    workflow: str
    status: str
    as_of_date: date | None = None
    ingestion_date: date | None = None
    started_at: datetime | None = None
    duration_seconds: float | None = None
    #: the failed steps: ``{"step", "phase", "message"}`` each
    failures: list[dict[str, str]] = field(default_factory=list)
    recorded_at: datetime | None = None

    @property
    def finished_at(self) -> datetime | None:
        if self.started_at is None or self.duration_seconds is None:
            return None
        return self.started_at + timedelta(seconds=self.duration_seconds)


#: A pod attempt of a step with a retry strategy: ``build(0)``, ``build(1)`` ...
_ATTEMPT = re.compile(r"\(\d+\)$")
#: What Argo's retry and DAG nodes say about their children (not why the step failed)
_BOOKKEEPING = re.compile(r"^(retryStrategy\.expression evaluated to false|No more retries left|"
                          r"Backoff for |child '.*' failed|Stopped with strategy)")


def parse_failures(text: str | None, workflow: str = "") -> list[dict[str, str]]:
    """The failed steps from Argo's ``{{workflow.failures}}``: a JSON list of the failed nodes (sometimes a JSON string
    of one; ``null`` when nothing failed). Argo lists every failed node: the pods that ran a step (``build(0)``:
    every step has a retry strategy), and the nodes above them (the retry node, the DAG named after the
    ``workflow``) whose messages are bookkeeping ("retryStrategy.expression evaluated to false"). What a reader
    wants is each step with its last attempt's message; only when no attempt failed (a pod that never started,
    the run's deadline) are the other nodes with a message of their own kept. Text that is not such JSON is kept
    as one failure's message: a record must never be lost to a format it did not expect."""
    if text is None or not text.strip() or text.startswith("{{"):
        return []
    try:
        value: Any = json.loads(text)
        if isinstance(value, str):
            value = json.loads(value)
    except ValueError:
        return [{"step": "", "phase": "", "message": clean(text) or ""}]
    if value is None:
        return []
    if not isinstance(value, list):
        return [{"step": "", "phase": "", "message": clean(str(value)) or ""}]
    nodes = [n for n in value if isinstance(n, dict)]
    attempts = [n for n in nodes if _ATTEMPT.search(str(n.get("displayName") or ""))]
    said = [n for n in nodes if n.get("message") and not _BOOKKEEPING.match(str(n["message"]))]
    # the steps' own nodes first; the run's (e.g. its deadline) when that is all there is
    chosen = attempts or [n for n in said if n.get("displayName") != workflow] or said
    by_step: dict[str, dict[str, str]] = {}
    for node in sorted(chosen, key=lambda n: str(n.get("finishedAt") or "")):
        step = str(node.get("templateName") or _ATTEMPT.sub("", str(node.get("displayName") or "")))
        by_step[step] = {"step": step, "phase": str(node.get("phase") or ""),
                         "message": clean(str(node.get("message") or "")) or ""}
    return list(by_step.values())


def ensure_table(conn: Client, meta: str) -> None:
    m = ident(meta)
    conn.execute(f"CREATE SCHEMA IF NOT EXISTS {m}")
    conn.execute(
        f"""CREATE TABLE IF NOT EXISTS {m}.transform_runs (
            workflow text PRIMARY KEY,
            status text NOT NULL,
            as_of_date date,
            ingestion_date date,
            started_at timestamptz,
            duration_seconds double precision,
            failures jsonb NOT NULL DEFAULT '[]',
            recorded_at timestamptz NOT NULL DEFAULT now()
        )""")


def record(conn: Client, meta: str, run: TransformRun) -> None:
    """Write (or rewrite) the run's row."""
    ensure_table(conn, meta)
    conn.execute(
        f"""INSERT INTO {ident(meta)}.transform_runs
            (workflow, status, as_of_date, ingestion_date, started_at, duration_seconds, failures)
            VALUES (%s, %s, %s, %s, %s, %s, %s::jsonb)
            ON CONFLICT (workflow) DO UPDATE SET status = excluded.status, as_of_date = excluded.as_of_date,
                ingestion_date = excluded.ingestion_date, started_at = excluded.started_at,
                duration_seconds = excluded.duration_seconds, failures = excluded.failures, recorded_at = now()""",
        (run.workflow, run.status, run.as_of_date, run.ingestion_date, run.started_at, run.duration_seconds,
         json.dumps(run.failures)),
    )


def latest(conn: Client, meta: str, limit: int = 5) -> list[TransformRun]:
    """The last ``limit`` runs recorded, newest first; none when no run was ever recorded."""
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f"{ident(meta)}.transform_runs",)).fetchone()
    if not row or not row[0]:
        return []
    rows = conn.execute(
        f"""SELECT workflow, status, as_of_date, ingestion_date, started_at, duration_seconds, failures, recorded_at
            FROM {ident(meta)}.transform_runs ORDER BY coalesce(started_at, recorded_at) DESC LIMIT %s""",
        (limit,)).fetchall()
    return [TransformRun(r[0], r[1], r[2], r[3], r[4], r[5], list(r[6] or []), r[7]) for r in rows]
