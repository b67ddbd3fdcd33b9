"""Which versions load, and whose rows a load may touch (DESIGN §3): rollbacks, (bucket, key) scope,
listed objects with old mtimes, files that change while they load. Real PostgreSQL, moto over HTTP."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path

import boto3
import psycopg
import pytest

from filedrop.config import Settings
from filedrop.load.session import load_object
from filedrop.load.sources import describe_uri
from filedrop.local.pipeline import drain_queue, run_once
from tests.conftest import DB
from tests.integration.test_s3 import _notification
from tests.support.loads import items_route, load, write

T0 = 1_700_000_000.0
HEADER = "id,name,qty,day\n"


def names(db: DB) -> list[tuple[object, ...]]:
    return db.rows("SELECT _source_bucket, _source_key, id, name FROM staging.items ORDER BY 1, 2, 3")


@pytest.mark.parametrize("mode", ["replace_source", "upsert", "append"])
def test_rollback_to_an_earlier_files_bytes_loads_it_again(warehouse: str, db: DB, tmp_path: Path, mode: str) -> None:
    """v1, then v2, then v1's exact bytes again (re-uploading the last good file): the source holds v1,
    so staging must too. It used to be skipped_duplicate with v2 left in staging, silently."""
    route = items_route(mode)
    path = tmp_path / "items.csv"
    v1, v2 = HEADER + "1,good,1,\n", HEADER + "1,bad,1,\n"
    for content, mtime in ((v1, T0), (v2, T0 + 10), (v1, T0 + 20)):
        write(path, content, mtime=mtime)
        assert load(warehouse, route, path).status == "loaded"
    assert [h["status"] for h in db.history()] == ["loaded", "loaded", "loaded"]
    expected = {"replace_source": ["good"], "upsert": ["good"], "append": ["bad", "good", "good"]}[mode]
    assert sorted(r[0] for r in db.rows("SELECT name FROM staging.items")) == expected
    # the same bytes once more are the latest loaded version: a duplicate
    write(path, v1, mtime=T0 + 30)
    assert load(warehouse, route, path).status == "skipped_duplicate"


def test_rollback_in_a_versioned_bucket_loads_from_its_event(aws: str, warehouse: str, db: DB) -> None:
    """In a versioned bucket the rollback is a new VersionId carrying v1's ETag."""
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="rollback")
    s3.put_bucket_versioning(Bucket="rollback", VersioningConfiguration={"Status": "Enabled"})
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName=f"rb-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    bodies = [b"id,name,qty,day\n1,good,1,\n", b"id,name,qty,day\n1,bad,1,\n", b"id,name,qty,day\n1,good,1,\n"]
    settings = Settings(warehouse_url=warehouse)
    statuses = []
    for i, body in enumerate(bodies):
        put = s3.put_object(Bucket="rollback", Key="items.csv", Body=body)
        ev = _notification("rollback", "items.csv", put["ETag"].strip('"'), len(body), f"00000000000000000{i + 1}")
        ev["Records"][0]["s3"]["object"]["versionId"] = put["VersionId"]
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(ev))
        report = drain_queue(warehouse, settings, [items_route("replace_source")], queue, wait_seconds=1)
        statuses += [r.status for r in report.results]
    assert statuses == ["loaded", "loaded", "loaded"]
    assert db.rows("SELECT name FROM staging.items") == [("good",)]
    # a redelivered event for the first version is still a duplicate
    first = s3.list_object_versions(Bucket="rollback", Prefix="items.csv")["Versions"][-1]
    ev = _notification("rollback", "items.csv", first["ETag"].strip('"'), 25, "000000000000000001")
    ev["Records"][0]["s3"]["object"]["versionId"] = first["VersionId"]
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(ev))
    report = drain_queue(warehouse, settings, [items_route("replace_source")], queue, wait_seconds=1)
    assert [r.status for r in report.results] == ["skipped_duplicate"]


def test_same_key_in_two_local_sources_keeps_both(warehouse: str, db: DB, tmp_path: Path) -> None:
    """replace_source deletes the rows of this (bucket, key) only: the same file name in another source
    directory (or bucket) is another object. It used to delete by key alone."""
    route = items_route("replace_source")
    a = write(tmp_path / "a" / "items.csv", HEADER + "1,from-a,1,\n")
    b = write(tmp_path / "b" / "items.csv", HEADER + "2,from-b,2,\n")
    assert load(warehouse, route, a).status == "loaded"
    assert load(warehouse, route, b).status == "loaded"
    assert names(db) == [(str(a.parent), "items.csv", 1, "from-a"), (str(b.parent), "items.csv", 2, "from-b")]
    write(a, HEADER + "3,from-a-v2,3,\n", mtime=T0 + 60)
    assert load(warehouse, route, a).status == "loaded"
    assert names(db) == [(str(a.parent), "items.csv", 3, "from-a-v2"), (str(b.parent), "items.csv", 2, "from-b")]


def test_same_key_in_two_buckets_keeps_both(aws: str, warehouse: str, db: DB) -> None:
    s3 = boto3.client("s3")
    for name, row in (("bucket-one", "1,one,1,"), ("bucket-two", "2,two,2,")):
        s3.create_bucket(Bucket=name)
        s3.put_object(Bucket=name, Key="in/items.csv", Body=(HEADER + row + "\n").encode())
    routes = [items_route("replace_source")]
    settings = Settings(warehouse_url=warehouse)
    for name in ("bucket-one", "bucket-two"):
        assert [r.status for r in run_once(warehouse, settings, routes, f"s3://{name}/in/").results] == ["loaded"]
    assert names(db) == [("bucket-one", "in/items.csv", 1, "one"), ("bucket-two", "in/items.csv", 2, "two")]


def test_staging_table_from_before_source_bucket_is_migrated(warehouse: str, db: DB, tmp_path: Path) -> None:
    """A staging table made by an earlier release has no _source_bucket: it is added and filled from the
    history of the loads that wrote each row, and replace_source then scopes by (bucket, key)."""
    route = items_route("replace_source")
    a = write(tmp_path / "a" / "items.csv", HEADER + "1,old-a,1,\n")
    assert load(warehouse, route, a).status == "loaded"
    # make it look like the old release's table: no _source_bucket, the old key-only index
    db.execute('DROP INDEX staging.items_source_object; ALTER TABLE staging.items DROP COLUMN "_source_bucket"; '
               'CREATE INDEX items_source_key ON staging.items ("_source_key")')
    b = write(tmp_path / "b" / "items.csv", HEADER + "2,b,2,\n")
    assert load(warehouse, route, b).status == "loaded"
    assert names(db) == [(str(a.parent), "items.csv", 1, "old-a"), (str(b.parent), "items.csv", 2, "b")]
    # a row whose load is gone from the history has no bucket: replace_source still replaces it by key
    db.execute("UPDATE staging.items SET \"_source_bucket\" = NULL WHERE id = 1")
    write(a, HEADER + "3,new-a,3,\n", mtime=T0 + 60)
    assert load(warehouse, route, a).status == "loaded"
    assert sorted(r[2] for r in names(db)) == [2, 3]


def test_a_listed_file_with_an_older_mtime_is_the_current_version(warehouse: str, db: DB, tmp_path: Path) -> None:
    """`cp -p`, `rsync -t` or `tar x` give a changed file an older mtime; listed, it is still the current
    version and loads. It used to be skipped_superseded on every run, forever."""
    route = items_route("replace_source")
    path = write(tmp_path / "items.csv", HEADER + "2,new,2,\n", mtime=T0 + 100)
    assert load(warehouse, route, path).status == "loaded"
    write(path, HEADER + "1,restored,1,\n", mtime=T0)
    result = run_once(warehouse, Settings(warehouse_url=warehouse), [route], str(tmp_path)).results
    assert [r.status for r in result] == ["loaded"]
    assert db.rows("SELECT name FROM staging.items") == [("restored",)]


class _Rewriter(threading.Thread):
    """Appends rows to a file while the loader reads it (a producer still writing)."""

    def __init__(self, path: Path, rows: int) -> None:
        super().__init__(daemon=True)
        self.path, self.rows = path, rows

    def run(self) -> None:
        with open(self.path, "a") as f:
            for i in range(self.rows):
                f.write(f"{10_000_000 + i},late,{i},\n")


def test_a_local_file_changed_during_its_load_is_not_recorded_under_the_old_etag(
        warehouse: str, db: DB, tmp_path: Path) -> None:
    """The etag of a local file is the MD5 of the bytes loaded (hashed while streaming). A file that
    grows while it loads fails that attempt (retryable) and loads whole on the next run."""
    route = items_route("append")
    path = write(tmp_path / "items.csv", HEADER + "".join(f"{i},n,{i},\n" for i in range(200_000)))
    obj = describe_uri(str(path))  # etag of the content before the producer appends
    settings = Settings(warehouse_url=warehouse)
    grow = _Rewriter(path, 200_000)
    first = {"done": False}

    def on_bytes(_: int) -> None:  # the producer writes more once the load has started reading
        if not first["done"]:
            first["done"] = True
            grow.start()
            grow.join()

    result = load_object(warehouse, settings, route, obj, on_bytes=on_bytes)
    assert result.status == "failed" and result.retryable, result
    assert "changed while it was being read" in (result.first_error or "")
    assert db.one("SELECT count(*) FROM staging.items") == 0
    # the next run loads the whole file under the etag of what it read
    again = run_once(warehouse, settings, [route], str(tmp_path)).results
    assert [(r.status, r.rows_loaded) for r in again] == [("loaded", 400_000)]
    with psycopg.connect(warehouse) as conn:
        etag = conn.execute("SELECT etag FROM filedrop.ingest_history WHERE status = 'loaded'").fetchone()[0]
    assert etag == describe_uri(str(path)).etag != obj.etag
