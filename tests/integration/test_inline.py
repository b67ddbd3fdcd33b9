"""Small files loaded by the operator itself (:class:`filedrop.cluster.inline.InlineLoads`), on moto's S3 and a
real PostgreSQL: each load runs in a process of its own, forked from a server that imported the loader once;
its outcome is what `filedrop load` in a Job would record, and a load that hangs or outlives the operator is
killed without touching staging."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import psycopg
import pytest

from filedrop.cluster.inline import InlineLoads
from filedrop.config import Settings
from filedrop.load.sources import pinned_object
from filedrop.objects import SourceObject
from filedrop.warehouse import prepare_meta
from filedrop.warehouse.client import object_lock
from tests.conftest import DB
from tests.support.loads import items_route
from tests.support.servers import wait_until

BUCKET = "inline-drops"
REPO = Path(__file__).resolve().parents[2]


class Finished:
    """The ``on_done`` callback: which FileDrops' loads ended, and a way to wait for one."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self._cond = threading.Condition()

    def __call__(self, key: str) -> None:
        with self._cond:
            self.keys.append(key)
            self._cond.notify_all()

    def wait(self, key: str, timeout: float = 60) -> None:
        with self._cond:
            assert self._cond.wait_for(lambda: key in self.keys, timeout), f"{key} never finished: {self.keys}"


@pytest.fixture
def s3(aws: str) -> Any:
    client = boto3.client("s3")
    client.create_bucket(Bucket=BUCKET)
    return client


MAX_BYTES = 4096


@pytest.fixture
def loads(warehouse: str) -> Iterator[tuple[InlineLoads, Finished]]:
    prepare_meta(warehouse, Settings(warehouse_url=warehouse))
    finished = Finished()
    inline = InlineLoads(warehouse, MAX_BYTES, max_running=2, deadline_seconds=60, on_done=finished)
    inline.warm()
    try:
        yield inline, finished
    finally:
        inline.stop()


def put(s3: Any, key: str, body: str, size: int | None = None) -> SourceObject:
    """Put an object; the SourceObject a FileDrop would name (``size``: what the FileDrop claims)."""
    etag = s3.put_object(Bucket=BUCKET, Key=key, Body=body.encode())["ETag"]
    return pinned_object(f"s3://{BUCKET}/{key}", etag=etag, size=len(body.encode()) if size is None else size)


def gone(pid: int | None) -> bool:
    assert pid is not None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_a_small_file_is_loaded_once_in_a_process_of_its_own(s3: Any, loads: tuple[InlineLoads, Finished],
                                                            db: DB) -> None:
    inline, finished = loads
    obj = put(s3, "items_1.csv", "id,name,qty,day\n1,apple,3,2022-01-01\n2,pear,x,2022-01-02\n")
    assert inline.start("ns/fd-a", "fd-a-1", items_route(), obj, "") == "started"
    assert inline.start("ns/fd-a", "fd-a-1", items_route(), obj, "") == "exists"  # started once only
    assert inline.state("other-ns/fd-a", "fd-a-1")[0] == "none"  # another namespace's FileDrop of that name
    finished.wait("ns/fd-a")
    assert inline.state("ns/fd-a", "fd-a-1") == ("succeeded", "") and inline.running() == 0
    assert db.rows("SELECT id, name, qty, _source_key FROM staging.items") == [(1, "apple", 3, "items_1.csv")]
    [h] = db.history()
    assert (h["status"], h["filedrop"], h["engine"], h["rows_loaded"], h["rows_rejected"]) == (
        "loaded", "fd-a", "direct", 1, 1)
    assert db.one("SELECT column_name FROM filedrop.rejected_rows") == "qty"
    inline.forget("ns/fd-a", "fd-a-1")
    assert inline.state("ns/fd-a", "fd-a-1")[0] == "none"


def test_a_file_that_fails_says_why(s3: Any, loads: tuple[InlineLoads, Finished], db: DB) -> None:
    inline, finished = loads
    obj = put(s3, "items_bad.csv", "id,colour\n1,red\n")
    inline.start("ns/fd-b", "fd-b-1", items_route(), obj, "")
    finished.wait("ns/fd-b")
    state, message = inline.state("ns/fd-b", "fd-b-1")
    assert state == "failed" and "header" in message, message
    assert db.one("SELECT count(*) FROM staging.items") == 0
    assert [h["status"] for h in db.history()] == ["failed"]


def test_an_object_larger_than_its_filedrop_says_or_unreadable_is_declined(s3: Any, loads: tuple[InlineLoads,
                                                                                                 Finished],
                                                                           db: DB) -> None:
    inline, finished = loads
    lying = put(s3, "items_big.csv", "id,name,qty,day\n" + "1,apple,3,2022-01-01\n" * 400, size=100)
    inline.start("ns/fd-c", "fd-c-1", items_route(), lying, "")
    missing = pinned_object(f"s3://{BUCKET}/items_nowhere.csv", etag="0" * 32, size=10)
    inline.start("ns/fd-d", "fd-d-1", items_route(), missing, "")
    finished.wait("ns/fd-c")
    finished.wait("ns/fd-d")
    state, message = inline.state("ns/fd-c", "fd-c-1")
    assert state == "declined" and f"more than the {MAX_BYTES}" in message, message
    state, message = inline.state("ns/fd-d", "fd-d-1")
    assert state == "declined" and "the operator cannot read s3://inline-drops/items_nowhere.csv" in message
    assert db.history() == [] and db.one("SELECT to_regclass('staging.items')") is None  # nothing written


WAITING = ("SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
           "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = 'filedrop'")


def _blocked_in_apply(warehouse: str, db: DB, start: Any, obj: SourceObject) -> tuple[psycopg.Connection, int]:
    """Hold the object's apply lock, start the load: it parses, then waits inside its final transaction (its
    history row written). The blocking connection and the waiting load's backend."""
    blocker = psycopg.connect(warehouse, autocommit=True)
    blocker.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (object_lock(obj.bucket, obj.key),))
    start()
    wait_until(lambda: bool(db.rows(WAITING)), 60, "the inline load to wait inside its final transaction")
    assert [h["status"] for h in db.history()] == ["running"]
    return blocker, int(db.one(WAITING))


def _left_nothing(db: DB, backend: int, blocker: psycopg.Connection) -> None:
    """The killed load's transaction rolled back. Its backend, blocked on a lock, notices the lost client only
    when it gets the lock: release it first."""
    blocker.close()
    wait_until(lambda: not db.rows("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)), 60,
               "the killed load's backend to end")
    assert db.one("SELECT count(*) FROM staging.items") == 0
    assert [h["status"] for h in db.history()] == ["running"]  # the next attempt marks it failed


def test_a_load_past_its_deadline_is_killed_and_leaves_nothing(s3: Any, warehouse: str, db: DB) -> None:
    prepare_meta(warehouse, Settings(warehouse_url=warehouse))
    finished = Finished()
    inline = InlineLoads(warehouse, MAX_BYTES, max_running=2, deadline_seconds=5, on_done=finished)
    obj = put(s3, "items_slow.csv", "id,name,qty,day\n1,apple,3,2022-01-01\n")
    blocker, backend = _blocked_in_apply(
        warehouse, db, lambda: inline.start("ns/fd-e", "fd-e-1", items_route(), obj, ""), obj)
    try:
        finished.wait("ns/fd-e")
        state, message = inline.state("ns/fd-e", "fd-e-1")
        assert state == "failed" and "longer than 5s" in message, message
        assert gone(inline.pid("ns/fd-e", "fd-e-1"))
        _left_nothing(db, backend, blocker)
    finally:
        blocker.close()


def test_stopping_and_deleting_kill_the_loads_still_running(s3: Any, warehouse: str,
                                                           loads: tuple[InlineLoads, Finished], db: DB) -> None:
    inline, finished = loads
    obj = put(s3, "items_2.csv", "id,name,qty,day\n1,apple,3,2022-01-01\n")
    blocker, backend = _blocked_in_apply(
        warehouse, db, lambda: inline.start("ns/fd-f", "fd-f-1", items_route(), obj, ""), obj)
    try:
        pid = inline.pid("ns/fd-f", "fd-f-1")
        assert inline.running() == 1
        inline.cancel("ns/fd-f")  # its FileDrop was deleted
        finished.wait("ns/fd-f")
        assert gone(pid) and inline.running() == 0 and inline.state("ns/fd-f", "fd-f-1")[0] == "none"
        _left_nothing(db, backend, blocker)
    finally:
        blocker.close()


OPERATOR = """
import sys, time
from filedrop.cluster.inline import InlineLoads
from filedrop.load.sources import pinned_object
from tests.support.loads import items_route

inline = InlineLoads(sys.argv[1], 4096, 2, 600)
obj = pinned_object(sys.argv[2], etag=sys.argv[3], size=int(sys.argv[4]))
inline.start("ns/fd-g", "fd-g-1", items_route(), obj, "")
print(inline.pid("ns/fd-g", "fd-g-1"), flush=True)
time.sleep(600)
"""


def test_a_killed_operator_leaves_no_load_behind(s3: Any, warehouse: str, db: DB) -> None:
    """SIGKILL of the process that started the load (the operator): the fork server and the load end with it,
    so the next operator never races a load of the one before."""
    prepare_meta(warehouse, Settings(warehouse_url=warehouse))
    obj = put(s3, "items_3.csv", "id,name,qty,day\n1,apple,3,2022-01-01\n")
    started: list[subprocess.Popen[str]] = []

    def start() -> None:
        started.append(subprocess.Popen([sys.executable, "-c", OPERATOR, warehouse, obj.uri, obj.etag,
                                         str(obj.size)], stdout=subprocess.PIPE, text=True, cwd=REPO))
    blocker, backend = _blocked_in_apply(warehouse, db, start, obj)
    try:
        [operator] = started
        assert operator.stdout is not None
        pid = int(operator.stdout.readline())
        operator.send_signal(signal.SIGKILL)
        operator.wait(30)
        wait_until(lambda: gone(pid), 30, "the orphaned load process to be killed")
        _left_nothing(db, backend, blocker)
    finally:
        blocker.close()
