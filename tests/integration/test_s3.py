"""`s3://` sources on moto's server over HTTP: listing, odd keys, gzip, SQS notifications."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path
from typing import Any

import boto3

from filedrop.config import Settings
from filedrop.local.pipeline import drain_queue, run_once
from filedrop.routes import load_routes
from tests.conftest import D2B, DB
from tests.support.loads import items_route, load


def bucket(name: str) -> Any:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket=name)
    return s3


def test_run_from_s3_prefix_loads_d2b_once(aws: str, warehouse: str, db: DB) -> None:
    s3 = bucket("d2b-internal-assessment-bucket")
    for f in ("orders.csv", "reviews.csv", "shipment_deliveries.csv"):
        s3.upload_file(str(D2B / f), "d2b-internal-assessment-bucket", f"orders_data/{f}")
    s3.put_object(Bucket="d2b-internal-assessment-bucket", Key="elsewhere/orders.csv", Body=b"not under the prefix")
    settings = Settings(warehouse_url=warehouse)
    source = "s3://d2b-internal-assessment-bucket/orders_data/"
    report = run_once(warehouse, settings, load_routes(), source)
    assert [(r.obj.key, r.status, r.rows_loaded) for r in report.results] == [
        ("orders_data/orders.csv", "loaded", 10000),
        ("orders_data/reviews.csv", "loaded", 7236),
        ("orders_data/shipment_deliveries.csv", "loaded", 10000),
    ]
    assert db.one("SELECT count(*) FROM staging.orders WHERE _source_key = 'orders_data/orders.csv' "
                  "AND _source_etag = 'f0c0d52177db73ed2d79392f5d0b766b'") == 10000
    again = run_once(warehouse, settings, load_routes(), source)
    assert [r.status for r in again.results] == ["skipped_duplicate"] * 3
    assert {h["bucket"] for h in db.history()} == {"d2b-internal-assessment-bucket"}


def test_keys_with_spaces_and_non_ascii(aws: str, warehouse: str, db: DB) -> None:
    s3 = bucket("odd-keys")
    keys = ["in box/items été 2022.csv", "in box/items+plus & more.csv.gz"]
    s3.put_object(Bucket="odd-keys", Key=keys[0], Body="id,name,qty,day\n1,crème,1,\n".encode())
    s3.put_object(Bucket="odd-keys", Key=keys[1], Body=gzip.compress(b"id,name,qty,day\n2,b,2,\n"))
    route = items_route("append")
    report = run_once(warehouse, Settings(warehouse_url=warehouse), [route], "s3://odd-keys/in box/")
    assert [(r.obj.key, r.status) for r in report.results] == [(keys[0], "loaded"), (keys[1], "loaded")]
    assert db.rows("SELECT id, name, _source_key FROM staging.items ORDER BY id") == [
        (1, "crème", keys[0]), (2, "b", keys[1])]


def test_load_single_s3_object(aws: str, warehouse: str, db: DB) -> None:
    s3 = bucket("single")
    s3.put_object(Bucket="single", Key="x/items.csv", Body=b"id,name,qty,day\n1,a,1,\n")
    result = load(warehouse, items_route("append"), "s3://single/x/items.csv")
    assert (result.status, result.rows_loaded, result.obj.key) == ("loaded", 1, "x/items.csv")


def _notification(bucket_name: str, key: str, etag: str, size: int, sequencer: str) -> dict[str, Any]:
    from urllib.parse import quote_plus

    return {"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
        "eventTime": "2026-11-26T10:00:00.000Z",
        "s3": {"bucket": {"name": bucket_name},
               "object": {"key": quote_plus(key), "size": size, "eTag": etag, "sequencer": sequencer}},
    }]}


def test_queue_mode_loads_notified_objects_and_deletes_messages(aws: str, warehouse: str, db: DB) -> None:
    s3 = bucket("queued")
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName=f"filedrop-events-{uuid.uuid4().hex[:8]}",
                             Attributes={"VisibilityTimeout": "30"})["QueueUrl"]
    body = b"id,name,qty,day\n1,a,1,\n2,b,2,\n"
    put = s3.put_object(Bucket="queued", Key="drop/items new.csv", Body=body)
    etag = put["ETag"].strip('"')
    event = _notification("queued", "drop/items new.csv", etag, len(body), "0055AED6DCD90281E5")
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(event))
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(event))  # redelivered duplicate
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"Type": "Notification", "Message": json.dumps(
        {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "queued"})}))  # SNS-wrapped test event
    sqs.send_message(QueueUrl=queue, MessageBody="this is not an S3 notification")

    settings = Settings(warehouse_url=warehouse)
    results: list[Any] = []
    errors: list[str] = []
    for _ in range(4):  # a few receive calls drain it
        report = drain_queue(warehouse, settings, [items_route("append")], queue, wait_seconds=1)
        results += report.results
        errors += report.errors
        if len(results) >= 2 and errors:
            break
    assert sorted(r.status for r in results) == ["loaded", "skipped_duplicate"]
    assert db.one("SELECT count(*) FROM staging.items") == 2
    [h] = [h for h in db.history() if h["status"] == "loaded"]
    assert (h["key"], h["sequencer"], h["etag"]) == ("drop/items new.csv", "0055AED6DCD90281E5", etag)
    assert any("not JSON" in e for e in errors)
    # only the unparseable message stays on the queue, for the redrive policy
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["ApproximateNumberOfMessages",
                                                                     "ApproximateNumberOfMessagesNotVisible"])
    left = sum(int(v) for v in attrs["Attributes"].values())
    assert left == 1


def test_superseded_by_sequencer_when_events_arrive_out_of_order(aws: str, warehouse: str, db: DB,
                                                                 tmp_path: Path) -> None:
    s3 = boto3.client("s3")
    s3.create_bucket(Bucket="versioned")
    s3.put_bucket_versioning(Bucket="versioned", VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket="versioned", Key="items.csv", Body=b"id,name,qty,day\n1,old,1,\n")
    v2 = s3.put_object(Bucket="versioned", Key="items.csv", Body=b"id,name,qty,day\n1,new,1,\n")
    sqs = boto3.client("sqs")
    queue = sqs.create_queue(QueueName=f"ooo-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    for put, seq in ((v2, "00000000000000000B"), (v1, "00000000000000000A")):  # newer first
        ev = _notification("versioned", "items.csv", put["ETag"].strip('"'), 24, seq)
        ev["Records"][0]["s3"]["object"]["versionId"] = put["VersionId"]
        sqs.send_message(QueueUrl=queue, MessageBody=json.dumps(ev))
    settings = Settings(warehouse_url=warehouse)
    statuses: list[str] = []
    for _ in range(4):
        statuses += [r.status for r in drain_queue(warehouse, settings, [items_route("replace_source")], queue,
                                                   wait_seconds=1).results]
        if len(statuses) == 2:
            break
    assert statuses == ["loaded", "skipped_superseded"]
    assert db.rows("SELECT name FROM staging.items") == [("new",)]
