"""``filedrop bridge``: S3 notifications from SQS become FileDrops (DESIGN §4). Entry-point layer.

A message is deleted only after every FileDrop it names exists (created now, or 409: created
before — names are deterministic); a message that is not an S3 notification is left alone, so the
queue's redrive policy moves it to the dead-letter queue. While a batch is slow, the messages'
visibility is extended. SIGTERM stops receiving; the batch in hand is finished first.
Also ``filedrop backfill``: FileDrops for object versions under a prefix that history has not loaded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from filedrop.cluster import metrics
from filedrop.cluster.resources import filedrop_manifest
from filedrop.config import Settings
from filedrop.events import EventParseError, parse_message
from filedrop.load.sources import Location, list_objects
from filedrop.routes import FileRoute, RouteError, route_for
from filedrop.warehouse import connect, ensure_meta, history

log = logging.getLogger(__name__)


class FileDropAPI(Protocol):
    """What the bridge and backfill do through the API server (:class:`filedrop.cluster.kube.Kube`)."""

    def routes(self, namespace: str) -> tuple[list[FileRoute], list[str]]: ...

    def create_filedrop(self, namespace: str, body: dict[str, Any]) -> bool: ...


class Queue(Protocol):
    """The SQS calls the bridge makes (a boto3 SQS client has them)."""

    def receive_message(self, **kwargs: Any) -> dict[str, Any]: ...

    def delete_message(self, **kwargs: Any) -> object: ...

    def change_message_visibility(self, **kwargs: Any) -> object: ...


@dataclass
class BridgeStats:
    messages: int = 0
    created: int = 0
    existing: int = 0
    unmatched: int = 0
    ignored: int = 0  # test events, non-create events
    unparseable: int = 0
    foreign: int = 0  # messages naming a bucket the bridge does not serve
    unmatched_keys: list[str] = field(default_factory=list)


def _routes(kube: FileDropAPI, namespace: str) -> list[FileRoute]:
    routes, errors = kube.routes(namespace)
    for error in errors:
        log.warning("ignoring invalid FileRoute: %s", error)
    return routes


class Bridge:
    def __init__(self, kube: FileDropAPI, sqs: Queue, queue_url: str, namespace: str, *, wait_seconds: int = 20,
                 visibility_timeout: int = 60, allowed_buckets: frozenset[str] | None = None) -> None:
        self.kube, self.sqs, self.queue_url, self.namespace = kube, sqs, queue_url, namespace
        #: when set, a message naming any other bucket is refused (left for the dead-letter queue)
        self.allowed_buckets = allowed_buckets
        self.wait_seconds = wait_seconds
        self.visibility_timeout = visibility_timeout
        self.stats = BridgeStats()
        #: when the last receive and its batch finished (time.monotonic); the health endpoint judges it
        self.last_poll = time.monotonic()

    def poll_once(self) -> BridgeStats:
        """One long-poll receive and the handling of its batch."""
        resp = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10,
                                        WaitTimeSeconds=self.wait_seconds, VisibilityTimeout=self.visibility_timeout)
        messages = resp.get("Messages", [])
        if messages:
            self.handle(messages)
        self.last_poll = time.monotonic()
        metrics.BRIDGE_LAST_POLL.set_to_current_time()
        return self.stats

    def health(self, stale_after: float | None = None) -> tuple[bool, str]:
        """Healthy while a receive-and-handle round finished recently (a long poll plus a slow batch)."""
        limit = stale_after if stale_after is not None else max(120.0, 3.0 * (self.wait_seconds +
                                                                              self.visibility_timeout))
        age = time.monotonic() - self.last_poll
        if age > limit:
            return False, f"no SQS receive finished for {age:.0f} s (limit {limit:.0f} s)"
        return True, f"ok: last SQS receive finished {age:.0f} s ago"

    def handle(self, messages: list[dict[str, Any]]) -> None:
        routes = _routes(self.kube, self.namespace)
        pending = {m["ReceiptHandle"] for m in messages}
        done = threading.Event()
        keeper = threading.Thread(target=self._keep_invisible, args=(pending, done), daemon=True)
        keeper.start()
        try:
            for msg in messages:
                self.stats.messages += 1
                outcome = self._handle_one(msg, routes)
                if outcome == "deleted":
                    self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=msg["ReceiptHandle"])
                metrics.BRIDGE_MESSAGES.labels(outcome).inc()
                pending.discard(msg["ReceiptHandle"])
        finally:
            done.set()
            keeper.join()

    def _keep_invisible(self, pending: set[str], done: threading.Event) -> None:
        """Extend the visibility of messages still in hand while a batch is slow."""
        interval = max(1.0, self.visibility_timeout / 2)
        while not done.wait(interval):
            for handle in list(pending):
                try:
                    self.sqs.change_message_visibility(QueueUrl=self.queue_url, ReceiptHandle=handle,
                                                       VisibilityTimeout=self.visibility_timeout)
                except Exception as exc:  # noqa: BLE001 - the message may just have been deleted
                    log.debug("could not extend visibility: %s", exc)

    def _handle_one(self, msg: dict[str, Any], routes: list[FileRoute]) -> str:
        """What becomes of the message: ``deleted`` (handled), or left for the dead-letter queue as
        ``unparseable`` or ``refused`` (the ``outcome`` label of ``filedrop_bridge_messages_total``)."""
        try:
            events = parse_message(msg["Body"])
        except EventParseError as exc:
            self.stats.unparseable += 1
            log.error("leaving message %s for the dead-letter queue: %s", msg.get("MessageId"), exc)
            return "unparseable"
        if not events:
            self.stats.ignored += 1
        foreign = sorted({ev.bucket for ev in events if self.allowed_buckets and ev.bucket not in self.allowed_buckets})
        if foreign:
            self.stats.foreign += 1
            log.warning("refusing message %s: bucket(s) %s are not served here; left for the dead-letter queue",
                        msg.get("MessageId"), ", ".join(foreign))
            return "refused"
        for ev in events:
            if not ev.is_create:
                self.stats.ignored += 1
                continue
            ambiguous = False
            try:
                route = route_for(routes, ev.bucket, ev.key)
            except RouteError as exc:
                # several routes match: the FileDrop is still made, and the operator fails it with this reason,
                # where `kubectl get filedrops` shows it (dropping it here would lose the file without a trace)
                log.error("%s", exc)
                route, ambiguous = None, True
            if route is None and not ambiguous:
                self.stats.unmatched += 1
                self.stats.unmatched_keys.append(f"s3://{ev.bucket}/{ev.key}")
                metrics.BRIDGE_UNMATCHED.inc()
                log.info("s3://%s/%s matches no FileRoute; skipped", ev.bucket, ev.key)
                continue
            body = filedrop_manifest(bucket=ev.bucket, key=ev.key, etag=ev.etag, size=ev.size,
                                     version_id=ev.version_id, sequencer=ev.sequencer, event_time=ev.event_time,
                                     source="sqs", route=route.name if route else None)
            if self.kube.create_filedrop(self.namespace, body):
                self.stats.created += 1
                metrics.BRIDGE_FILEDROPS.inc()
                log.info("created FileDrop %s for s3://%s/%s", body["metadata"]["name"], ev.bucket, ev.key)
            else:
                self.stats.existing += 1
        return "deleted"

    def run(self, stop: threading.Event, on_batch: Callable[[BridgeStats], None] | None = None) -> BridgeStats:
        while not stop.is_set():
            self.poll_once()
            if on_batch:
                on_batch(self.stats)
        return self.stats


def backfill(kube: FileDropAPI, settings: Settings, warehouse_url: str, namespace: str, source: str,
             since: datetime | None = None) -> BridgeStats:
    """Create FileDrops for matched objects under ``source`` whose current version history has not loaded."""
    stats = BridgeStats()
    routes = _routes(kube, namespace)
    loc = Location.parse(source)
    if not loc.is_s3:
        raise ValueError("backfill lists an s3://bucket/prefix")
    with connect(warehouse_url) as conn:
        ensure_meta(conn, settings)
        for item in list_objects(loc):
            if since is not None and item.last_modified < since:
                continue
            route = route_for(routes, item.bucket, item.key)
            if route is None:
                stats.unmatched += 1
                continue
            loaded = [v for v in history.loaded_versions(conn, settings.meta_schema, item.bucket, item.key)
                      if v.loaded]
            if loaded and loaded[-1].etag == item.etag:  # older bytes again are a rollback: a new version
                stats.existing += 1
                continue
            body = filedrop_manifest(bucket=item.bucket, key=item.key, etag=item.etag or "", size=item.size,
                                     event_time=item.last_modified, source="backfill", route=route.name)
            if kube.create_filedrop(namespace, body):
                stats.created += 1
            else:
                stats.existing += 1
    return stats
