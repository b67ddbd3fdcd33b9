"""The bridge without servers: an in-memory SQS queue and API server.

What is checked is what an operator of the system sees: which FileDrops exist, which messages are deleted
and which stay for redelivery or the dead-letter queue, and the bridge's counts.
"""

from __future__ import annotations

import itertools
import json
import threading
from typing import Any
from urllib.parse import quote_plus

import pytest

from filedrop.cluster.bridge import Bridge
from filedrop.cluster.resources import ROUTE_LABEL, filedrop_name
from filedrop.routes import FileRoute, parse_routes_yaml

NS = "data"
BUCKET = "drop"
ROUTES = parse_routes_yaml("""
apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {name: orders}
spec:
  match: {pattern: '^orders.*\\.csv$'}
  table: orders
  columns: [{name: id, type: integer}]
""")


class MemoryQueue:
    """An SQS queue in memory: received messages are in flight until deleted or their visibility ends."""

    def __init__(self) -> None:
        self.visible: list[dict[str, Any]] = []
        self.in_flight: dict[str, dict[str, Any]] = {}
        self.extended: list[str] = []
        self.extending = threading.Event()  # set at the first visibility extension
        self._ids = itertools.count(1)

    def send(self, body: str) -> None:
        n = next(self._ids)
        self.visible.append({"MessageId": f"m{n}", "Body": body})

    def receive_message(self, **kw: Any) -> dict[str, Any]:
        batch, self.visible = self.visible[:kw["MaxNumberOfMessages"]], self.visible[kw["MaxNumberOfMessages"]:]
        messages = []
        for msg in batch:
            handle = f"h-{msg['MessageId']}-{next(self._ids)}"
            self.in_flight[handle] = msg
            messages.append({**msg, "ReceiptHandle": handle})
        return {"Messages": messages} if messages else {}

    def delete_message(self, **kw: Any) -> None:
        del self.in_flight[kw["ReceiptHandle"]]

    def change_message_visibility(self, **kw: Any) -> None:
        assert kw["ReceiptHandle"] in self.in_flight
        self.extended.append(kw["ReceiptHandle"])
        self.extending.set()

    def redeliver(self) -> None:
        """The visibility timeout of every message in flight ends."""
        self.visible += list(self.in_flight.values())
        self.in_flight.clear()

    @property
    def left(self) -> list[str]:
        return sorted(m["Body"] for m in [*self.visible, *self.in_flight.values()])


class FakeKube:
    def __init__(self, routes: list[FileRoute]) -> None:
        self.route_list = routes
        self.filedrops: dict[str, dict[str, Any]] = {}
        self.fail: Exception | None = None
        self.slow: threading.Event | None = None

    def routes(self, namespace: str) -> tuple[list[FileRoute], list[str]]:
        return list(self.route_list), []

    def create_filedrop(self, namespace: str, body: dict[str, Any]) -> bool:
        if self.slow is not None:
            assert self.slow.wait(10), "the bridge never extended the visibility of the batch in hand"
        if self.fail is not None:
            raise self.fail
        if body["metadata"]["name"] in self.filedrops:
            return False  # 409: created before (names are deterministic)
        self.filedrops[body["metadata"]["name"]] = body
        return True


def s3_event(key: str, etag: str = "abc", sequencer: str = "0A", bucket: str = BUCKET,
             event: str = "ObjectCreated:Put") -> str:
    obj = {"key": quote_plus(key), "size": 3, "eTag": etag, "sequencer": sequencer}
    return json.dumps({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": event,
                                    "eventTime": "2026-11-26T10:00:00.000Z",
                                    "s3": {"bucket": {"name": bucket}, "object": obj}}]})


@pytest.fixture
def queue() -> MemoryQueue:
    return MemoryQueue()


@pytest.fixture
def kube() -> FakeKube:
    return FakeKube(ROUTES)


def bridge(kube: FakeKube, queue: MemoryQueue, **kw: Any) -> Bridge:
    return Bridge(kube, queue, "https://sqs/q", NS, wait_seconds=1, **kw)


def test_an_s3_event_becomes_one_filedrop_and_its_message_is_deleted(kube: FakeKube, queue: MemoryQueue) -> None:
    queue.send(s3_event("in/orders 1.csv"))
    stats = bridge(kube, queue).poll_once()
    [fd] = kube.filedrops.values()
    assert fd["spec"]["key"] == "in/orders 1.csv" and fd["spec"]["source"] == "sqs"
    assert fd["metadata"]["name"] == filedrop_name(BUCKET, "in/orders 1.csv", "abc@0A")
    assert fd["metadata"]["labels"] == {ROUTE_LABEL: "orders"}
    assert queue.left == [] and (stats.messages, stats.created) == (1, 1)


def test_a_redelivered_event_creates_no_second_filedrop(kube: FakeKube, queue: MemoryQueue) -> None:
    b = bridge(kube, queue)
    queue.send(s3_event("orders.csv"))
    queue.send(s3_event("orders.csv"))  # delivered twice
    b.poll_once()
    assert len(kube.filedrops) == 1 and queue.left == []
    assert (b.stats.created, b.stats.existing) == (1, 1)


def test_unmatched_and_test_events_are_consumed_without_filedrops(kube: FakeKube, queue: MemoryQueue) -> None:
    queue.send(s3_event("README.txt"))
    queue.send(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": BUCKET}))
    queue.send(s3_event("orders.csv", event="ObjectRemoved:Delete"))
    stats = bridge(kube, queue).poll_once()
    assert kube.filedrops == {} and queue.left == []
    assert stats.unmatched_keys == [f"s3://{BUCKET}/README.txt"] and stats.ignored == 2


def test_malformed_and_foreign_messages_stay_for_the_dead_letter_queue(kube: FakeKube, queue: MemoryQueue) -> None:
    queue.send("{this is not json")
    queue.send(s3_event("orders.csv", bucket="someone-elses"))
    queue.send(s3_event("orders.csv"))
    stats = bridge(kube, queue, allowed_buckets=frozenset({BUCKET})).poll_once()
    assert [fd["spec"]["bucket"] for fd in kube.filedrops.values()] == [BUCKET]
    assert queue.left == sorted(["{this is not json", s3_event("orders.csv", bucket="someone-elses")])
    assert (stats.unparseable, stats.foreign, stats.created) == (1, 1, 1)


def test_a_message_the_api_server_refused_comes_back_and_is_handled_then(kube: FakeKube, queue: MemoryQueue) -> None:
    b = bridge(kube, queue)
    queue.send(s3_event("orders.csv"))
    kube.fail = ConnectionError("the API server is unreachable")
    with pytest.raises(ConnectionError):
        b.poll_once()
    assert kube.filedrops == {} and queue.left == [s3_event("orders.csv")]  # not deleted: it comes back
    kube.fail = None
    queue.redeliver()
    b.poll_once()
    assert len(kube.filedrops) == 1 and queue.left == []


def test_a_slow_batch_keeps_its_messages_invisible(kube: FakeKube, queue: MemoryQueue) -> None:
    kube.slow = queue.extending  # creating the FileDrop takes until the bridge has extended the visibility
    queue.send(s3_event("orders.csv"))
    bridge(kube, queue, visibility_timeout=2).poll_once()  # extends every second while the batch is in hand
    assert queue.extended and len(kube.filedrops) == 1 and queue.left == []


def test_the_bridge_stops_after_the_batch_in_hand(kube: FakeKube, queue: MemoryQueue) -> None:
    for i in range(3):
        queue.send(s3_event(f"orders_{i}.csv"))
    stop = threading.Event()
    stats = bridge(kube, queue).run(stop, on_batch=lambda s: stop.set())  # as SIGTERM would, mid-stream
    assert stats.created == 3 and len(kube.filedrops) == 3 and queue.left == []


def test_a_key_two_routes_match_still_becomes_a_filedrop(queue: MemoryQueue) -> None:
    # the operator fails it, naming both routes, where `kubectl get filedrops` shows it; dropping the event
    # here (as the bridge once did, counting it "unmatched") lost the file without a trace
    overlapping = parse_routes_yaml("""
apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {name: orders-2022}
spec:
  match: {pattern: '^orders_2022.*\\.csv$'}
  table: orders_2022
  columns: [{name: id, type: integer}]
""")
    kube = FakeKube(ROUTES + overlapping)
    queue.send(s3_event("orders_2022_01.csv"))
    stats = bridge(kube, queue).poll_once()
    [fd] = kube.filedrops.values()
    assert fd["spec"]["key"] == "orders_2022_01.csv" and ROUTE_LABEL not in fd["metadata"].get("labels", {})
    assert queue.left == [] and (stats.created, stats.unmatched) == (1, 0)
