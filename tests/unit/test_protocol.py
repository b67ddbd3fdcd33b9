"""Decisions of the load protocol and S3 event parsing: pure functions."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from filedrop.events import EventParseError, parse_message
from filedrop.objects import SourceObject
from filedrop.protocol import LoadedVersion, choose_engine, decide, too_many_bad_rows

T = datetime(2026, 1, 1, tzinfo=timezone.utc)


def obj(etag: str, seq: str | None = None, modified: datetime | None = T) -> SourceObject:
    return SourceObject("b", "k.csv", etag, 10, modified, sequencer=seq)


def prior(etag: str, seq: str | None = None, modified: datetime | None = T) -> LoadedVersion:
    return LoadedVersion("load1234567890abcdef", etag, None, seq, modified)


def test_new_object_loads() -> None:
    assert decide(obj("e1"), []).verdict == "load"


def test_same_etag_is_duplicate() -> None:
    d = decide(obj("e1"), [prior("e1")])
    assert d.verdict == "skipped_duplicate" and "load12345678" in d.reason


def test_sequencer_orders_versions_numerically() -> None:
    # hexadecimal, different lengths: compare as numbers
    assert decide(obj("e1", seq="0A"), [prior("e2", seq="0B")]).verdict == "skipped_superseded"
    assert decide(obj("e1", seq="100"), [prior("e2", seq="FF")]).verdict == "load"


def test_last_modified_when_no_sequencer() -> None:
    assert decide(obj("e1", modified=T), [prior("e2", modified=T + timedelta(seconds=1))]).verdict == "skipped_superseded"
    assert decide(obj("e1", modified=T + timedelta(seconds=1)), [prior("e2", modified=T)]).verdict == "load"


def test_bad_row_threshold() -> None:
    assert not too_many_bad_rows(0, 0, 0)
    assert not too_many_bad_rows(5, 100, 5)
    assert too_many_bad_rows(6, 100, 5)
    assert too_many_bad_rows(1, 0, 100)


@pytest.mark.parametrize("route,override,size,expected", [
    ("auto", None, 10, "direct"), ("auto", None, 300 << 20, "spark"), ("direct", None, 300 << 20, "direct"),
    ("auto", "direct", 300 << 20, "direct"), ("direct", "spark", 1, "spark"), ("spark", "auto", 1, "spark"),
])
def test_engine_choice(route: str, override: str | None, size: int, expected: str) -> None:
    assert choose_engine(route, override, size, 256 << 20) == expected


RECORD = {"eventName": "ObjectCreated:Put", "eventTime": "2026-11-26T10:00:00.000Z",
          "s3": {"bucket": {"name": "bkt"}, "object": {"key": "in+box/caf%C3%A9+1.csv", "size": 12,
                                                       "eTag": "abc", "sequencer": "0A", "versionId": "v1"}}}


def test_direct_and_sns_wrapped_notifications() -> None:
    body = json.dumps({"Records": [RECORD]})
    for message in (body, json.dumps({"Type": "Notification", "Message": body})):
        [ev] = parse_message(message)
        assert (ev.bucket, ev.key, ev.size, ev.etag, ev.sequencer, ev.version_id) == (
            "bkt", "in box/café 1.csv", 12, "abc", "0A", "v1")
        assert ev.is_create and ev.event_time == datetime(2026, 11, 26, 10, tzinfo=timezone.utc)


def test_test_event_is_ignored_and_garbage_is_an_error() -> None:
    assert parse_message(json.dumps({"Event": "s3:TestEvent", "Bucket": "bkt"})) == []
    with pytest.raises(EventParseError, match="not JSON"):
        parse_message("hello")
    with pytest.raises(EventParseError, match="no 'Records'"):
        parse_message("{}")
    with pytest.raises(EventParseError, match="record 0"):
        parse_message(json.dumps({"Records": [{"s3": {}}]}))
