"""Decisions of the load protocol and S3 event parsing: pure functions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from filedrop.events import EventParseError, parse_message
from filedrop.objects import SourceObject
from filedrop.protocol import LoadedVersion, choose_engine, decide, too_many_bad_rows

T = datetime(2026, 1, 1, tzinfo=UTC)


def obj(etag: str, seq: str | None = None, modified: datetime | None = T, version: str | None = None) -> SourceObject:
    return SourceObject("b", "k.csv", etag, 10, modified, sequencer=seq, version_id=version)


def prior(etag: str, seq: str | None = None, modified: datetime | None = T, version: str | None = None,
          load_id: str = "load1234567890abcdef") -> LoadedVersion:
    return LoadedVersion(load_id, etag, version, seq, modified)


def test_new_object_loads() -> None:
    assert decide(obj("e1"), []).verdict == "load"


def test_same_etag_as_the_latest_load_is_duplicate() -> None:
    d = decide(obj("e1"), [prior("e1")])
    assert d.verdict == "skipped_duplicate" and "load12345678" in d.reason


def test_rollback_to_an_older_versions_bytes_loads() -> None:
    # v1 (e1) then v2 (e2) loaded; v1's bytes dropped again are the current content: a new version
    history = [prior("e1", load_id="first"), prior("e2", load_id="second")]
    assert decide(obj("e1"), history).verdict == "load"
    # ... also from an event in a versioned bucket: a new VersionId carrying v1's ETag
    history = [prior("e1", seq="10", version="v1"), prior("e2", seq="20", version="v2")]
    assert decide(obj("e1", seq="30", version="v3"), history).verdict == "load"
    # the same VersionId again (a redelivered event) is a duplicate whatever came after it
    assert decide(obj("e1", seq="10", version="v1"), history).verdict == "skipped_duplicate"


def test_sequencers_compare_right_padded_as_strings() -> None:
    # Amazon S3 User Guide: right-pad the shorter with zeros, then compare as strings.
    # "FF" -> "FF0" is later than "100"; as hex numbers 0x100 > 0xFF would say the opposite.
    assert decide(obj("e1", seq="100"), [prior("e2", seq="FF")]).verdict == "skipped_superseded"
    assert decide(obj("e1", seq="FF"), [prior("e2", seq="100")]).verdict == "load"
    assert decide(obj("e1", seq="0A"), [prior("e2", seq="0B")]).verdict == "skipped_superseded"
    assert decide(obj("e1", seq="0055C9A1C8D4E53FA1"), [prior("e2", seq="0055C9A1C8D4E53F")]).verdict == "load"


def test_sequencer_rule_matches_aws_event_samples() -> None:
    # sequencers of one key from real notifications: later PUTs have larger right-padded values
    from filedrop.objects import sequencer_newer

    assert sequencer_newer("0062E99A88DC407460", "0062E99A88DC407461") is False
    assert sequencer_newer("0062E99A88DC4075", "0062E99A88DC407460") is True
    assert sequencer_newer("0062e99a88dc407461", "0062E99A88DC407460") is True


def test_last_modified_orders_an_event_when_the_prior_load_has_no_sequencer() -> None:
    late = obj("e1", seq="01", modified=T)
    assert decide(late, [prior("e2", modified=T + timedelta(seconds=1))]).verdict == "skipped_superseded"
    assert decide(obj("e1", seq="01", modified=T + timedelta(seconds=1)), [prior("e2", modified=T)]).verdict == "load"


def test_a_listed_object_is_never_superseded() -> None:
    # a local file restored with an old mtime (cp -p, rsync -t, tar x) is the current version
    assert decide(obj("e1", modified=T), [prior("e2", seq="99", modified=T + timedelta(days=1))]).verdict == "load"


def test_replay_token_loads_again_once() -> None:
    loaded = [LoadedVersion("a" * 20, "e1", None, None, T, replay="r1")]
    assert decide(obj("e1"), loaded, replay="r2").verdict == "load"
    assert decide(obj("e1"), loaded, replay="r1").verdict == "skipped_duplicate"


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
        assert ev.is_create and ev.event_time == datetime(2026, 11, 26, 10, tzinfo=UTC)


def test_test_event_is_ignored_and_garbage_is_an_error() -> None:
    assert parse_message(json.dumps({"Event": "s3:TestEvent", "Bucket": "bkt"})) == []
    with pytest.raises(EventParseError, match="not JSON"):
        parse_message("hello")
    with pytest.raises(EventParseError, match="no 'Records'"):
        parse_message("{}")
    with pytest.raises(EventParseError, match="record 0"):
        parse_message(json.dumps({"Records": [{"s3": {}}]}))


def test_poll_memory_skips_unchanged_objects_and_backs_off_failures() -> None:
    from filedrop.load.session import LoadResult
    from filedrop.load.sources import Listed
    from filedrop.local.pipeline import PollMemory

    now = [0.0]
    memory = PollMemory(base=10, cap=40, clock=lambda: now[0])
    item = Listed("/src", "a.csv", 5, T)
    assert memory.wanted(item)
    memory.record(item, LoadResult(obj("e"), "r", "loaded"))
    assert not memory.wanted(item)  # unchanged and loaded: not hashed, not loaded, no history row
    assert memory.wanted(Listed("/src", "a.csv", 6, T))  # changed size
    bad = Listed("/src", "b.csv", 5, T)
    waits = []
    for _ in range(5):
        memory.record(bad, LoadResult(obj("e"), "r", "failed"))
        start = now[0]
        while not memory.wanted(bad):
            now[0] += 1
        waits.append(now[0] - start)
    assert waits == [10, 20, 40, 40, 40]
    assert memory.wanted(Listed("/src", "b.csv", 7, T))  # changed: at once
