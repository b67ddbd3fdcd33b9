"""FileDrop and FileRoute resources (DESIGN §2): names, manifests and conversions. Pure.

A FileDrop's name is derived from (bucket, key, version), so a redelivered S3 event or a second
backfill can never create a twin: the API server answers 409 and that means "already there". The
version is the VersionId; in an unversioned bucket it is the ETag plus the event's sequencer, because
the same bytes uploaded again later (a rollback to an earlier file) are a new version that must load.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime
from typing import Any

from filedrop.objects import SourceObject
from filedrop.routes import API_VERSION, FileRoute, parse_route

GROUP = "filedrop.dev"
VERSION = "v1alpha1"
FILEDROPS = "filedrops"
FILEROUTES = "fileroutes"
ROUTE_LABEL = f"{GROUP}/route"
FILEDROP_LABEL = f"{GROUP}/filedrop"
REPLAY_ANNOTATION = f"{GROUP}/replay"

PHASES = ("Pending", "Queued", "Loading", "Loaded", "Skipped", "Failed")
TERMINAL_PHASES = frozenset({"Loaded", "Skipped", "Failed"})


def filedrop_name(bucket: str, key: str, version: str) -> str:
    """``fd-`` + 12 hex of sha256(bucket/key/versionId-or-etag)."""
    digest = hashlib.sha256(f"{bucket}/{key}/{version}".encode()).hexdigest()
    return f"fd-{digest[:12]}"


def _label_value(value: str) -> str:
    """A valid label value (≤ 63 chars of [A-Za-z0-9_.-], alphanumeric at both ends)."""
    cleaned = re.sub(r"[^A-Za-z0-9_.-]", "-", value)[:63].strip("-_.")
    return cleaned


def filedrop_manifest(*, bucket: str, key: str, etag: str, size: int, version_id: str | None = None,
                      sequencer: str | None = None, event_time: datetime | None = None, source: str = "sqs",
                      route: str | None = None, namespace: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {"bucket": bucket, "key": key, "etag": etag, "size": int(size), "source": source}
    if version_id and version_id != "null":
        spec["versionId"] = version_id
    if sequencer:
        spec["sequencer"] = sequencer
    if event_time:
        spec["eventTime"] = event_time.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    # an unversioned (or versioning-suspended) object: the same bytes uploaded again later are another
    # version, so the ETag is qualified by the event's sequencer (S3 sets one on every ObjectCreated
    # event; a redelivery repeats it), or by LastModified for a backfill. An event without a sequencer
    # (some S3-compatible servers) is named by its ETag alone: its re-uploads are not told apart.
    when = event_time.astimezone(UTC).isoformat() if event_time else ""
    version = version_id if version_id and version_id != "null" else (
        f"{etag}@{sequencer}" if sequencer else f"{etag}@{when}" if source == "backfill" and when else etag)
    metadata: dict[str, Any] = {"name": filedrop_name(bucket, key, version)}
    if route:
        metadata["labels"] = {ROUTE_LABEL: _label_value(route)}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": "FileDrop", "metadata": metadata, "spec": spec}


def source_object(spec: dict[str, Any]) -> SourceObject:
    """The object version a FileDrop names, as the load protocol sees it."""
    event_time = spec.get("eventTime")
    return SourceObject(
        bucket=spec["bucket"], key=spec["key"], etag=spec["etag"], size=int(spec.get("size") or 0),
        last_modified=datetime.fromisoformat(event_time.replace("Z", "+00:00")) if event_time else None,
        version_id=spec.get("versionId") or None, sequencer=spec.get("sequencer") or None,
        uri=f"s3://{spec['bucket']}/{spec['key']}", is_s3=True,
    )


def route_from_object(obj: dict[str, Any]) -> FileRoute:
    """A FileRoute custom object (as the API returns it) as the validated model."""
    doc = {"apiVersion": obj.get("apiVersion", API_VERSION), "kind": "FileRoute",
           "metadata": {"name": obj["metadata"]["name"]}, "spec": obj.get("spec", {})}
    return parse_route(doc, f"FileRoute {obj['metadata'].get('namespace', '')}/{obj['metadata']['name']}")


def route_manifest(route: FileRoute, namespace: str | None = None) -> dict[str, Any]:
    """A FileRoute model as the custom object ``kubectl apply`` takes."""
    body = route.model_dump(by_alias=True, exclude_none=True, mode="json")
    metadata: dict[str, Any] = {"name": route.name}
    if namespace:
        metadata["namespace"] = namespace
    return {"apiVersion": API_VERSION, "kind": "FileRoute", "metadata": metadata, "spec": body["spec"]}


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
