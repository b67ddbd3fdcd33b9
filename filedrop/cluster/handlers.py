"""kopf handlers of ``filedrop operator``: thin — read the object, call the controller, patch.

All decisions live in :mod:`filedrop.cluster.reconcile` (pure) and the I/O in :mod:`filedrop.cluster.controller`.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import kopf

from filedrop.cluster import metrics
from filedrop.cluster.controller import Controller, OperatorConfig
from filedrop.cluster.kube import Kube
from filedrop.cluster.resources import FILEDROPS, GROUP, TERMINAL_PHASES, VERSION

log = logging.getLogger(__name__)
_controller: Controller | None = None


def controller() -> Controller:
    assert _controller is not None, "the operator has not started"
    return _controller


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
    global _controller
    # Progress and diff-base in annotations: the CRD's status schema stays strict.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60
    settings.execution.max_workers = int(os.environ.get("FILEDROP_OPERATOR_WORKERS", "16"))
    # How long a silent operator (e.g. one killed without saying goodbye) keeps the others paused.
    settings.peering.lifetime = int(os.environ.get("FILEDROP_PEERING_LIFETIME", "60"))
    _controller = Controller(OperatorConfig.from_env(), Kube())
    _controller.seed_slots(os.environ.get("FILEDROP_NAMESPACE") or None)
    port = int(os.environ.get("FILEDROP_METRICS_PORT", "9090"))
    if port:
        metrics.serve(port)


def _not_final(status: dict[str, Any], annotations: dict[str, Any], **_: Any) -> bool:
    replay = annotations.get(f"{GROUP}/replay", "")
    return status.get("phase") not in TERMINAL_PHASES or bool(replay and replay != status.get("observedReplay", ""))


def _apply(body: kopf.Body, patch: kopf.Patch) -> None:
    fd = {"metadata": dict(body.metadata), "spec": dict(body.spec), "status": dict(body.status)}
    fd["metadata"]["namespace"] = body.metadata.namespace
    result = controller().reconcile(fd)
    if result.status:
        patch.status.update(result.status)
    if result.event:
        kind, reason, message = result.event
        # kopf.event posts whatever settings.posting.level says (that level only filters log lines)
        kopf.event(body, type=kind, reason=reason, message=message)
    if result.terminal and result.status:
        route = result.status.get("route") or body.status.get("route")
        if route:
            controller().refresh_route_status(body.metadata.namespace, route)


@kopf.on.create(GROUP, VERSION, FILEDROPS)
@kopf.on.resume(GROUP, VERSION, FILEDROPS, when=_not_final)
@kopf.on.field(GROUP, VERSION, FILEDROPS, field="metadata.annotations", when=_not_final)
def kick(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """React at once to a new FileDrop, a restart, or a replay annotation."""
    _apply(body, patch)


@kopf.timer(GROUP, VERSION, FILEDROPS, interval=1.0, when=_not_final)
def follow(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    """Advance a FileDrop through its phases (queue, job, outcome) until it is final."""
    _apply(body, patch)


@kopf.on.delete(GROUP, VERSION, FILEDROPS, optional=True)
def deleted(body: kopf.Body, **_: Any) -> None:
    fd = {"metadata": {"namespace": body.metadata.namespace, "name": body.metadata.name}}
    controller().forget(fd)
