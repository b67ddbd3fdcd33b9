"""A FileDrop (DESIGN §2) as the operator reads it: parsed once from the object's body. Pure.

:meth:`FileDropView.parse` takes the body the API server (or kopf) hands over and checks what the controller
relies on, so the rest of the operator reads typed fields instead of ``fd["status"].get(...)``; a body it
cannot use raises :class:`FileDropError`, which names the object and the field.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from filedrop.cluster.resources import PHASES, REPLAY_ANNOTATION, ROUTE_LABEL, TERMINAL_PHASES
from filedrop.objects import SourceObject


class FileDropError(ValueError):
    """A FileDrop body the operator cannot act on (a missing or mistyped field)."""


def parse_time(value: str | None) -> datetime | None:
    """An RFC 3339 timestamp of the API (``...Z``)."""
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


class _Fields:
    """Typed reads of one mapping of the body, with errors that say which object and field."""

    def __init__(self, where: str, data: Any) -> None:
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise FileDropError(f"{where} must be an object, got {type(data).__name__}")
        self.where, self.data = where, data

    def _get(self, name: str, kind: type | tuple[type, ...], required: bool) -> Any:
        value = self.data.get(name)
        if value is None or (required and value == ""):
            if required:
                raise FileDropError(f"{self.where}.{name} is required")
            return None
        if isinstance(value, bool) or not isinstance(value, kind):
            raise FileDropError(f"{self.where}.{name} must be {getattr(kind, '__name__', kind)}, got {value!r}")
        return value

    def text(self, name: str, default: str = "") -> str:
        value = self._get(name, str, False)
        return str(value) if value else default

    def required_text(self, name: str) -> str:
        return str(self._get(name, str, True))

    def optional_text(self, name: str) -> str | None:
        value = self._get(name, str, False)
        return str(value) if value else None

    def integer(self, name: str) -> int:
        value = self._get(name, (int, float), False)
        if value is None:
            return 0
        if value != int(value) or value < 0:  # e.g. 1.5, or a negative size
            raise FileDropError(f"{self.where}.{name} must be a whole number >= 0, got {value!r}")
        return int(value)

    def time(self, name: str) -> datetime | None:
        value = self.optional_text(name)
        try:
            return parse_time(value)
        except ValueError:
            raise FileDropError(f"{self.where}.{name} is not a timestamp: {value!r}") from None


@dataclass(frozen=True)
class FileDropSpec:
    """The object version the FileDrop names (immutable: a new version is a new FileDrop)."""

    bucket: str
    key: str
    etag: str
    size: int = 0
    version_id: str | None = None
    sequencer: str | None = None
    event_time: str | None = None
    source: str = "manual"

    def source_object(self) -> SourceObject:
        """The object version as the load protocol sees it."""
        return SourceObject(bucket=self.bucket, key=self.key, etag=self.etag, size=self.size,
                            last_modified=parse_time(self.event_time), version_id=self.version_id,
                            sequencer=self.sequencer, uri=f"s3://{self.bucket}/{self.key}", is_s3=True)

    def to_dict(self) -> dict[str, Any]:
        """The spec as the API spells it."""
        spec: dict[str, Any] = {"bucket": self.bucket, "key": self.key, "etag": self.etag, "size": self.size,
                                "source": self.source}
        for name, value in (("versionId", self.version_id), ("sequencer", self.sequencer),
                            ("eventTime", self.event_time)):
            if value:
                spec[name] = value
        return spec


@dataclass(frozen=True)
class FileDropStatus:
    """The fields of ``status`` the operator reads back (it writes more: rows, conditions, times)."""

    phase: str = "Pending"
    attempts: int = 0
    route: str | None = None
    table: str | None = None
    engine: str | None = None
    job: str | None = None
    load_id: str | None = None
    message: str | None = None
    observed_replay: str = ""
    started_at: str | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class FileDropView:
    name: str
    namespace: str
    spec: FileDropSpec
    status: FileDropStatus = field(default_factory=FileDropStatus)
    uid: str = ""
    generation: int = 0
    resource_version: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)
    #: ``status`` as it came, to write only what changes
    raw_status: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, body: Mapping[str, Any]) -> FileDropView:
        """The view of a FileDrop body (a dict from the API, or kopf's ``body``)."""
        meta = _Fields("FileDrop metadata", body.get("metadata"))
        name = meta.required_text("name")
        where = f"FileDrop {meta.text('namespace')}/{name}" if meta.text("namespace") else f"FileDrop {name}"
        spec = _Fields(f"{where}: spec", body.get("spec"))
        st = _Fields(f"{where}: status", body.get("status"))
        phase = st.text("phase", "Pending")
        if phase not in PHASES:
            raise FileDropError(f"{where}: status.phase must be one of {', '.join(PHASES)}, got {phase!r}")
        annotations = _Fields(f"{where}: metadata.annotations", meta.data.get("annotations"))
        return cls(
            name=name, namespace=meta.text("namespace"), uid=meta.text("uid"),
            generation=meta.integer("generation"), resource_version=meta.text("resourceVersion"),
            annotations={str(k): str(v) for k, v in annotations.data.items()},
            spec=FileDropSpec(bucket=spec.required_text("bucket"), key=spec.required_text("key"),
                              etag=spec.required_text("etag"), size=spec.integer("size"),
                              version_id=spec.optional_text("versionId"), sequencer=spec.optional_text("sequencer"),
                              event_time=spec.optional_text("eventTime"), source=spec.text("source", "manual")),
            status=FileDropStatus(phase=phase, attempts=st.integer("attempts"), route=st.optional_text("route"),
                                  table=st.optional_text("table"), engine=st.optional_text("engine"),
                                  job=st.optional_text("job"), load_id=st.optional_text("loadId"),
                                  message=st.optional_text("message"), observed_replay=st.text("observedReplay"),
                                  started_at=st.optional_text("startedAt"), next_attempt_at=st.time("nextAttemptAt")),
            raw_status=copy.deepcopy(dict(st.data)))

    @property
    def key(self) -> str:
        """``namespace/name``: the FileDrop's identity inside the operator."""
        return f"{self.namespace}/{self.name}"

    @property
    def replay(self) -> str:
        """The replay annotation's value ("" when absent)."""
        return self.annotations.get(REPLAY_ANNOTATION, "")

    @property
    def replay_requested(self) -> bool:
        """A replay annotation the operator has not acted on yet."""
        return bool(self.replay) and self.replay != self.status.observed_replay

    @property
    def final(self) -> bool:
        """Nothing left to do: a final phase, and no new replay asked for."""
        return self.status.phase in TERMINAL_PHASES and not self.replay_requested

    def manifest(self) -> dict[str, Any]:
        """Metadata and spec as the Job and SparkApplication builders take them."""
        return {"metadata": {"name": self.name, "namespace": self.namespace, "uid": self.uid},
                "spec": self.spec.to_dict()}

    def changes(self, status: Mapping[str, Any]) -> dict[str, Any]:
        """The part of a status patch that would change something (a field absent counts as None)."""
        return {k: v for k, v in status.items() if self.raw_status.get(k) != v}


#: phases of a FileDrop that waits: for its route to be resolved, for a load slot, or for a retry's backoff
WAITING_PHASES = ("Pending", "Queued")


@dataclass(frozen=True)
class DropState:
    """What the backlog figures need of a FileDrop, read leniently (a half-written body still counts)."""

    namespace: str
    name: str
    key: str
    route: str
    phase: str
    created: datetime | None

    @classmethod
    def of(cls, body: Mapping[str, Any]) -> DropState:
        meta = body.get("metadata") or {}
        status = body.get("status") or {}
        route = status.get("route") or (meta.get("labels") or {}).get(ROUTE_LABEL) or ""
        try:
            created = parse_time(meta.get("creationTimestamp"))
        except ValueError:
            created = None
        return cls(namespace=str(meta.get("namespace") or ""), name=str(meta.get("name") or ""),
                   key=str((body.get("spec") or {}).get("key") or ""), route=str(route),
                   phase=str(status.get("phase") or "Pending"), created=created)


@dataclass(frozen=True)
class BacklogSummary:
    """FileDrops counted by phase, and the oldest one waiting (what ``filedrop status`` and the metrics say)."""

    by_phase: dict[str, int]
    waiting: int
    oldest_waiting: DropState | None

    @classmethod
    def of(cls, drops: Iterable[DropState]) -> BacklogSummary:
        drops = list(drops)
        by_phase = {p: n for p in PHASES if (n := sum(d.phase == p for d in drops))}
        waiting = [d for d in drops if d.phase in WAITING_PHASES]
        dated = [d for d in waiting if d.created is not None]
        oldest = min(dated, key=lambda d: d.created or datetime.max) if dated else None
        return cls(by_phase=by_phase, waiting=len(waiting), oldest_waiting=oldest)

    def oldest_age(self, now: datetime) -> float:
        """Seconds the oldest waiting FileDrop has waited (0 when none waits)."""
        if self.oldest_waiting is None or self.oldest_waiting.created is None:
            return 0.0
        return max(0.0, (now - self.oldest_waiting.created).total_seconds())
