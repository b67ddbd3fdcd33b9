"""kopf handlers of ``filedrop operator``: thin — wire kopf's objects and events to the controller.

All decisions live in :mod:`filedrop.cluster.reconcile` (pure), the I/O in :mod:`filedrop.cluster.controller`,
and when to look again in :mod:`filedrop.cluster.follow`. The operator's state (controller, settings, the
followers' wake-ups) lives in kopf's ``memo``, made by the startup handler.

- every FileDrop with work left has a follower (a kopf daemon, started and stopped by kopf as the FileDrop
  opens and becomes final, so final FileDrops carry no finalizer); it sleeps while its FileDrop waits;
- watch events of the loader Jobs and SparkApplications wake the follower of their FileDrop when they end;
- a FileDrop's own events wake its follower when a replay is asked for, and free its load slot when deleted.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import kopf

from filedrop.cluster import metrics
from filedrop.cluster.controller import Controller, Result
from filedrop.cluster.follow import Wakeups, follow
from filedrop.cluster.inline import InlineLoads
from filedrop.cluster.jobs import job_state, spark_state
from filedrop.cluster.kube import SPARK, Kube
from filedrop.cluster.resources import (
    FILEDROP_LABEL,
    FILEDROPS,
    FILEROUTES,
    GROUP,
    REPLAY_ANNOTATION,
    TERMINAL_PHASES,
    VERSION,
)
from filedrop.cluster.settings import OperatorConfig

log = logging.getLogger(__name__)
LOADERS = {FILEDROP_LABEL: kopf.PRESENT}


@dataclass(frozen=True)
class Operator:
    """What the handlers share, kept in kopf's ``memo``."""

    config: OperatorConfig
    controller: Controller
    wakeups: Wakeups
    #: kopf's settings: its executor runs the blocking calls (``settings.execution.max_workers`` threads)
    settings: kopf.OperatorSettings
    #: the FileDrops and FileRoutes as watched: the metrics' gauges are computed from it
    backlog: metrics.Backlog


def _operator(memo: kopf.Memo) -> Operator:
    op = memo.get("operator")
    if not isinstance(op, Operator):
        raise RuntimeError("the operator has not started (its startup handler did not run)")
    return op


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    try:
        cfg = OperatorConfig.from_env()
    except (RuntimeError, ValueError) as exc:  # a setting is missing or wrong: retrying cannot help
        raise kopf.PermanentError(f"the operator's settings: {exc}") from None
    # Progress and diff-base in annotations: the CRD's status schema stays strict.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=GROUP)
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 60
    settings.execution.max_workers = cfg.workers
    settings.peering.lifetime = cfg.peering_lifetime
    # a follower told to stop (its FileDrop final) ends within milliseconds: wait for that, rather than
    # touching the object later to come back and check
    settings.background.instant_exit_timeout = 1.0
    loop = asyncio.get_running_loop()
    wakeups = Wakeups()
    inline = None
    if cfg.inline_max_bytes:
        def wake_from_thread(key: str) -> None:  # an inline load ended: its follower looks at once
            loop.call_soon_threadsafe(wakeups.wake, key)  # RuntimeError once the loop closed: InlineLoads ignores it

        inline = InlineLoads(cfg.warehouse_url, cfg.inline_max_bytes, cfg.inline_loads, cfg.inline_deadline_seconds,
                             wake_from_thread)
        await asyncio.to_thread(inline.warm)
    backlog = metrics.Backlog()
    controller = Controller(cfg, Kube(), inline=inline, in_flight=backlog.in_flight, observe=backlog.filedrop)
    await asyncio.to_thread(controller.start)
    memo["operator"] = Operator(cfg, controller, wakeups, settings, backlog)
    if cfg.metrics_port:
        metrics.serve(cfg.metrics_port, backlog)


@kopf.on.cleanup()
async def cleanup(memo: kopf.Memo, **_: Any) -> None:
    """The operator stops: the loads it runs itself are killed (rolled back; the next operator retries them)."""
    op = memo.get("operator")
    if isinstance(op, Operator) and op.controller.inline is not None:
        await asyncio.to_thread(op.controller.inline.stop)


def _key(namespace: str | None, name: str | None) -> str:
    return f"{namespace or ''}/{name or ''}"


def _replay_requested(body: kopf.Body) -> bool:
    replay = body.metadata.annotations.get(REPLAY_ANNOTATION, "")
    return bool(replay) and replay != body.status.get("observedReplay", "")


def _open(body: kopf.Body, **_: Any) -> bool:
    """Work left: not final, or a new replay asked for (kopf follows the FileDrop while this holds)."""
    return body.status.get("phase") not in TERMINAL_PHASES or _replay_requested(body)


# A follower exists only while its FileDrop is open: kopf holds a finalizer on every FileDrop that has a
# daemon, and a final FileDrop must delete without the operator (a namespace or `helm uninstall` would
# otherwise hang while the operator is down). The follower writes the final phase itself and is asleep when
# kopf stops it, so it ends within ``instant_exit_timeout``; a replay annotated after that starts a new one.
@kopf.daemon(GROUP, VERSION, FILEDROPS, when=_open, cancellation_backoff=10.0, cancellation_timeout=10.0)
async def follower(body: kopf.Body, memo: kopf.Memo, stopped: kopf.DaemonStopped, **_: Any) -> None:
    """Take the FileDrop through its phases (queue, job, outcome) until it is final; sleep while it waits."""
    op = _operator(memo)
    loop = asyncio.get_running_loop()

    def execute(call: Callable[[], Result]) -> asyncio.Future[Result]:
        return loop.run_in_executor(op.settings.execution.executor, call)

    def post(event: tuple[str, str, str]) -> None:
        # kopf.event posts whatever settings.posting.level says (that level only filters log lines)
        kopf.event(body, type=event[0], reason=event[1], message=event[2])

    await follow(_key(body.metadata.namespace, body.metadata.name), lambda: body, op.controller, op.wakeups,
                 stopped, execute, post, op.config.recheck_seconds)


@kopf.on.event(GROUP, VERSION, FILEDROPS)
async def filedrop_seen(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Every FileDrop event updates the backlog the metrics' gauges are computed from."""
    key = _key(body.metadata.namespace, body.metadata.name)
    _operator(memo).backlog.filedrop(key, None if type == "DELETED" else body)


@kopf.on.event(GROUP, VERSION, FILEROUTES)
async def fileroute_seen(type: str, body: kopf.Body, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """A FileRoute changed (or went): its last load updates the staleness gauge, and the namespace's routes
    are judged again (a conflict involves two routes), their Ready conditions patched where they change."""
    op = _operator(memo)
    namespace = body.metadata.namespace or ""
    op.backlog.fileroute(namespace, body.metadata.name or "", None if type == "DELETED" else body)
    if type != "DELETED":
        metrics.route_seen(body.metadata.name or "")
        # a status-only change (the figures written after every final FileDrop) changes no verdict
        judged = body.status.get("observedGeneration") == body.metadata.get("generation")
        if judged and body.status.get("conditions"):
            return
    loop = asyncio.get_running_loop()
    try:
        await loop.run_in_executor(op.settings.execution.executor, op.controller.validate_routes, namespace)
    except Exception as exc:  # noqa: BLE001 - the next event of any route judges them again
        logger.warning(f"could not update the FileRoutes' conditions in {namespace}: {exc}")


def _gone_or_replayed(type: str, body: kopf.Body, **_: Any) -> bool:
    return type == "DELETED" or _replay_requested(body)


@kopf.on.event(GROUP, VERSION, FILEDROPS, when=_gone_or_replayed)
async def filedrop_event(type: str, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A deleted FileDrop frees its load slot; a replay asked for wakes its follower."""
    op = _operator(memo)
    key = _key(body.metadata.namespace, body.metadata.name)
    if type == "DELETED":
        if op.controller.forget(key):
            op.wakeups.wake_queued()
    else:
        op.wakeups.wake(key)


def _job_over(type: str, body: kopf.Body, **_: Any) -> bool:
    return type == "DELETED" or job_state(body)[0] != "running"


def _application_over(type: str, body: kopf.Body, **_: Any) -> bool:
    return type == "DELETED" or spark_state(body)[0] != "running"


def _wake_owner(memo: kopf.Memo, body: kopf.Body) -> None:
    _operator(memo).wakeups.wake(_key(body.metadata.namespace, body.metadata.labels.get(FILEDROP_LABEL)))


@kopf.on.event("batch", "v1", "jobs", labels=LOADERS, when=_job_over)
async def loader_job_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A loader Job ended (or went): its FileDrop's follower looks at once."""
    _wake_owner(memo, body)


@kopf.on.event(*SPARK, "sparkapplications", labels=LOADERS, when=_application_over)
async def spark_application_event(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """The same for a SparkApplication."""
    _wake_owner(memo, body)
