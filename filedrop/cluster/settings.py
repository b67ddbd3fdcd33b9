"""The operator's settings, all in one place: read once from its environment (the chart sets them). Pure.

Every number is checked when the operator starts; a bad value stops it with the variable's name
(``FILEDROP_MAX_LOADS must be an integer, got 'four'``) instead of failing later, somewhere else.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from filedrop.cluster.jobs import JobSettings
from filedrop.cluster.reconcile import Limits
from filedrop.config import Settings, env_int
from filedrop.spark.application import SparkJobConfig
from filedrop.spark.sizing import DEFAULT_TIERS, Tier, tiers_from_env

#: environment the loader Jobs get from the operator's own (never secrets: those come from Secrets)
LOADER_PASSTHROUGH = ("AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "FILEDROP_STAGING_SCHEMA",
                      "FILEDROP_META_SCHEMA", "FILEDROP_SPARK_THRESHOLD_BYTES", "FILEDROP_ATTACH_MIN_BYTES",
                      "FILEDROP_ATTACH_MAX_TABLES", "FILEDROP_LOG_FORMAT")


def env_float(name: str, default: float) -> float:
    """The number in environment variable ``name`` (``default`` when unset or empty)."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, got {raw!r}") from None


def _at_least(name: str, value: float, minimum: float) -> None:
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum:g}, got {value:g}")


def _int(name: str, default: int, minimum: int) -> int:
    value = env_int(name, default)
    _at_least(name, value, minimum)
    return value


def _float(name: str, default: float, minimum: float) -> float:
    value = env_float(name, default)
    _at_least(name, value, minimum)
    return value


def _cpu(name: str) -> str | None:
    """A Kubernetes CPU quantity (``250m``, ``0.5``, ``1``), or None when unset."""
    raw = os.environ.get(name) or None
    if raw is not None and not re.fullmatch(r"[0-9]+m|[0-9]+(\.[0-9]+)?", raw):
        raise ValueError(f"{name} must be a CPU quantity like 250m or 0.5, got {raw!r}")
    return raw


def _text(name: str, default: str) -> str:
    return os.environ.get(name) or default


@dataclass(frozen=True)
class OperatorConfig:
    warehouse_url: str
    settings: Settings = field(default_factory=Settings)
    limits: Limits = field(default_factory=Limits)
    job: JobSettings = field(default_factory=JobSettings)
    #: SparkApplications for large files; None when no Spark image is configured (FILEDROP_SPARK_IMAGE)
    spark: SparkJobConfig | None = None
    spark_tiers: tuple[Tier, ...] = DEFAULT_TIERS
    #: the one namespace watched (FILEDROP_NAMESPACE); None: every namespace
    namespace: str | None = None
    #: threads for the blocking work (API and warehouse calls) of all FileDrops together
    workers: int = 16
    #: how long a silent operator (one killed without saying goodbye) keeps the others paused (kopf peering)
    peering_lifetime: int = 60
    #: Prometheus metrics port; 0: none
    metrics_port: int = 9090
    #: the longest a waiting FileDrop goes without a look at its Job or queue, should a watch event be missed
    recheck_seconds: float = 60.0
    #: direct loads of files up to this many bytes run in the operator, without a pod (0: every load gets a Job)
    inline_max_bytes: int = 8 * 1024 * 1024
    #: at most this many of them at once (past it, a small file gets a Job)
    inline_loads: int = 4
    #: an inline load running longer than this is killed (and retried, as a failed attempt); longer than a
    #: loader's wait for another loader of the same object (FILEDROP_CLAIM_WAIT_SECONDS, 900)
    inline_deadline_seconds: float = 1200.0

    @classmethod
    def from_env(cls) -> OperatorConfig:
        """``FILEDROP_*`` variables; the warehouse URL comes from a Secret."""
        env = os.environ
        url = env.get("FILEDROP_WAREHOUSE_URL")
        if not url:
            raise RuntimeError("FILEDROP_WAREHOUSE_URL is not set: the operator needs the warehouse")
        warehouse_secret = _text("FILEDROP_WAREHOUSE_SECRET", JobSettings.warehouse_secret)
        spark = None
        if env.get("FILEDROP_SPARK_IMAGE"):
            spark = SparkJobConfig(
                image=env["FILEDROP_SPARK_IMAGE"],
                namespace=_text("FILEDROP_NAMESPACE", "default"),
                service_account=_text("FILEDROP_SPARK_SERVICE_ACCOUNT", "filedrop-spark"),
                warehouse_secret=warehouse_secret,
                aws_secret=env.get("FILEDROP_LOADER_ENV_SECRET") or None,
                s3_endpoint=env.get("AWS_ENDPOINT_URL") or None,
                aws_region=env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION") or "us-east-1",
                routes_config_map=None,
                core_request=_cpu("FILEDROP_SPARK_CORE_REQUEST"))
        return cls(
            warehouse_url=url,
            settings=Settings(),
            spark=spark,
            spark_tiers=tiers_from_env(env),
            limits=Limits(global_loads=_int("FILEDROP_MAX_LOADS", 4, 1),
                          per_table=_int("FILEDROP_MAX_LOADS_PER_TABLE", 1, 1),
                          max_attempts=_int("FILEDROP_MAX_ATTEMPTS", 4, 1),
                          backoff_base_seconds=_float("FILEDROP_BACKOFF_SECONDS", 10.0, 0.0)),
            job=JobSettings(
                image=_text("FILEDROP_LOADER_IMAGE", JobSettings.image),
                service_account=_text("FILEDROP_LOADER_SERVICE_ACCOUNT", JobSettings.service_account),
                warehouse_secret=warehouse_secret,
                warehouse_secret_key=_text("FILEDROP_WAREHOUSE_SECRET_KEY", JobSettings.warehouse_secret_key),
                env_secret=env.get("FILEDROP_LOADER_ENV_SECRET") or None,
                env={k: v for k, v in env.items() if k in LOADER_PASSTHROUGH},
            ),
            namespace=env.get("FILEDROP_NAMESPACE") or None,
            workers=_int("FILEDROP_OPERATOR_WORKERS", 16, 1),
            peering_lifetime=_int("FILEDROP_PEERING_LIFETIME", 60, 1),
            metrics_port=_int("FILEDROP_METRICS_PORT", 9090, 0),
            recheck_seconds=_float("FILEDROP_RECHECK_SECONDS", 60.0, 1.0),
            inline_max_bytes=_int("FILEDROP_INLINE_MAX_BYTES", cls.inline_max_bytes, 0),
            inline_loads=_int("FILEDROP_INLINE_LOADS", cls.inline_loads, 1),
            inline_deadline_seconds=_float("FILEDROP_INLINE_DEADLINE_SECONDS", cls.inline_deadline_seconds, 1.0),
        )
