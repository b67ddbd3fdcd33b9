"""``filedrop crds apply``: make the cluster's filedrop CRDs exactly the ones of a directory — what the chart's
optional pre-upgrade hook runs (``crds.upgradeHook.enabled``), since ``helm upgrade`` never changes the CRDs in
its ``crds/`` directory.

Each CRD's spec is replaced whole (a PUT on the object's current resourceVersion; labels and annotations are merged,
so helm's own stay), so a field the new release dropped is dropped too, and the API server judges the change (e.g.
it refuses to remove a version that objects are still stored in). Only CRDs of the ``filedrop.dev`` group are
touched, and only existing ones: the hook's ClusterRole may get and update those two names and nothing else
(``helm install`` creates them).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml

from filedrop.cluster.resources import GROUP

__all__ = ["CrdError", "CrdResult", "apply_crds", "read_crds"]


class CrdError(RuntimeError):
    """A CRD file or the cluster refused: nothing a retry fixes."""


class _Api(Protocol):
    def get_crd(self, name: str) -> dict[str, Any] | None: ...

    def replace_crd(self, name: str, body: dict[str, Any]) -> dict[str, Any]: ...


@dataclass(frozen=True)
class CrdResult:
    name: str
    changed: bool
    versions: tuple[str, ...]


def read_crds(directory: Path) -> list[dict[str, Any]]:
    """The CRDs in ``directory``'s ``*.yaml`` files (sorted by name); refuses anything else, a CRD of another
    group, and a directory without any."""
    docs: list[dict[str, Any]] = []
    for path in sorted(directory.glob("*.yaml")):
        try:
            loaded = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except yaml.YAMLError as exc:
            raise CrdError(f"{path}: not YAML: {exc}") from None
        for doc in loaded:
            kind = doc.get("kind") if isinstance(doc, dict) else None
            if kind != "CustomResourceDefinition" or doc.get("apiVersion") != "apiextensions.k8s.io/v1":
                raise CrdError(f"{path}: expected only apiextensions.k8s.io/v1 CustomResourceDefinitions, found {kind}")
            group = doc.get("spec", {}).get("group")
            name = doc.get("metadata", {}).get("name", "")
            if group != GROUP or not name.endswith(f".{GROUP}"):
                raise CrdError(f"{path}: {name or '?'} is not a {GROUP} CRD; only filedrop's own are applied")
            docs.append(doc)
    if not docs:
        raise CrdError(f"no CRD in {directory} (*.yaml)")
    return sorted(docs, key=lambda d: str(d["metadata"]["name"]))


def _established(crd: dict[str, Any]) -> bool:
    conditions = {c.get("type"): c.get("status") for c in crd.get("status", {}).get("conditions", [])}
    accepted = crd.get("status", {}).get("acceptedNames", {}).get("kind")
    return conditions.get("Established") == "True" and accepted == crd["spec"]["names"]["kind"]


def apply_crds(api: _Api, docs: Iterable[dict[str, Any]], timeout: float = 120.0,
               clock: Callable[[], float] = time.monotonic, pause: Callable[[float], None] = time.sleep
               ) -> list[CrdResult]:
    """Replace each CRD by its document, then wait until every one is Established with its names accepted."""
    results = []
    for doc in docs:
        name = doc["metadata"]["name"]
        current = api.get_crd(name)
        if current is None:
            raise CrdError(f"CRD {name} does not exist: it is created by `helm install` (the chart's crds/), or "
                           f"`kubectl apply --server-side -f` the chart's crds/ directory")
        meta = current["metadata"]
        body = {
            "apiVersion": doc["apiVersion"], "kind": doc["kind"],
            "metadata": {"name": name, "resourceVersion": meta["resourceVersion"],
                         "labels": {**meta.get("labels", {}), **doc["metadata"].get("labels", {})},
                         "annotations": {**meta.get("annotations", {}), **doc["metadata"].get("annotations", {})}},
            "spec": doc["spec"],
        }
        after = api.replace_crd(name, body)
        changed = after["metadata"].get("generation") != meta.get("generation")
        results.append(CrdResult(name, changed, tuple(v["name"] for v in doc["spec"]["versions"] if v.get("served"))))
    deadline = clock() + timeout
    for r in results:
        while True:
            crd = api.get_crd(r.name)
            if crd is not None and _established(crd):
                break
            if clock() > deadline:
                raise CrdError(f"CRD {r.name} was replaced but is not Established after {timeout:.0f}s: "
                               f"{(crd or {}).get('status', {}).get('conditions')}")
            pause(0.5)
    return results
