"""The operator's work for one FileDrop: gather facts, ask :func:`filedrop.cluster.reconcile.step`, act.

Adapter layer (talks to the API server through :mod:`filedrop.cluster.kube` and to the warehouse through
:mod:`filedrop.warehouse.history`); kopf stays in :mod:`filedrop.cluster.handlers`, which only calls into here.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from filedrop.cluster import metrics
from filedrop.cluster.jobs import JobSettings, build_loader_job, job_name, job_state, spark_state
from filedrop.cluster.kube import Kube
from filedrop.cluster.reconcile import Facts, Limits, Outcome, Step, step
from filedrop.cluster.resources import REPLAY_ANNOTATION, TERMINAL_PHASES, now_iso, source_object
from filedrop.config import Settings
from filedrop.protocol import choose_engine, decide
from filedrop.routes import FileRoute, RouteError, route_for
from filedrop.spark.application import SparkJobConfig, build_spark_application
from filedrop.spark.sizing import DEFAULT_TIERS, Tier, tier_for, tiers_from_env
from filedrop.warehouse import connect, ensure_meta, history
from filedrop.warehouse.sql import ident

log = logging.getLogger(__name__)


def _env_int(name: str, default: int) -> int:
    return int(os.environ.get(name) or default)


@dataclass
class OperatorConfig:
    warehouse_url: str
    settings: Settings = field(default_factory=Settings)
    limits: Limits = field(default_factory=Limits)
    job: JobSettings = field(default_factory=JobSettings)
    #: SparkApplications for large files; None when no Spark image is configured (FILEDROP_SPARK_IMAGE)
    spark: SparkJobConfig | None = None
    spark_tiers: tuple[Tier, ...] = DEFAULT_TIERS

    @classmethod
    def from_env(cls) -> OperatorConfig:
        """``FILEDROP_*`` variables (the chart sets them); the warehouse URL comes from a Secret."""
        url = os.environ.get("FILEDROP_WAREHOUSE_URL")
        if not url:
            raise RuntimeError("FILEDROP_WAREHOUSE_URL is not set: the operator needs the warehouse")
        passthrough = {k: v for k, v in os.environ.items()
                       if k in ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "FILEDROP_STAGING_SCHEMA",
                                "FILEDROP_META_SCHEMA", "FILEDROP_SPARK_THRESHOLD_BYTES")}
        spark = None
        if os.environ.get("FILEDROP_SPARK_IMAGE"):
            spark = SparkJobConfig(
                image=os.environ["FILEDROP_SPARK_IMAGE"],
                namespace=os.environ.get("FILEDROP_NAMESPACE", "default"),
                service_account=os.environ.get("FILEDROP_SPARK_SERVICE_ACCOUNT", "filedrop-spark"),
                warehouse_secret=os.environ.get("FILEDROP_WAREHOUSE_SECRET", JobSettings.warehouse_secret),
                aws_secret=os.environ.get("FILEDROP_LOADER_ENV_SECRET") or None,
                s3_endpoint=os.environ.get("AWS_ENDPOINT_URL") or None,
                aws_region=os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1",
                routes_config_map=None)
        return cls(
            warehouse_url=url,
            spark=spark,
            spark_tiers=tiers_from_env(os.environ),
            limits=Limits(global_loads=_env_int("FILEDROP_MAX_LOADS", 4),
                          per_table=_env_int("FILEDROP_MAX_LOADS_PER_TABLE", 1),
                          max_attempts=_env_int("FILEDROP_MAX_ATTEMPTS", 4),
                          backoff_base_seconds=float(os.environ.get("FILEDROP_BACKOFF_SECONDS") or 10)),
            job=JobSettings(
                image=os.environ.get("FILEDROP_LOADER_IMAGE", JobSettings.image),
                service_account=os.environ.get("FILEDROP_LOADER_SERVICE_ACCOUNT", JobSettings.service_account),
                warehouse_secret=os.environ.get("FILEDROP_WAREHOUSE_SECRET", JobSettings.warehouse_secret),
                warehouse_secret_key=os.environ.get("FILEDROP_WAREHOUSE_SECRET_KEY", JobSettings.warehouse_secret_key),
                env_secret=os.environ.get("FILEDROP_LOADER_ENV_SECRET") or None,
                env=passthrough,
            ),
        )


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

    def release(self, key: str) -> None:
        with self._lock:
            self._running.pop(key, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._running)


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


@dataclass
class Result:
    """What the handler must do after :meth:`Controller.reconcile`."""

    status: dict[str, Any] = field(default_factory=dict)
    event: tuple[str, str, str] | None = None
    delay: float | None = None
    terminal: bool = False


class Controller:
    def __init__(self, cfg: OperatorConfig, kube: Kube) -> None:
        self.cfg = cfg
        self.kube = kube
        self.slots = Slots()

    # --- startup ------------------------------------------------------------------------------------
    def seed_slots(self, namespace: str | None = None) -> None:
        """Count the loads that were running when the operator (re)started."""
        for fd in self.kube.list_filedrops(namespace):
            st = fd.get("status") or {}
            if st.get("phase") == "Loading" and st.get("table"):
                self.slots.hold(_key(fd), st["table"])
        with connect(self.cfg.warehouse_url) as conn:
            ensure_meta(conn, self.cfg.settings)

    # --- facts ----------------------------------------------------------------------------------------
    def _route(self, fd: dict[str, Any]) -> tuple[FileRoute | None, str | None]:
        ns = fd["metadata"]["namespace"]
        routes, errors = self.kube.routes(ns)
        try:
            route = route_for(routes, fd["spec"]["bucket"], fd["spec"]["key"])
        except RouteError as exc:
            return None, str(exc)
        if route is None:
            msg = f"no FileRoute in namespace {ns} matches s3://{fd['spec']['bucket']}/{fd['spec']['key']}"
            if errors:
                msg += f" (invalid routes ignored: {'; '.join(errors)})"
            return None, msg
        return route, None

    def _job(self, fd: dict[str, Any]) -> tuple[str, str]:
        st = fd.get("status") or {}
        name, ns = st.get("job"), fd["metadata"]["namespace"]
        if not name:
            return "none", "no load job recorded"
        if st.get("engine") == "spark":
            return spark_state(self.kube.get_spark_application(ns, name))
        return job_state(self.kube.get_job(ns, name))

    def reconcile(self, fd: dict[str, Any]) -> Result:
        meta, spec = fd["metadata"], fd["spec"]
        st = fd.get("status") or {}
        phase = st.get("phase") or "Pending"
        key = _key(fd)
        replay = (meta.get("annotations") or {}).get(REPLAY_ANNOTATION, "")
        now = datetime.now(UTC)
        route: FileRoute | None = None
        route_error = None
        decision, reason = "load", ""
        outcome = None
        job = ("none", "")
        if phase in TERMINAL_PHASES and not (replay and replay != st.get("observedReplay", "")):
            return Result(terminal=True)
        if phase == "Pending" or phase == "Queued":
            route, route_error = self._route(fd)
        if phase == "Pending" and route is not None:
            obj = source_object(spec)
            with connect(self.cfg.warehouse_url) as conn:
                ensure_meta(conn, self.cfg.settings)
                loaded = history.loaded_versions(conn, self.cfg.settings.meta_schema, obj.bucket, obj.key)
            d = decide(obj, loaded, st.get("observedReplay", ""))
            # a duplicate of the latest loaded content may stop being one when a load now running ends (a
            # rollback racing the version before it): only the loader, holding the object's claim, decides
            decision, reason = (d.verdict, d.reason) if d.final else ("load", "")
        if phase == "Loading":
            job = self._job(fd)
            if job[0] in ("succeeded", "failed", "none"):
                with connect(self.cfg.warehouse_url) as conn:
                    row = history.latest_for_filedrop(conn, self.cfg.settings.meta_schema, meta["name"])
                # status.loadId is the outcome of an earlier attempt (or replay): not this attempt's
                if row and row["load_id"] != st.get("loadId"):
                    outcome = Outcome(status=row["status"], load_id=row["load_id"], rows_parsed=row["rows_parsed"],
                                      rows_loaded=row["rows_loaded"], rows_rejected=row["rows_rejected"],
                                      first_error=row["first_error"], message=row["message"],
                                      retryable=bool(row["retryable"]))
                if outcome is not None and outcome.status == "running":
                    # the job ended but its load row says running: the loader died; a retry cleans it up
                    outcome = None
        table = (route.spec.table if route else None) or st.get("table")
        total, for_table = self.slots.counts(key, table)
        facts = Facts(phase=phase, attempts=int(st.get("attempts") or 0), replay=replay,
                      observed_replay=st.get("observedReplay", ""), route=route.name if route else st.get("route"),
                      route_error=route_error, table=table, decision=decision, decision_reason=reason,
                      job_state=job[0], job_message=job[1], outcome=outcome,  # type: ignore[arg-type]
                      running_total=total, running_for_table=for_table,
                      next_attempt_at=_parse_time(st.get("nextAttemptAt")), now=now)
        if phase == "Queued" and route is None:
            facts = Facts(**{**facts.__dict__, "phase": "Pending"})  # the route went away: decide again
        s = step(facts, self.cfg.limits, now_iso())
        return self._act(fd, s, route)

    # --- acting ---------------------------------------------------------------------------------------
    def _act(self, fd: dict[str, Any], s: Step, route: FileRoute | None) -> Result:
        key = _key(fd)
        st = fd.get("status") or {}
        status = dict(s.status)
        if s.action == "create_job":
            assert route is not None
            if not self.slots.try_acquire(key, route.spec.table, self.cfg.limits):
                return Result(status={"message": "waiting for a load slot"}, delay=1.0)
            attempt = int(status["attempts"])
            engine = choose_engine(route.spec.engine, None, int(fd["spec"].get("size") or 0),
                                   self.cfg.settings.spark_threshold_bytes)
            replay = st.get("observedReplay", "")
            ns = fd["metadata"]["namespace"]
            if engine == "spark" and self.cfg.spark is not None:
                app = build_spark_application(
                    filedrop=fd, route=route.name, obj=source_object(fd["spec"]),
                    tier=tier_for(int(fd["spec"].get("size") or 0), self.cfg.spark_tiers),
                    config=self.cfg.spark, attempt=attempt, replay=replay,
                    route_json=json.dumps(route.model_dump(by_alias=True, exclude_none=True, mode="json"),
                                          separators=(",", ":")))
                self.kube.create_spark_application(ns, app)
                name = app["metadata"]["name"]
            else:
                engine = "direct"  # no Spark image configured: the light loader takes every size
                self.kube.create_job(ns, build_loader_job(fd, route, attempt, self.cfg.job, replay))
                name = job_name(fd["metadata"]["name"], attempt)
            status.update({"job": name, "engine": engine, "table": route.spec.table, "route": route.name})
            metrics.started(route.name)
            return Result(status=status, event=("Normal", "Loading", f"started job {status['job']} (attempt {attempt})"))
        new_phase = status.get("phase")
        if st.get("phase") == "Loading" and new_phase and new_phase != "Loading":
            self.slots.release(key)
        terminal = new_phase in TERMINAL_PHASES
        if terminal:
            metrics.finished(fd, status)
        return Result(status=status, event=s.event, delay=s.delay, terminal=terminal)

    def forget(self, fd: dict[str, Any]) -> None:
        self.slots.release(_key(fd))

    def refresh_route_status(self, namespace: str, route_name: str) -> None:
        """FileRoute status from the load history (the truth) and the FileDrops in flight."""
        with connect(self.cfg.warehouse_url) as conn:
            stats = {s.route: s for s in history.route_status(conn, self.cfg.settings.meta_schema)}
            last = conn.execute(
                f"SELECT key FROM {ident(self.cfg.settings.meta_schema)}.ingest_history WHERE route = %s "
                "AND status = 'loaded' ORDER BY finished_at DESC LIMIT 1", (route_name,)).fetchone()
        pending = sum(1 for fd in self.kube.list_filedrops(namespace)
                      if (fd.get("status") or {}).get("route") == route_name
                      and (fd.get("status") or {}).get("phase") in ("Pending", "Queued", "Loading"))
        s = stats.get(route_name)
        status: dict[str, Any] = {"filesPending": pending,
                                  "filesLoaded": s.loaded if s else 0, "filesFailed": s.failed if s else 0,
                                  "rowsLoaded": int(s.rows_loaded) if s else 0}
        if s and s.last_load:
            status["lastLoadedAt"] = s.last_load.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if last:
            status["lastLoadedKey"] = last[0]
        status["lastError"] = (s.last_error or "") if s else ""
        self.kube.patch_route_status(namespace, route_name, status)


def _key(fd: dict[str, Any]) -> str:
    return f"{fd['metadata'].get('namespace', '')}/{fd['metadata']['name']}"
