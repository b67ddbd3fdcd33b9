"""Status conditions of FileDrops and FileRoutes, shaped like Kubernetes' ``metav1.Condition``. Pure.

Both kinds keep one condition, ``Ready``, in every phase, so ``kubectl wait --for=condition=Ready`` and
tools that read conditions (Argo CD, kstatus, Lens) work without knowing filedrop's phases:

* a FileDrop is Ready when its version is in staging: ``Loaded``, or ``Skipped`` because that content was
  loaded before (or a newer version was); while it waits or loads, and when it failed, it is not, and the
  ``reason`` says which (CamelCase, as the API conventions ask);
* a FileRoute is Ready when it is valid, no other route targets its table, and no other route can match
  the same object (a key matching two routes fails).

``lastTransitionTime`` changes only when ``status`` does; ``observedGeneration`` is the object's generation
the condition was computed from.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from filedrop.cluster.resources import route_from_object
from filedrop.routes import FileRoute, RouteError, overlap

READY = "Ready"
#: phases in which a FileDrop's content is in staging
READY_PHASES = frozenset({"Loaded", "Skipped"})
#: the API's limit on a condition's message
MESSAGE_LIMIT = 32768


def camel(reason: str) -> str:
    """``skipped_duplicate`` -> ``SkippedDuplicate`` (reasons are CamelCase); CamelCase stays as it is."""
    return "".join(part[:1].upper() + part[1:] for part in reason.replace("-", "_").split("_") if part)


def condition(ok: bool, reason: str, message: str, generation: int, previous: Iterable[Mapping[str, Any]] | None,
              now: str, kind: str = READY) -> dict[str, Any]:
    """The condition ``kind``; it keeps the previous one's ``lastTransitionTime`` while its status is the same."""
    status = "True" if ok else "False"
    old = next((c for c in previous or () if c.get("type") == kind), None)
    since = old.get("lastTransitionTime") if old and old.get("status") == status else None
    return {"type": kind, "status": status, "observedGeneration": generation, "reason": camel(reason) or "Unknown",
            "message": (message or "")[:MESSAGE_LIMIT], "lastTransitionTime": since or now}


def filedrop_ready(phase: str, reason: str, message: str, generation: int,
                   previous: Iterable[Mapping[str, Any]] | None, now: str) -> dict[str, Any]:
    """A FileDrop's Ready condition in ``phase`` (see the module's docstring)."""
    return condition(phase in READY_PHASES, reason, message, generation, previous, now)


def route_readiness(objects: Iterable[Mapping[str, Any]]) -> dict[str, tuple[bool, str, str]]:
    """For every FileRoute object of one namespace: (ready, reason, message).

    Not ready: ``Invalid`` (the spec does not validate: a bad regex, a bad column), ``TableConflict`` (another
    route targets the same table; one table has one route), ``Overlapping`` (another route can match the same
    object: such a file fails with "matches several FileRoutes").
    """
    verdicts: dict[str, tuple[bool, str, str]] = {}
    valid: list[FileRoute] = []
    for obj in objects:
        name = str(obj["metadata"]["name"])
        try:
            valid.append(route_from_object(dict(obj)))
        except RouteError as exc:
            verdicts[name] = (False, "Invalid", str(exc))
    problems: dict[str, list[tuple[str, str]]] = {r.name: [] for r in valid}
    unchecked: dict[str, list[str]] = {r.name: [] for r in valid}
    for i, a in enumerate(valid):
        for b in valid[i + 1:]:
            overlapping = overlap(a, b) if a.spec.table != b.spec.table else False
            if overlapping is None:  # a pattern beyond the checker: said, not claimed either way
                unchecked[a.name].append(b.name)
                unchecked[b.name].append(a.name)
            if a.spec.table == b.spec.table:
                for x, y in ((a, b), (b, a)):
                    problems[x.name].append(("TableConflict", f"FileRoute {y.name} also loads table "
                                                              f"{x.spec.table}: one table has one route"))
            elif overlapping:
                for x, y in ((a, b), (b, a)):
                    problems[x.name].append(("Overlapping", f"a key can match both this route and FileRoute "
                                                            f"{y.name} (pattern {y.spec.match.pattern!r}); such a "
                                                            "file fails: narrow one of the patterns"))
    for r in valid:
        if problems[r.name]:
            reason = problems[r.name][0][0]
            verdicts[r.name] = (False, reason, "; ".join(msg for _, msg in problems[r.name]))
        else:
            m = r.spec.match
            where = "".join(f" {k} {v}" for k, v in (("in bucket", m.bucket), ("under prefix", m.prefix)) if v)
            note = (f"; whether it can match the same key as FileRoute(s) {', '.join(unchecked[r.name])} was not "
                    "checked (a pattern with alternation and anchors, look-arounds, flags or \\w/\\d/\\s): a key "
                    "matching two routes fails, naming them") if unchecked[r.name] else ""
            verdicts[r.name] = (True, "Valid", f"files matching {m.pattern!r}{where} load into table {r.spec.table} "
                                               f"({r.spec.mode}){note}")
    return verdicts
