"""The operator's work for one FileDrop: gather facts, ask :func:`filedrop.cluster.reconcile.step`, act.

Adapter layer: talks to the API server through a :class:`ClusterAPI` (:class:`filedrop.cluster.kube.Kube`) and
to the load history through a :class:`~filedrop.cluster.history.LoadHistory`; both are given, so tests give
in-memory ones. kopf stays in :mod:`filedrop.cluster.handlers`, and when to look again in
:mod:`filedrop.cluster.follow`.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from filedrop.cluster import metrics
from filedrop.cluster.conditions import condition, filedrop_ready, route_readiness
from filedrop.cluster.history import LoadHistory, WarehouseHistory
from filedrop.cluster.inline import InlineLoads
from filedrop.cluster.jobs import build_loader_job, job_name, job_state, spark_state
from filedrop.cluster.reconcile import Facts, JobState, Limits, Outcome, Step, step
from filedrop.cluster.resources import TERMINAL_PHASES, now_iso
from filedrop.cluster.settings import OperatorConfig
from filedrop.cluster.view import FileDropError, FileDropView
from filedrop.protocol import choose_engine, decide
from filedrop.routes import FileRoute, RouteError, route_for
from filedrop.spark.application import build_spark_application
from filedrop.spark.sizing import tier_for

log = logging.getLogger(__name__)


class ClusterAPI(Protocol):
    """What the controller does through the API server (:class:`filedrop.cluster.kube.Kube`)."""

    def list_filedrops(self, namespace: str | None = None) -> list[dict[str, Any]]: ...

    def patch_filedrop_status(self, namespace: str, name: str, status: dict[str, Any]) -> dict[str, Any]: ...

    def routes(self, namespace: str) -> tuple[list[FileRoute], list[str]]: ...

    def list_routes(self, namespace: str) -> list[dict[str, Any]]: ...

    def patch_route_status(self, namespace: str, name: str, status: dict[str, Any]) -> None: ...

    def get_job(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create_job(self, namespace: str, body: dict[str, Any]) -> bool: ...

    def get_spark_application(self, namespace: str, name: str) -> dict[str, Any] | None: ...

    def create_spark_application(self, namespace: str, body: dict[str, Any]) -> bool: ...


class Slots:
    """Loads in flight, by FileDrop, with their table: the concurrency limits' single source of truth.

    The operator runs as one replica (kopf peering, ``Recreate``), so an in-process registry is exact;
    it is rebuilt from the FileDrops in phase Loading when the operator starts.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[str, str] = {}  # "namespace/name" -> table

    def counts(self, key: str, table: str | None) -> tuple[int, int]:
        with self._lock:
            others = {k: t for k, t in self._running.items() if k != key}
            return len(others), sum(1 for t in others.values() if t == table)

    def try_acquire(self, key: str, table: str, limits: Limits) -> bool:
        with self._lock:
            if key in self._running:
                return True
            if len(self._running) >= limits.global_loads:
                return False
            if sum(1 for t in self._running.values() if t == table) >= limits.per_table:
                return False
            self._running[key] = table
            return True

    def hold(self, key: str, table: str) -> None:
        with self._lock:
            self._running[key] = table

    def release(self, key: str) -> bool:
        """Free the FileDrop's slot; True when it held one."""
        with self._lock:
            return self._running.pop(key, None) is not None

    def __len__(self) -> int:
        with self._lock:
            return len(self._running)


@dataclass
class Result:
    """What :meth:`Controller.reconcile` did, and when to look at the FileDrop again."""

    phase: str
    #: the status fields written (only those that changed)
    status: dict[str, Any] = field(default_factory=dict)
    #: a Kubernetes Event to post about the FileDrop: (Normal|Warning, reason, message)
    event: tuple[str, str, str] | None = None
    #: look again after this many seconds at the latest (0: at once); None: when something changes
    delay: float | None = None
    #: the FileDrop needs nothing more (until a new replay annotation)
    terminal: bool = False
    #: the FileDrop as the status patch left it (the API's answer); None when nothing was written
    body: dict[str, Any] | None = None
    #: a load slot was freed: FileDrops queued behind it can go
    released: bool = False


class Controller:
    def __init__(self, cfg: OperatorConfig, kube: ClusterAPI, history: LoadHistory | None = None,
                 inline: InlineLoads | None = None, in_flight: Callable[[str, str], int] | None = None,
                 observe: Callable[[str, dict[str, Any]], None] = lambda key, body: None) -> None:
        self.cfg = cfg
        self.kube = kube
        self.history: LoadHistory = history or WarehouseHistory(cfg.warehouse_url, cfg.settings)
        self.slots = Slots()
        #: small files' loads in the operator's own processes (None: every direct load gets a Job)
        self.inline = inline
        self._declined_before = False
        #: a route's FileDrops not yet final, as the operator's watch has them (None: listed from the API server)
        self.in_flight = in_flight
        #: told of every FileDrop as a status patch left it (the watch that feeds ``in_flight`` trails it)
        self.observe = observe

    # --- startup ------------------------------------------------------------------------------------
    def start(self) -> None:
        """Count the loads that were running when the operator (re)started; prepare the bookkeeping schema."""
        for body in self.kube.list_filedrops(self.cfg.namespace):
            try:
                fd = FileDropView.parse(body)
            except FileDropError as exc:
                log.warning("ignoring a FileDrop the operator cannot read: %s", exc)
                continue
            if fd.status.phase == "Loading" and fd.status.table:
                self.slots.hold(fd.key, fd.status.table)
        self.history.prepare()

    # --- facts ----------------------------------------------------------------------------------------
    def _route(self, fd: FileDropView) -> tuple[FileRoute | None, str | None]:
        routes, errors = self.kube.routes(fd.namespace)
        try:
            route = route_for(routes, fd.spec.bucket, fd.spec.key)
        except RouteError as exc:
            return None, str(exc)
        if route is None:
            msg = f"no FileRoute in namespace {fd.namespace} matches s3://{fd.spec.bucket}/{fd.spec.key}"
            if errors:
                msg += f" (invalid routes ignored: {'; '.join(errors)})"
            return None, msg
        return route, None

    def _job(self, fd: FileDropView) -> tuple[JobState | Literal["declined"], str]:
        name = fd.status.job
        if not name:
            return "none", "no load job recorded"
        if fd.status.engine == "spark":
            return spark_state(self.kube.get_spark_application(fd.namespace, name))
        if fd.status.engine == "inline":
            if self.inline is None:
                return "none", "this operator does not load inline"
            return self.inline.state(fd.key, name)
        return job_state(self.kube.get_job(fd.namespace, name))

    def _outcome(self, fd: FileDropView) -> Outcome | None:
        """This attempt's outcome in history; None while there is none (or the loader died mid-load)."""
        outcome = self.history.latest_outcome(fd.name)
        # status.loadId is the outcome of an earlier attempt (or replay): not this attempt's
        if outcome is None or outcome.load_id == fd.status.load_id:
            return None
        # the job ended but its load row says running: the loader died; a retry cleans it up
        return None if outcome.status == "running" else outcome

    def _facts(self, fd: FileDropView, now: datetime, route: str | None, table: str | None) -> Facts:
        total, for_table = self.slots.counts(fd.key, table)
        return Facts(phase=fd.status.phase, attempts=fd.status.attempts, replay=fd.replay,
                     observed_replay=fd.status.observed_replay, route=route, table=table,
                     running_total=total, running_for_table=for_table,
                     next_attempt_at=fd.status.next_attempt_at, now=now)

    def reconcile(self, fd: FileDropView) -> Result:
        """Take the FileDrop's next step, write its status, and say when to look again."""
        if fd.final:
            return Result(phase=fd.status.phase, terminal=True)
        now = datetime.now(UTC)
        phase = fd.status.phase
        facts = self._facts(fd, now, fd.status.route, fd.status.table)
        if phase == "Queued":
            # cheap facts first: a FileDrop waiting for its backoff or for a slot costs no API call
            s = step(facts, self.cfg.limits, now_iso())
            if s.action == "wait":
                return self._act(fd, s, None)
        route: FileRoute | None = None
        if phase in ("Pending", "Queued"):
            route, route_error = self._route(fd)
            table = route.spec.table if route else fd.status.table
            facts = replace(self._facts(fd, now, route.name if route else None, table), route_error=route_error)
            if phase == "Queued" and route is None:
                facts = replace(facts, phase="Pending")  # the route went away: decide again
        if phase == "Pending" and route is not None:
            d = decide(fd.spec.source_object(), self.history.loaded_versions(fd.spec.bucket, fd.spec.key),
                       fd.status.observed_replay)
            # a duplicate of the latest loaded content may stop being one when a load now running ends (a
            # rollback racing the version before it): only the loader, holding the object's claim, decides
            if d.final:
                facts = replace(facts, decision=d.verdict, decision_reason=d.reason)
        if phase == "Loading":
            state, message = self._job(fd)
            if state == "declined":  # the inline load did not start loading: a Job takes this attempt
                return self._hand_to_job(fd, message)
            outcome = self._outcome(fd) if state in ("succeeded", "failed", "none") else None
            facts = replace(facts, job_state=state, job_message=message, outcome=outcome)
        return self._act(fd, step(facts, self.cfg.limits, now_iso()), route)

    # --- acting ---------------------------------------------------------------------------------------
    def _start_load(self, fd: FileDropView, route: FileRoute, attempt: int) -> tuple[str, str, bool]:
        """Create the attempt's Job or SparkApplication: (engine, its name, False when it existed already)."""
        engine = choose_engine(route.spec.engine, None, fd.spec.size, self.cfg.settings.spark_threshold_bytes)
        replay = fd.status.observed_replay
        if engine == "spark" and self.cfg.spark is not None:
            app = build_spark_application(
                filedrop=fd.manifest(), route=route.name, obj=fd.spec.source_object(),
                tier=tier_for(fd.spec.size, self.cfg.spark_tiers), config=self.cfg.spark, attempt=attempt,
                replay=replay, route_json=json.dumps(route.model_dump(by_alias=True, exclude_none=True, mode="json"),
                                                     separators=(",", ":")))
            created = self.kube.create_spark_application(fd.namespace, app)
            return "spark", str(app["metadata"]["name"]), created
        # no Spark image configured: the light loader takes every size
        job = build_loader_job(fd.manifest(), route, attempt, self.cfg.job, replay)
        return "direct", job_name(fd.name, attempt), self.kube.create_job(fd.namespace, job)

    def _start_inline(self, fd: FileDropView, route: FileRoute, attempt: int,
                      status: dict[str, Any]) -> Result | None:
        """Load a small file in the operator (None: not this one, a loader Job takes it). Its status is
        written before the load starts: a try of this step that fails after that finds the load recorded
        (as ``engine: inline``) instead of choosing again and starting a Job beside it."""
        if self.inline is None or not self.inline.fits(fd.spec.size):
            return None
        if choose_engine(route.spec.engine, None, fd.spec.size, self.cfg.settings.spark_threshold_bytes) != "direct":
            return None
        name = job_name(fd.name, attempt)
        if self.inline.running() >= self.inline.max_running or self.kube.get_job(fd.namespace, name) is not None:
            return None  # full; or an earlier try of this step created the Job (and stopped before its status)
        status.update({"job": name, "engine": "inline", "table": route.spec.table, "route": route.name})
        try:
            result = self._write(fd, Result(phase="Loading"), status)
        except Exception as exc:
            if getattr(exc, "status", None) != 422:
                raise
            # the FileDrop CRD predates engine 'inline' (a `helm upgrade` does not update CRDs): Jobs, as before
            log.error("the FileDrop CRD does not accept status.engine 'inline' (%s): small files go to loader Jobs "
                      "until the CRDs are upgraded (docs/operations.md, 'Upgrading the CRDs')", exc)
            self.inline = None
            for key in ("job", "engine"):
                status.pop(key)
            return None
        started = self.inline.start(fd.key, name, route, fd.spec.source_object(), fd.status.observed_replay)
        if started == "full":  # others took the places meanwhile: a Job loads it
            return self._hand_to_job(fd if result.body is None else FileDropView.parse(result.body),
                                     "the operator's inline loads were all busy")
        result.event = ("Normal", "Loading", f"loading in the operator as {name} (attempt {attempt})")
        # an inline load from before (an earlier try of this step) may have ended: look at it at once
        result.delay = None if started == "started" else 0.0
        return result

    def _hand_to_job(self, fd: FileDropView, why: str) -> Result:
        """The inline load of this attempt declined (or could not start): the same attempt becomes a loader Job."""
        route, error = self._route(fd)
        if route is None:
            raise RuntimeError(f"FileDrop {fd.key}: its inline load declined ({why}) and {error}")
        if not self._declined_before:
            log.warning("a small file goes to a loader Job: %s (loading small files in the operator needs S3 read "
                        "access for its ServiceAccount; operator.inlineMaxBytes=0 turns it off)", why)
            self._declined_before = True
        attempt = fd.status.attempts
        name = job_name(fd.name, attempt)
        created = self.kube.create_job(fd.namespace, build_loader_job(fd.manifest(), route, attempt, self.cfg.job,
                                                                      fd.status.observed_replay))
        if self.inline is not None:
            self.inline.forget(fd.key, fd.status.job)
        status = self._with_ready(fd, {"engine": "direct", "job": name,
                                       "message": f"loading (attempt {attempt}) with a loader Job: {why}"}, "Loading")
        result = Result(phase="Loading", event=("Normal", "Loading", f"started job {name} (attempt {attempt}): {why}"),
                        delay=None if created else 0.0)
        return self._write(fd, result, status)

    @staticmethod
    def _with_ready(fd: FileDropView, status: dict[str, Any], reason: str | None) -> dict[str, Any]:
        """``status`` with the FileDrop's Ready condition for the phase and message it sets."""
        if reason is None:
            return status
        phase = status.get("phase") or fd.status.phase
        message = status.get("message") or fd.status.message or phase
        ready = filedrop_ready(phase, reason, message, fd.generation, fd.raw_status.get("conditions"), now_iso())
        return {**status, "conditions": [ready]}

    def _act(self, fd: FileDropView, s: Step, route: FileRoute | None) -> Result:
        status = self._with_ready(fd, dict(s.status), s.reason)
        event = s.event
        delay = s.delay
        if s.action == "create_job":
            assert route is not None
            if not self.slots.try_acquire(fd.key, route.spec.table, self.cfg.limits):
                waiting = self._with_ready(fd, {"message": "waiting for a load slot"}, "WaitingForLoadSlot")
                return self._write(fd, Result(phase=fd.status.phase), waiting)
            attempt = int(status["attempts"])
            inline = self._start_inline(fd, route, attempt, status)
            if inline is not None:
                return inline
            engine, name, created = self._start_load(fd, route, attempt)
            # a Job of that name from before (an earlier try of this step, or of an earlier replay) may have
            # ended long ago: no event will say so, so look at it at once
            delay = None if created else 0.0
            status.update({"job": name, "engine": engine, "table": route.spec.table, "route": route.name})
            event = ("Normal", "Loading", f"started job {name} (attempt {attempt})")
        new_phase = status.get("phase") or fd.status.phase
        released = fd.status.phase == "Loading" and new_phase != "Loading" and self.slots.release(fd.key)
        if fd.status.phase == "Loading" and new_phase != "Loading" and fd.status.engine == "inline" and self.inline:
            self.inline.forget(fd.key, fd.status.job)
        if new_phase != fd.status.phase and new_phase in ("Pending", "Queued") and delay is None:
            delay = 0.0  # newly Pending (a replay) or Queued: the next step is due now
        result = Result(phase=new_phase, event=event, delay=delay, terminal=new_phase in TERMINAL_PHASES,
                        released=released)
        result = self._write(fd, result, status)
        if result.terminal and "phase" in status:
            metrics.finished(fd, status)
            self._refresh_route_status(fd.namespace, status.get("route") or fd.status.route)
        return result

    def _write(self, fd: FileDropView, result: Result, status: Mapping[str, Any]) -> Result:
        """Patch what changes in the FileDrop's status (nothing at all when nothing does)."""
        changes = fd.changes(status)
        if changes:
            result.status = changes
            result.body = self.kube.patch_filedrop_status(fd.namespace, fd.name, changes)
            self.observe(fd.key, result.body)
        return result

    def forget(self, key: str) -> bool:
        """A FileDrop was deleted: stop its inline load, free its slot (True when it held one)."""
        if self.inline is not None:
            self.inline.cancel(key)
        return self.slots.release(key)

    def _refresh_route_status(self, namespace: str, route: str | None) -> None:
        if not route:
            return
        try:
            self.refresh_route_status(namespace, route)
        except Exception as exc:  # noqa: BLE001 - the next final FileDrop of the route refreshes it again
            log.warning("could not refresh the status of FileRoute %s/%s: %s", namespace, route, exc)

    def refresh_route_status(self, namespace: str, route: str) -> None:
        """FileRoute status from the load history (the truth) and the FileDrops in flight."""
        figures = self.history.route_figures(route)
        if self.in_flight is not None:  # no list of every FileDrop after each final one (N lists of N objects)
            pending = self.in_flight(namespace, route)
        else:
            pending = 0
            for body in self.kube.list_filedrops(namespace):
                st = body.get("status") or {}
                pending += st.get("route") == route and st.get("phase") in ("Pending", "Queued", "Loading")
        self.kube.patch_route_status(namespace, route, figures.status(pending))

    def validate_routes(self, namespace: str) -> list[str]:
        """Each FileRoute's Ready condition (valid, no table conflict, no overlap: judged over the namespace's
        routes together) and ``observedGeneration``, patched where they change; the names patched."""
        objects = self.kube.list_routes(namespace)
        verdicts = route_readiness(objects)
        now = now_iso()
        patched = []
        for obj in objects:
            name = str(obj["metadata"]["name"])
            generation = int(obj["metadata"].get("generation") or 0)
            ok, reason, message = verdicts[name]
            status = obj.get("status") or {}
            ready = condition(ok, reason, message, generation, status.get("conditions"), now)
            if status.get("conditions") != [ready] or status.get("observedGeneration") != generation:
                self.kube.patch_route_status(namespace, name, {"conditions": [ready], "observedGeneration": generation})
                patched.append(name)
                if not ok:
                    log.warning("FileRoute %s/%s is not ready (%s): %s", namespace, name, reason, message)
        return patched
