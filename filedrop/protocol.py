"""Decisions of the load protocol (DESIGN §3), as pure functions over history facts.

Both engines and both runtimes (CLI and operator) ask these functions, so "exactly once per object
version" has a single definition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from filedrop.objects import SourceObject, is_newer

Verdict = Literal["load", "skipped_duplicate", "skipped_superseded"]
STATUSES = ("running", "loaded", "skipped_duplicate", "skipped_superseded", "failed")


@dataclass(frozen=True)
class LoadedVersion:
    """A version of the same (bucket, key) that ``ingest_history`` records as ``loaded``."""

    load_id: str
    etag: str
    version_id: str | None
    sequencer: str | None
    last_modified: datetime | None
    replay: str = ""
    #: False for a version recorded as ``skipped_duplicate`` (an event for the content already loaded):
    #: it applied nothing, but its sequencer says the key held that content at least that late.
    loaded: bool = True


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""
    #: False when the verdict may change once loads now running finish (a duplicate of the *latest*
    #: loaded content): only a loader holding the object's claim may act on it.
    final: bool = True


def _same_version(obj: SourceObject, prior: LoadedVersion) -> bool:
    """Both name one S3 object version (VersionId), or neither has one and the content is the same."""
    if obj.version_id and prior.version_id:
        return obj.version_id == prior.version_id
    return obj.etag == prior.etag


def decide(obj: SourceObject, versions: list[LoadedVersion], replay: str = "") -> Decision:
    """Should this object version be loaded, given the loaded versions of its (bucket, key)?

    ``versions`` are in load order, the latest last (:func:`filedrop.warehouse.history.loaded_versions`); those
    recorded as duplicates (``loaded=False``) only take part in ordering events.

    - A duplicate is the same object version: the same S3 VersionId, or the etag of the **latest**
      loaded version. Bytes of an older version dropped again (a rollback) are a new version.
    - Only a version named by an event can be superseded (events arrive out of order); a listed
      object is the current version by definition.
    - A ``replay`` token (the FileDrop's replay annotation) asks for one more load of this version:
      only an earlier load of it under the same token makes it a duplicate, and order is not checked.
    """
    loaded = [p for p in versions if p.loaded]
    if replay:
        for prior in loaded:
            if prior.replay == replay and _same_version(obj, prior):
                return Decision("skipped_duplicate",
                                f"already loaded under this replay token by load {prior.load_id[:12]}")
        return Decision("load")
    if obj.version_id:
        for prior in loaded:
            if prior.version_id == obj.version_id:
                return Decision("skipped_duplicate",
                                f"this object version was already loaded by load {prior.load_id[:12]}")
    if loaded and loaded[-1].etag == obj.etag:
        return Decision("skipped_duplicate",
                        f"same content as the latest loaded version (load {loaded[-1].load_id[:12]})", final=False)
    if obj.from_event:
        for prior in versions:
            if is_newer(prior.sequencer, prior.last_modified, obj.sequencer, obj.last_modified):
                return Decision(
                    "skipped_superseded",
                    f"a newer version of this key was already loaded by load {prior.load_id[:12]}",
                )
    return Decision("load")


def too_many_bad_rows(bad: int, parsed: int, max_percent: float) -> bool:
    """With ``onError: continue``, a file fails when its share of bad rows exceeds the limit."""
    if bad == 0:
        return False
    return parsed == 0 or 100.0 * bad / parsed > max_percent


def choose_engine(route_engine: str, override: str | None, size: int, threshold: int) -> str:
    """``direct`` or ``spark`` for one file: an explicit choice wins, ``auto`` goes by size."""
    wanted = override if override and override != "auto" else route_engine
    if wanted != "auto":
        return wanted
    return "spark" if size >= threshold else "direct"
