"""S3 event notifications as they arrive through SQS (DESIGN §4). Pure: parsing only.

Understands notifications sent to SQS directly and wrapped in an SNS envelope, ignores
``s3:TestEvent``, and URL-decodes keys (``+`` is a space). Used by ``filedrop run --queue`` and by
the cluster bridge.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote_plus


class EventParseError(ValueError):
    """The message is not an S3 notification we understand; leave it to the queue's redrive policy."""


@dataclass(frozen=True)
class S3Event:
    event_name: str
    bucket: str
    key: str
    size: int
    etag: str
    version_id: str | None
    sequencer: str | None
    event_time: datetime | None

    @property
    def is_create(self) -> bool:
        return self.event_name.startswith("ObjectCreated")


def _unwrap(body: str) -> dict[str, Any]:
    try:
        doc = json.loads(body)
    except json.JSONDecodeError as exc:
        raise EventParseError(f"message body is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise EventParseError("message body is not a JSON object")
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):  # SNS envelope
        return _unwrap(doc["Message"])
    return doc


def parse_message(body: str) -> list[S3Event]:
    """The S3 records of one SQS message body; empty for ``s3:TestEvent``."""
    doc = _unwrap(body)
    if doc.get("Event") == "s3:TestEvent":
        return []
    records = doc.get("Records")
    if not isinstance(records, list):
        raise EventParseError("no 'Records' list: not an S3 event notification")
    out = []
    for i, rec in enumerate(records):
        try:
            s3 = rec["s3"]
            obj = s3["object"]
            name = str(rec.get("eventName", ""))
            when = rec.get("eventTime")
            key = unquote_plus(str(obj["key"]))
            if "\x00" in key:
                raise ValueError("key holds a NUL character, which no history or table can store")
            version = obj.get("versionId") or None
            out.append(S3Event(
                event_name=name,
                bucket=str(s3["bucket"]["name"]),
                key=key,
                size=int(obj.get("size", 0)),
                etag=str(obj.get("eTag") or obj.get("etag") or "").strip('"'),
                # a bucket with versioning suspended gives every new write the VersionId "null": it names
                # no version of its own, so such events are identified by ETag and sequencer
                version_id=None if version == "null" else version,
                sequencer=obj.get("sequencer") or None,
                event_time=datetime.fromisoformat(when.replace("Z", "+00:00")) if when else None,
            ))
        except (KeyError, TypeError, ValueError) as exc:
            raise EventParseError(f"record {i}: missing or malformed field {exc}") from None
    return out
