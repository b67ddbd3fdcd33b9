"""Versions under races, reordering, suspended versioning, rolling upgrades and changed routes (DESIGN §3).

Found by an adversarial review of the rollback and claim changes; each failed before its fix. Real
PostgreSQL, moto S3/SQS over HTTP."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest

from filedrop.config import Settings
from filedrop.events import EventParseError, parse_message
from filedrop.load.session import load_object
from filedrop.load.sources import Location, list_objects
from filedrop.local.pipeline import PollMemory, drain_queue, run_once
from filedrop.objects import SourceObject
from tests.conftest import DB
from tests.integration.test_s3 import _notification
from tests.support.loads import items_route, load, write

HEADER = b"id,name,qty,day\n"
V1 = HEADER + b"1,good,1,\n"
V2 = HEADER + b"1,bad,1,\n"


def _versioned(name: str) -> Any:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return s3


def _obj(bucket: str, put: dict[str, Any], size: int, seq: str) -> SourceObject:
    return SourceObject(bucket=bucket, key="items.csv", etag=put["ETag"].strip('"'), size=size,
                        last_modified=datetime.now(UTC), version_id=put.get("VersionId"), sequencer=seq,
                        uri=f"s3://{bucket}/items.csv", is_s3=True)


def test_a_rollback_event_while_the_previous_version_loads_is_applied_after_it(aws: str, warehouse: str,
                                                                               db: DB) -> None:
    """v1 loaded; worker A loads v2 (still parsing); v1's bytes are uploaded again (v3) and worker B gets
    its event. B used to decide before taking the claim, against history still ending in v1: a duplicate.
    A then applied v2, and staging kept v2 while the object held v1's bytes. B now waits for A's claim."""
    bucket = f"race-{uuid.uuid4().hex[:6]}"
    s3 = _versioned(bucket)
    route = items_route("replace_source")
    settings = Settings(warehouse_url=warehouse)
    p1 = s3.put_object(Bucket=bucket, Key="items.csv", Body=V1)
    assert load_object(warehouse, settings, route, _obj(bucket, p1, len(V1), "0001")).status == "loaded"
    p2 = s3.put_object(Bucket=bucket, Key="items.csv", Body=V2)
    p3 = s3.put_object(Bucket=bucket, Key="items.csv", Body=V1)  # rollback: v1's bytes, a new VersionId

    reading, release = threading.Event(), threading.Event()

    def slow(n: int) -> None:
        reading.set()
        assert release.wait(60)

    results: dict[str, Any] = {}
    a = threading.Thread(target=lambda: results.__setitem__("a", load_object(
        warehouse, settings, route, _obj(bucket, p2, len(V2), "0002"), on_bytes=slow)))
    a.start()
    assert reading.wait(60)
    results["b"] = load_object(warehouse, settings, route, _obj(bucket, p3, len(V1), "0003"))
    release.set()
    a.join(60)
    assert db.rows("SELECT name FROM staging.items") == [("good",)], (
        results["a"].status, results["b"].status, results["b"].message)


def test_out_of_order_rollback_events_end_on_the_current_version(aws: str, warehouse: str, db: DB) -> None:
    """Versioned bucket, events delivered out of order: seq1 (v1), seq3 (v1's bytes again, new VersionId),
    then the late seq2 (v2). seq3 is a duplicate of the latest load; its sequencer still orders events,
    so the late seq2 is superseded (it used to be loaded: staging ended on v2)."""
    bucket = f"ooo-{uuid.uuid4().hex[:6]}"
    s3 = _versioned(bucket)
    route = items_route("replace_source")
    settings = Settings(warehouse_url=warehouse)
    puts = [s3.put_object(Bucket=bucket, Key="items.csv", Body=b) for b in (V1, V2, V1)]
    sizes = [len(V1), len(V2), len(V1)]
    statuses = []
    for i in (0, 2, 1):
        r = load_object(warehouse, settings, route, _obj(bucket, puts[i], sizes[i], f"000{i + 1}"))
        statuses.append(r.status)
    assert db.rows("SELECT name FROM staging.items") == [("good",)], statuses


def test_versioning_suspended_null_version_ids_name_no_version(aws: str, warehouse: str, db: DB) -> None:
    """In a bucket whose versioning is suspended every write gets the VersionId "null": it names no version,
    so each new upload loads (it used to be a duplicate of the first, by VersionId)."""
    bucket = f"susp-{uuid.uuid4().hex[:6]}"
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"})
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName=f"susp-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    settings = Settings(warehouse_url=warehouse)
    statuses = []
    for i, body in enumerate((V1, V2)):
        put = s3.put_object(Bucket=bucket, Key="items.csv", Body=body)
        ev = _notification(bucket, "items.csv", put["ETag"].strip('"'), len(body), f"00000000000000000{i + 1}")
        ev["Records"][0]["s3"]["object"]["versionId"] = put.get("VersionId") or "null"
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(ev))
        report = drain_queue(warehouse, settings, [items_route("replace_source")], queue, wait_seconds=1)
        statuses += [(r.status, r.obj.version_id) for r in report.results]
    assert db.rows("SELECT name FROM staging.items") == [("bad",)], statuses


CSV = "id,name,qty,day\n"


def test_a_claim_held_too_long_fails_that_file_only(warehouse: str, db: DB, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A loader stuck on one object (a hung read) holds its claim; another run waits a bounded time for
    it, records a retryable failure for that object and loads the rest. It used to wait forever — or,
    under a lock_timeout, to crash the whole run before the next file."""
    import psycopg

    monkeypatch.setenv("FILEDROP_CLAIM_WAIT_SECONDS", "1")
    write(tmp_path / "items_a.csv", CSV + "1,a,1,\n")
    write(tmp_path / "items_b.csv", CSV + "2,b,2,\n")
    with psycopg.connect(warehouse, autocommit=True) as stuck:
        stuck.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (f"filedrop.claim:{tmp_path}/items_a.csv",))
        report = run_once(warehouse, Settings(warehouse_url=warehouse), [items_route()], str(tmp_path))
    got = [(r.obj.key, r.status, r.retryable) for r in report.results]
    assert got == [("items_a.csv", "failed", True), ("items_b.csv", "loaded", False)], got
    assert "another loader has been loading" in report.results[0].first_error
    # the history row says retryable too: the operator retries the FileDrop instead of failing it for good
    assert db.rows("SELECT status, retryable FROM filedrop.ingest_history "
                   "WHERE key = 'items_a.csv'") == [("failed", True)]


def test_an_older_loader_during_a_rolling_upgrade_still_writes_a_migrated_table(warehouse: str, db: DB,
                                                                                tmp_path: Path) -> None:
    """A staging table migrated to _source_bucket keeps the column nullable: a loader of the previous
    release (which does not know it) can still apply, and replace_source treats its rows by key."""
    route = items_route("replace_source")
    a = write(tmp_path / "items.csv", CSV + "1,a,1,\n")
    assert load(warehouse, route, a).status == "loaded"
    db.execute('DROP INDEX staging.items_source_object; ALTER TABLE staging.items DROP COLUMN "_source_bucket"')
    write(tmp_path / "items_other.csv", CSV + "5,x,5,\n")
    assert load(warehouse, route, tmp_path / "items_other.csv").status == "loaded"  # migrates the table
    # what the previous release's apply writes: no _source_bucket
    db.execute("INSERT INTO staging.items (id, name, qty, day, _source_key, _source_etag, _load_id, _row_number, "
               "_loaded_at) VALUES (2, 'old-loader', 2, NULL, 'items.csv', 'e', 'l', 1, now())")
    write(a, CSV + "3,new,3,\n", mtime=1_800_000_000)
    assert load(warehouse, route, a).status == "loaded"
    assert db.rows("SELECT id, name FROM staging.items ORDER BY id") == [(3, "new"), (5, "x")]


def test_an_index_an_older_release_creates_again_is_dropped(warehouse: str, db: DB, tmp_path: Path) -> None:
    """The previous release's bookkeeping DDL creates the unique index (bucket, key, etag, replay) again
    without touching the schema version; it would refuse every rollback. The next command drops it."""
    route = items_route("replace_source")
    path = tmp_path / "items.csv"
    write(path, CSV + "1,good,1,\n", mtime=1_700_000_000)
    assert load(warehouse, route, path).status == "loaded"
    db.execute("CREATE UNIQUE INDEX IF NOT EXISTS ingest_history_loaded_once_v2 ON filedrop.ingest_history "
               "(bucket, key, etag, replay) WHERE status = 'loaded'")
    write(path, CSV + "1,bad,1,\n", mtime=1_700_000_010)
    assert load(warehouse, route, path).status == "loaded"
    write(path, CSV + "1,good,1,\n", mtime=1_700_000_020)
    assert load(warehouse, route, path).status == "loaded"
    assert db.rows("SELECT name FROM staging.items") == [("good",)]
    assert db.one("SELECT to_regclass('filedrop.ingest_history_loaded_once_v2') IS NULL") is True


def test_a_route_switched_to_upsert_on_a_table_without_its_key_fails_clearly(warehouse: str, db: DB,
                                                                             tmp_path: Path) -> None:
    assert load(warehouse, items_route("append"), write(tmp_path / "items_1.csv", CSV + "1,a,1,\n")).status == "loaded"
    result = load(warehouse, items_route("upsert"), write(tmp_path / "items_2.csv", CSV + "1,b,1,\n"))
    assert result.status == "failed"
    assert "no primary key or unique index on (id)" in (result.first_error or "")


def test_watch_sees_a_rewrite_that_keeps_size_and_mtime(tmp_path: Path) -> None:
    """`touch -r` / `cp -p` put the mtime back; the kernel's ctime still moves, and the watch reloads."""
    import os

    path = write(tmp_path / "items.csv", CSV + "1,a,1,\n", mtime=1_700_000_000)
    memory = PollMemory()
    [item] = list_objects(Location.parse(str(tmp_path)))
    from filedrop.load.session import LoadResult

    memory.record(item, LoadResult(SourceObject(item.bucket, item.key, "e", item.size), "items", "loaded"))
    assert not memory.wanted(next(iter(list_objects(Location.parse(str(tmp_path))))))
    path.write_text(CSV + "2,b,2,\n")
    os.utime(path, (1_700_000_000, 1_700_000_000))
    [again] = list_objects(Location.parse(str(tmp_path)))
    assert (again.size, again.last_modified) == (item.size, item.last_modified)
    assert memory.wanted(again)


def test_an_event_key_holding_nul_is_refused_not_a_crash() -> None:
    body = json.dumps(_notification("b", "items\x00.csv", "e", 3, "01"))
    with pytest.raises(EventParseError, match="NUL"):
        parse_message(body)
