"""Faults on the real components: the loader killed inside its final transaction, PostgreSQL restarted
in the middle of a COPY, an object deleted between its event and its load. After each: exact rows,
no leftovers, history tells the truth."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import psycopg
import pytest

from filedrop.config import Settings
from filedrop.load.session import load_object
from filedrop.load.sources import pinned_object
from filedrop.local.sample import SampleSpec, write_sample
from filedrop.warehouse.client import object_lock as object_lock_key
from tests.conftest import DB
from tests.support.loads import items_route
from tests.support.servers import DebianPostgres, wait_until

ORDERS = 1_000_000


def _loader(path: Path, url: str, home: Path) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "filedrop", "load", str(path), "--route", "orders",
                             "--warehouse", url], env={**os.environ, "FILEDROP_HOME": str(home)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _rerun(path: Path, url: str, home: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "filedrop", "load", str(path), "--route", "orders",
                           "--warehouse", url], env={**os.environ, "FILEDROP_HOME": str(home)},
                          capture_output=True, text=True, timeout=600)


def test_killed_inside_the_final_transaction(warehouse: str, db: DB, tmp_path: Path) -> None:
    [orders, _, _] = write_sample(tmp_path / "d", SampleSpec(orders=20_000, seed=3))
    key = object_lock_key(str(orders.parent), orders.name)
    with psycopg.connect(warehouse, autocommit=True) as blocker:
        # Hold the per-key lock the final transaction takes first: the loader parks inside it.
        blocker.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (key,))
        proc = _loader(orders, warehouse, tmp_path / "home")
        wait_until(lambda: bool(db.rows(
            "SELECT 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid WHERE l.locktype = 'advisory' "
            "AND NOT l.granted AND a.application_name = 'filedrop'")), 120,
            "the loader to wait inside its final transaction")
        backend = db.one("SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
                         "WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name = 'filedrop'")
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        blocker.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (key,))
    wait_until(lambda: not db.rows("SELECT 1 FROM pg_stat_activity WHERE pid = %s", (backend,)), 60,
               "the killed loader's backend to exit")
    assert db.one("SELECT count(*) FROM staging.orders") == 0  # nothing of the killed load is visible
    rerun = _rerun(orders, warehouse, tmp_path / "home")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert db.one("SELECT count(*), count(DISTINCT order_id) FROM staging.orders") == (20_000, 20_000)
    assert sorted(h["status"] for h in db.history()) == ["failed", "loaded"]
    assert db.leftover_tables() == []


@pytest.fixture
def restartable_pg() -> Iterator[tuple[str, object]]:
    """A private PostgreSQL 15 that the test can restart on the same port."""
    server = DebianPostgres().start()
    yield server.url, server.restart
    server.stop()


def test_postgres_restarted_in_the_middle_of_a_copy(restartable_pg: tuple[str, object], tmp_path: Path) -> None:
    url, restart = restartable_pg
    db = DB(url)
    [orders, _, _] = write_sample(tmp_path / "d", SampleSpec(orders=ORDERS, seed=5))
    proc = _loader(orders, url, tmp_path / "home")
    wait_until(lambda: bool(db.rows("SELECT 1 FROM pg_stat_progress_copy WHERE tuples_processed > 50000")), 120,
               "a COPY in progress")
    restart()  # type: ignore[operator]
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 3, out
    assert "lost the warehouse connection" in out
    assert db.one("SELECT count(*) FROM staging.orders") == 0
    rerun = _rerun(orders, url, tmp_path / "home")
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    assert db.one("SELECT count(*), count(DISTINCT order_id) FROM staging.orders") == (ORDERS, ORDERS)
    history = db.history()
    assert [h["status"] for h in history] == ["failed", "loaded"]
    assert "stopped before finishing" in history[0]["first_error"] and history[0]["retryable"]
    assert db.leftover_tables() == []


def test_object_deleted_between_event_and_load(aws: str, warehouse: str, db: DB) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="vanishing")
    put = s3.put_object(Bucket="vanishing", Key="items.csv", Body=b"id,name,qty,day\n1,a,1,\n")
    obj = pinned_object("s3://vanishing/items.csv", etag=put["ETag"], size=24)
    s3.delete_object(Bucket="vanishing", Key="items.csv")
    result = load_object(warehouse, Settings(warehouse_url=warehouse), items_route("append"), obj)
    assert result.status == "failed" and not result.retryable
    assert "no longer exists" in (result.first_error or "")
    [h] = db.history()
    assert (h["status"], h["retryable"]) == ("failed", False)


def test_object_overwritten_between_event_and_load_is_superseded(aws: str, warehouse: str, db: DB) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="rewritten")
    put = s3.put_object(Bucket="rewritten", Key="items.csv", Body=b"id,name,qty,day\n1,a,1,\n")
    obj = pinned_object("s3://rewritten/items.csv", etag=put["ETag"], size=24)
    s3.put_object(Bucket="rewritten", Key="items.csv", Body=b"id,name,qty,day\n1,a,1,\n2,b,2,\n")
    result = load_object(warehouse, Settings(warehouse_url=warehouse), items_route("append"), obj)
    assert result.status == "skipped_superseded" and not result.retryable
    assert "overwritten by a newer version" in result.message
    [h] = db.history()
    assert (h["status"], h["rows_loaded"], h["first_error"]) == ("skipped_superseded", 0, None)
    assert db.one("SELECT count(*) FROM staging.items") == 0
    assert db.leftover_tables() == []
