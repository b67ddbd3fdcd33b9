"""The operator's decisions, as plain functions over plain data (DESIGN §4). Pure.

The controller gathers facts (the FileDrop, its route, what history says, the state of its job,
how many loads run) and asks :func:`step` what to do next; it then does exactly that one thing. The
state machine is ``status.phase``::

    Pending --(no route)--> Failed
    Pending --(history: duplicate / superseded)--> Skipped
    Pending --> Queued --(under the limits)--> Loading --(job done, history: loaded)--> Loaded
                                               Loading --(transient failure, attempts left)--> Queued (backoff)
                                               Loading --(permanent failure / no attempts left)--> Failed
    Loaded | Skipped | Failed --(replay annotation changed)--> Pending
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from filedrop.cluster.resources import TERMINAL_PHASES

JobState = Literal["none", "running", "succeeded", "failed"]
Action = Literal["none", "set_status", "create_job", "wait"]


@dataclass(frozen=True)
class Limits:
    """At most ``global_loads`` loads at once, and ``per_table`` per staging table."""

    global_loads: int = 4
    per_table: int = 1
    max_attempts: int = 4
    backoff_base_seconds: float = 10.0
    backoff_max_seconds: float = 600.0


@dataclass(frozen=True)
class Outcome:
    """What ``ingest_history`` recorded for the FileDrop's latest attempt."""

    status: str  # loaded | skipped_duplicate | skipped_superseded | failed | running
    load_id: str
    rows_parsed: int | None = None
    rows_loaded: int | None = None
    rows_rejected: int | None = None
    first_error: str | None = None
    message: str | None = None
    retryable: bool = False


@dataclass(frozen=True)
class Facts:
    phase: str | None
    attempts: int
    replay: str  # the annotation's value ("" when absent)
    observed_replay: str
    route: str | None  # the matching route's name, None when none matches
    route_error: str | None = None  # e.g. several routes match
    table: str | None = None
    decision: str = "load"  # protocol.decide's verdict for this version (with the replay token)
    decision_reason: str = ""
    job_state: JobState = "none"
    job_message: str = ""
    outcome: Outcome | None = None
    running_total: int = 0
    running_for_table: int = 0
    next_attempt_at: datetime | None = None
    now: datetime = field(default_factory=lambda: datetime.min)


@dataclass
class Step:
    action: Action
    status: dict[str, Any] = field(default_factory=dict)
    event: tuple[str, str, str] | None = None  # (type Normal|Warning, reason, message)
    #: come back after this many seconds at the latest; None: when something changes (the job ends, a load
    #: slot frees), which the operator hears of without asking
    delay: float | None = None
    #: why the FileDrop is in its (new) phase: the reason of its Ready condition (CamelCase)
    reason: str | None = None


def backoff(attempt: int, limits: Limits) -> float:
    """Exponential: base, 2*base, 4*base ... capped."""
    return float(min(limits.backoff_max_seconds, limits.backoff_base_seconds * (2 ** max(0, attempt - 1))))


def step(f: Facts, limits: Limits, now_iso: str) -> Step:
    """The next thing to do for one FileDrop."""
    phase = f.phase or "Pending"
    if phase in TERMINAL_PHASES:
        if f.replay and f.replay != f.observed_replay:
            return Step("set_status", {"phase": "Pending", "attempts": 0, "observedReplay": f.replay,
                                       "message": f"replay {f.replay!r} requested", "firstError": None,
                                       "finishedAt": None, "job": None, "nextAttemptAt": None},
                        ("Normal", "Replay", f"reloading (replay {f.replay!r})"), reason="ReplayRequested")
        return Step("none")

    if phase == "Pending":
        if f.route is None:
            msg = f.route_error or "no FileRoute matches this key"
            return Step("set_status", {"phase": "Failed", "firstError": msg, "message": msg, "finishedAt": now_iso},
                        ("Warning", "NoRoute", msg), reason="NoRoute")
        if f.decision != "load":
            return Step("set_status", {"phase": "Skipped", "route": f.route, "table": f.table,
                                       "message": f"{f.decision}: {f.decision_reason}", "finishedAt": now_iso},
                        ("Normal", "Skipped", f"{f.decision}: {f.decision_reason}"), reason=f.decision)
        return Step("set_status", {"phase": "Queued", "route": f.route, "table": f.table, "message": "queued"},
                    reason="Queued")

    if phase == "Queued":
        if f.next_attempt_at is not None and f.now < f.next_attempt_at:
            return Step("wait", delay=max(0.5, (f.next_attempt_at - f.now).total_seconds()))
        if f.running_total >= limits.global_loads:
            return Step("wait", {"message": f"waiting: {f.running_total} loads running (limit {limits.global_loads})"},
                        reason="WaitingForLoadSlot")
        if f.running_for_table >= limits.per_table:
            return Step("wait", {"message": f"waiting: {f.running_for_table} load(s) of table {f.table} running "
                                            f"(limit {limits.per_table})"}, reason="WaitingForLoadSlot")
        return Step("create_job", {"phase": "Loading", "attempts": f.attempts + 1, "startedAt": now_iso,
                                   "message": f"loading (attempt {f.attempts + 1})", "nextAttemptAt": None},
                    reason="Loading")

    # Loading
    if f.job_state == "running":
        return Step("wait")
    o = f.outcome
    # History is the truth: a loader killed after its final transaction committed has still loaded the file.
    if o is not None and o.status in ("loaded", "skipped_duplicate", "skipped_superseded"):
        rows = {"rowsParsed": o.rows_parsed, "rowsLoaded": o.rows_loaded, "rowsRejected": o.rows_rejected,
                "loadId": o.load_id, "finishedAt": now_iso}
        if o.status == "loaded":
            msg = o.message or f"{o.rows_loaded} rows loaded"
            return Step("set_status", {"phase": "Loaded", "message": msg, "firstError": o.first_error, **rows},
                        ("Normal", "Loaded", msg), reason="Loaded")
        msg = f"{o.status}: {o.message or ''}".strip()
        return Step("set_status", {"phase": "Skipped", "message": msg, **rows}, ("Normal", "Skipped", msg),
                    reason=o.status)
    if f.job_state == "none" and o is None:
        # The job vanished before it ran (deleted, or never created): treat like a transient failure.
        pass
    permanent = o is not None and o.status == "failed" and not o.retryable
    error = ((o.first_error if o is not None and o.status == "failed" else None) or f.job_message
             or "the load job failed")
    if permanent:
        return Step("set_status", {"phase": "Failed", "firstError": error, "message": error, "finishedAt": now_iso,
                                   "loadId": o.load_id if o else None,
                                   "rowsParsed": o.rows_parsed if o else None,
                                   "rowsRejected": o.rows_rejected if o else None},
                    ("Warning", "LoadFailed", error), reason="PermanentFailure")
    if f.attempts >= limits.max_attempts:
        msg = f"gave up after {f.attempts} attempts: {error}"
        return Step("set_status", {"phase": "Failed", "firstError": error, "message": msg, "finishedAt": now_iso},
                    ("Warning", "LoadFailed", msg), reason="RetriesExhausted")
    delay = backoff(f.attempts, limits)
    retry_at = f.now + timedelta(seconds=delay)
    retry = {"phase": "Queued", "message": f"attempt {f.attempts} failed, retrying in {delay:.0f}s: {error}",
             "firstError": error, "nextAttemptAt": retry_at.strftime("%Y-%m-%dT%H:%M:%SZ")}
    if o is not None:
        retry["loadId"] = o.load_id  # so the next attempt's outcome is not mistaken for this one
    return Step("set_status", retry,
                ("Warning", "Retrying", f"attempt {f.attempts} failed ({error}); retry in {delay:.0f}s"), delay=delay,
                reason="RetryBackoff")
