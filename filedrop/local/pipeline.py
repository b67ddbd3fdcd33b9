"""The local runtime: discover files, match them to FileRoutes, load each in key order (DESIGN §1).

Entry-point layer. The same load protocol as the cluster (``filedrop.load.session``) runs in-process.
Progress is reported through the small :class:`Progress` protocol so the CLI can draw bars and
tests can stay quiet.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any, Protocol

from filedrop.config import Settings
from filedrop.events import EventParseError, S3Event, parse_message
from filedrop.load.session import LoadResult, LoadSession
from filedrop.load.sources import Listed, Location, SourceError, describe, list_objects, printable_name
from filedrop.objects import SourceObject
from filedrop.routes import FileRoute, RouteError, route_for
from filedrop.warehouse import prepare_meta

log = logging.getLogger(__name__)


class Progress(Protocol):
    def start_file(self, obj: SourceObject, route: FileRoute) -> Callable[[int], None] | None: ...
    def end_file(self, result: LoadResult) -> None: ...


class _Quiet:
    def start_file(self, obj: SourceObject, route: FileRoute) -> Callable[[int], None] | None:
        return None

    def end_file(self, result: LoadResult) -> None:
        pass


@dataclass
class RunReport:
    results: list[LoadResult] = field(default_factory=list)
    unmatched: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cleaned: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def failed(self) -> list[LoadResult]:
        return [r for r in self.results if r.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed and not self.errors


def discover(loc: Location, routes: list[FileRoute]) -> tuple[list[tuple[Listed, FileRoute]], list[Listed], list[str]]:
    """Matched (object, route) pairs in key order, unmatched objects, and ambiguity errors."""
    matched, unmatched, errors = [], [], []
    for item in sorted(list_objects(loc), key=lambda o: o.key):
        try:
            route = route_for(routes, item.bucket if item.is_s3 else None, item.key)
        except RouteError as exc:
            errors.append(str(exc))
            continue
        if route is None:
            unmatched.append(item)
        else:
            matched.append((item, route))
    return matched, unmatched, errors




@dataclass
class _Seen:
    stamp: tuple[Any, ...]
    failures: int = 0
    retry_at: float = 0.0


class PollMemory:
    """What a watching run (``run --watch``) saw on earlier polls, so an idle poll costs a listing only.

    An object whose listing is unchanged since its last attempt (local: size, mtime and ctime — a write
    changes the ctime even when the mtime is put back; S3: ETag and size) is not hashed, not loaded and
    not written to history again when that attempt loaded or skipped it. A failed one is retried with
    exponential backoff (``base`` seconds, doubling, at most ``cap``) — or at once when its listing changes.
    """

    def __init__(self, base: float = 30.0, cap: float = 3600.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.base, self.cap, self.clock = base, cap, clock
        self._seen: dict[tuple[str, str], _Seen] = {}
        #: unmatched objects already reported (a watching run names each once)
        self.unmatched_reported: set[str] = set()

    @staticmethod
    def _stamp(item: Listed) -> tuple[Any, ...]:
        return (item.size, item.last_modified, item.changed, item.etag, item.version_id)

    def wanted(self, item: Listed) -> bool:
        seen = self._seen.get((item.bucket, item.key))
        if seen is None or seen.stamp != self._stamp(item):
            return True
        return seen.failures > 0 and self.clock() >= seen.retry_at

    def record(self, item: Listed, result: LoadResult) -> None:
        key = (item.bucket, item.key)
        stamp = self._stamp(item)
        if result.status == "failed":
            before = self._seen.get(key)
            failures = before.failures + 1 if before is not None and before.stamp == stamp else 1
            delay = min(self.cap, self.base * 2 ** (failures - 1))
            self._seen[key] = _Seen(stamp, failures, self.clock() + delay)
        else:
            self._seen[key] = _Seen(stamp)


def run_once(url: str, settings: Settings, routes: list[FileRoute], source: str, *, engine: str | None = None,
             progress: Progress | None = None,
             on_discovered: Callable[[list[tuple[Listed, FileRoute]]], None] | None = None,
             memory: PollMemory | None = None) -> RunReport:
    """Load every matched file under ``source`` that is not loaded yet; every file is attempted (with
    ``memory``, a watching run's, only files new or changed since their last attempt, and failed ones
    when their backoff has passed)."""
    started = time.monotonic()
    progress = progress or _Quiet()
    report = RunReport(cleaned=prepare_meta(url, settings))
    loc = Location.parse(source)
    matched, unmatched, errors = discover(loc, routes)
    report.unmatched = [printable_name(u.uri) for u in unmatched]
    report.errors = errors
    if memory is not None:
        matched = [(item, route) for item, route in matched if memory.wanted(item)]
        report.unmatched = [u for u in report.unmatched if u not in memory.unmatched_reported]
        memory.unmatched_reported.update(report.unmatched)
    if on_discovered:
        on_discovered(matched)
    with LoadSession(url, settings) as session:
        for item, route in matched:
            result = _load_one(session, route, item, engine, progress)
            report.results.append(result)
            if memory is not None:
                memory.record(item, result)
    report.seconds = time.monotonic() - started
    return report


def _load_one(session: LoadSession, route: FileRoute, item: Listed, engine: str | None,
              progress: Progress, sequencer: str | None = None) -> LoadResult:
    try:
        obj = describe(item, sequencer=sequencer)
    except (SourceError, OSError) as exc:
        obj = SourceObject(item.bucket, item.key, item.etag or "", item.size, item.last_modified, uri=item.uri,
                           is_s3=item.is_s3)
        result = LoadResult(obj, route.name, "failed", first_error=str(exc), message=str(exc), retryable=True)
        progress.end_file(result)
        return result
    on_bytes = progress.start_file(obj, route)
    result = session.load(route, obj, engine=engine, on_bytes=on_bytes)
    progress.end_file(result)
    return result


def load_event(session: LoadSession, routes: list[FileRoute], event: S3Event, *,
               engine: str | None = None, progress: Progress | None = None) -> LoadResult | None:
    """Load the object version an S3 ObjectCreated event names; None when no route matches."""
    route = route_for(routes, event.bucket, event.key)
    if route is None:
        log.info("s3://%s/%s matches no FileRoute; ignored", event.bucket, event.key)
        return None
    item = Listed(event.bucket, event.key, event.size, event.event_time or _now(), etag=event.etag,
                  version_id=event.version_id, is_s3=True)
    return _load_one(session, route, item, engine, progress or _Quiet(), sequencer=event.sequencer)


def _now() -> Any:
    from datetime import datetime

    return datetime.now(UTC)


def drain_queue(url: str, settings: Settings, routes: list[FileRoute], queue_url: str, *, engine: str | None = None,
                progress: Progress | None = None, wait_seconds: int = 10, sqs: Any = None) -> RunReport:
    """Receive one batch of S3 notifications from SQS and load what they name.

    A message is deleted only after every object it names is recorded in history (loaded, skipped,
    or failed for a reason a retry cannot fix); otherwise it becomes visible again and is retried.
    A message that is not an S3 notification is left for the queue's redrive policy.
    """
    import boto3

    sqs = sqs or boto3.client("sqs")
    report = RunReport()
    started = time.monotonic()
    resp = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=wait_seconds)
    with LoadSession(url, settings) as session:
        _load_messages(session, sqs, queue_url, routes, resp.get("Messages", []), engine, progress, report)
    report.seconds = time.monotonic() - started
    return report


def _load_messages(session: LoadSession, sqs: Any, queue_url: str, routes: list[FileRoute], messages: list[Any],
                   engine: str | None, progress: Progress | None, report: RunReport) -> None:
    for msg in messages:
        try:
            events = parse_message(msg["Body"])
        except EventParseError as exc:
            report.errors.append(f"message {msg.get('MessageId')}: {exc}")
            continue
        done = True
        for ev in events:
            if not ev.is_create:
                continue
            try:
                result = load_event(session, routes, ev, engine=engine, progress=progress)
            except RouteError as exc:
                report.errors.append(str(exc))
                continue
            if result is None:
                report.unmatched.append(f"s3://{ev.bucket}/{ev.key}")
                continue
            report.results.append(result)
            done = done and not (result.status == "failed" and result.retryable)
        if done:
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=msg["ReceiptHandle"])


def summarize(results: Iterable[LoadResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in results:
        counts[r.status] = counts.get(r.status, 0) + 1
    return counts
