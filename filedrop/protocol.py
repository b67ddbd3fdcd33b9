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


@dataclass(frozen=True)
class Decision:
    verdict: Verdict
    reason: str = ""


def decide(obj: SourceObject, loaded: list[LoadedVersion], replay: str = "") -> Decision:
    """Should this object version be loaded, given the versions of its key already loaded?

    A ``replay`` token (the FileDrop's replay annotation) asks for one more load of this version:
    only an earlier load under the same token makes it a duplicate, and order is not checked.
    """
    for prior in loaded:
        if prior.etag == obj.etag and prior.replay == replay:
            return Decision("skipped_duplicate", f"same content already loaded by load {prior.load_id[:12]}")
    if replay:
        return Decision("load")
    for prior in loaded:
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
