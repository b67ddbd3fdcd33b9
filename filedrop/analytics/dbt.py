"""dbt, described and run: the connection a profile reads, the command lines, the in-process runner.

dbt runs in-process through its Python entry point (``dbt.cli.main.dbtRunner``); its own console output
is switched off and its log file, ``target/`` and partial-parse state live under ``FILEDROP_HOME/dbt``,
never in the project. The connection reaches ``dbt_project/profiles.yml`` through environment variables only
(no secret is written to a file).

The helpers (:func:`connection_env`, :func:`dbt_args`, :func:`dbt_vars`) describe a run without doing
it, so other runtimes (the Argo workflows) build the same command lines.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from filedrop.analytics import dims
from filedrop.config import Settings
from filedrop.warehouse.client import conninfo

log = logging.getLogger(__name__)

#: Connection parameters profiles.yml reads, by libpq keyword.
_CONN_ENV = {
    "host": "FILEDROP_PG_HOST",
    "port": "FILEDROP_PG_PORT",
    "user": "FILEDROP_PG_USER",
    "dbname": "FILEDROP_PG_DATABASE",
    "sslmode": "FILEDROP_PG_SSLMODE",
}
#: dbt scrubs the values of DBT_ENV_SECRET_* variables from its logs.
PASSWORD_ENV = "DBT_ENV_SECRET_PG_PASSWORD"
#: libpq parameters of a warehouse URL that the dbt profile cannot carry.
_IGNORED_PARAMS = {"application_name", "connect_timeout", "fallback_application_name", "client_encoding"}

TARGETS = ("local", "prod")


class TransformError(RuntimeError):
    """The transform cannot run as configured (no dbt project, bad dates, unsupported URL)."""


def _default_project_dir() -> Path:
    """The dbt project shipped in the package (``filedrop/dbt_project``): in a wheel's install as in a checkout."""
    project = resources.files("filedrop").joinpath("dbt_project")
    if not isinstance(project, Path):  # installed as files (not zipped): dbt needs a real directory
        raise TransformError(f"the packaged dbt project is not a directory ({project}); set FILEDROP_DBT_PROJECT_DIR")
    return project


@dataclass(frozen=True)
class TransformConfig:
    """Where the dbt project is, where its state goes, and the schema names it reads and writes."""

    project_dir: Path
    state_dir: Path  # target/ and logs/ go here
    docs_dir: Path
    staging_schema: str = "staging"
    analytics_schema: str = "analytics"
    if_common_schema: str = "if_common"
    #: ``local`` builds the if_common dimensions; ``prod`` only reads them (they exist already).
    target: str = "local"
    holiday_country: str = dims.DEFAULT_COUNTRY
    threads: int = 4

    @classmethod
    def from_settings(cls, settings: Settings) -> TransformConfig:
        env = os.environ
        target = env.get("FILEDROP_DBT_TARGET", "local")
        if target not in TARGETS:
            raise TransformError(f"FILEDROP_DBT_TARGET must be one of {', '.join(TARGETS)}, not {target!r}")
        return cls(
            project_dir=Path(env.get("FILEDROP_DBT_PROJECT_DIR") or _default_project_dir()).expanduser(),
            state_dir=settings.home / "dbt",
            docs_dir=settings.home / "docs",
            staging_schema=settings.staging_schema,
            analytics_schema=env.get("FILEDROP_ANALYTICS_SCHEMA", "analytics"),
            if_common_schema=env.get("FILEDROP_IF_COMMON_SCHEMA", "if_common"),
            target=target,
            holiday_country=dims.holiday_country(),
            threads=int(env.get("FILEDROP_DBT_THREADS", "4")),
        )

    @property
    def builds_if_common(self) -> bool:
        return self.target != "prod"

    @property
    def profiles_dir(self) -> Path:
        return Path(os.environ.get("DBT_PROFILES_DIR") or self.project_dir)

    @property
    def target_path(self) -> Path:
        return self.state_dir / "target"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "logs"


# --- pure: what a run is -------------------------------------------------------------------------

def parse_date(value: str | date | None, what: str) -> date:
    """``None`` or ``""`` (what Argo substitutes for an unset parameter) is today; else ``YYYY-MM-DD``."""
    if value is None or value == "":
        return date.today()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise TransformError(f"{what} must be a date YYYY-MM-DD, got {value!r}") from None


#: the run's times, in the order they decide its day, with the step options that carry them
_RUN_TIMES = (("scheduled time", "--scheduled-time"), ("creation time", "--created-time"))


def run_time(scheduled_time: str | None, created_time: str | None) -> tuple[str, str] | None:
    """Which of a workflow run's times gives its day, and its value: the scheduled time (a run the CronWorkflow
    started), else the creation time; ``None`` when neither is given. Argo leaves ``{{workflow.scheduledTime}}`` as
    it is in a run nobody scheduled: such a value, like an empty one, is "not given"."""
    for (what, _option), value in zip(_RUN_TIMES, (scheduled_time, created_time), strict=True):
        if value and not value.startswith("{{"):
            return what, value
    return None


def run_day(scheduled_time: str | None, created_time: str | None) -> date | None:
    """The day a workflow run is for: the date of :func:`run_time` in this process's timezone (the step's
    ``TZ``); ``None`` when neither time is given.

    Every step of one run gets the same two times, so a run that crosses midnight still builds one day. A time
    without a UTC offset is refused (it would name no moment)."""
    given = run_time(scheduled_time, created_time)
    if given is None:
        return None
    what, value = given
    option = dict(_RUN_TIMES)[what]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise TransformError(f"{option} must be a time like 2026-12-07T06:00:00Z, got {value!r}") from None
    if moment.tzinfo is None:
        raise TransformError(f"{option} must say its UTC offset (e.g. a trailing Z), got {value!r}")
    return moment.astimezone().date()


def connection_env(url: str) -> dict[str, str]:
    """The environment profiles.yml reads, from a PostgreSQL URL or conninfo string.

    Parameters the URL leaves out fall back to libpq's variables (``PGHOST`` ...) and defaults. A
    password in the URL goes to a ``DBT_ENV_SECRET_`` variable; without one, whatever the environment
    has is used: ``DBT_ENV_SECRET_PG_PASSWORD`` (e.g. from a Kubernetes Secret), else libpq's
    ``PGPASSWORD`` or ``~/.pgpass``.
    """
    try:
        params = {k: str(v) for k, v in conninfo(url).items() if v is not None}
    except ValueError as exc:
        raise TransformError(f"cannot read the warehouse URL: {exc}") from None
    unsupported = sorted(set(params) - set(_CONN_ENV) - {"password"} - _IGNORED_PARAMS)
    if unsupported:
        raise TransformError(f"the warehouse URL has parameter(s) dbt's profile cannot use: {', '.join(unsupported)}")
    if "," in params.get("host", ""):
        raise TransformError("the warehouse URL names several hosts; dbt connects to one")
    defaults = {
        "host": os.environ.get("PGHOST", "127.0.0.1"),
        "port": os.environ.get("PGPORT", "5432"),
        "user": os.environ.get("PGUSER", "postgres"),
        "sslmode": os.environ.get("PGSSLMODE", "prefer"),
    }
    defaults["dbname"] = os.environ.get("PGDATABASE", params.get("user", defaults["user"]))
    env = {var: params.get(key) or defaults[key] for key, var in _CONN_ENV.items()}
    if params.get("password"):
        env[PASSWORD_ENV] = params["password"]
    return env


def dbt_vars(as_of: date, ingestion_date: date) -> dict[str, str]:
    return {"as_of_date": as_of.isoformat(), "ingestion_date": ingestion_date.isoformat()}


def dbt_env(cfg: TransformConfig) -> dict[str, str]:
    """Environment for a dbt run apart from the connection: schemas, target, no usage tracking."""
    return {
        "FILEDROP_STAGING_SCHEMA": cfg.staging_schema,
        "FILEDROP_ANALYTICS_SCHEMA": cfg.analytics_schema,
        "FILEDROP_IF_COMMON_SCHEMA": cfg.if_common_schema,
        "FILEDROP_DBT_TARGET": cfg.target,
        "FILEDROP_DBT_THREADS": str(cfg.threads),
        "DO_NOT_TRACK": "1",
        "DBT_SEND_ANONYMOUS_USAGE_STATS": "false",
    }


def dbt_args(command: list[str], cfg: TransformConfig, variables: Mapping[str, str] | None = None) -> list[str]:
    """The dbt command line for ``command`` (e.g. ``["build"]``), with project, state dirs and vars."""
    args = [*command,
            "--project-dir", str(cfg.project_dir), "--profiles-dir", str(cfg.profiles_dir),
            "--target", cfg.target,
            "--target-path", str(cfg.target_path), "--log-path", str(cfg.log_path)]
    if variables:
        args += ["--vars", json.dumps(dict(variables), sort_keys=True)]
    return args


# --- running dbt ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class NodeOutcome:
    """One executed node of a dbt invocation (model, seed, test, unit test)."""

    unique_id: str
    name: str
    resource_type: str
    status: str  # success | error | fail | warn | skipped | pass | ...
    message: str | None
    seconds: float
    failures: int | None = None
    tags: tuple[str, ...] = ()
    relation: str | None = None

    @property
    def failed(self) -> bool:
        return self.status in ("error", "fail", "runtime error")


@dataclass
class StepResult:
    """One dbt invocation."""

    command: str
    success: bool
    seconds: float
    nodes: list[NodeOutcome] = field(default_factory=list)
    error: str | None = None

    def count(self, *statuses: str) -> int:
        return sum(1 for n in self.nodes if n.status in statuses)


@contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    """Set environment variables for the duration of an in-process dbt run, then restore them."""
    saved = {k: os.environ.get(k) for k in values}
    try:
        os.environ.update(values)
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _node_outcome(result: Any) -> NodeOutcome:
    node = result.node
    status = str(getattr(result.status, "value", result.status))
    relation = getattr(node, "relation_name", None)
    return NodeOutcome(
        unique_id=node.unique_id, name=node.name, resource_type=str(getattr(node.resource_type, "value", "")),
        status=status, message=(result.message or None), seconds=float(result.execution_time or 0.0),
        failures=result.failures, tags=tuple(getattr(node, "tags", ()) or ()), relation=relation)


OnNode = Callable[[str, str], None]  # (node name, status) as each node finishes


def run_dbt(args: list[str], env: Mapping[str, str], on_node: OnNode | None = None) -> StepResult:
    """Invoke dbt in-process with ``args`` and ``env``; dbt's console output is off, its log file on."""
    try:
        from dbt.cli.main import dbtRunner
    except ImportError:
        raise TransformError("dbt is not installed: pip install 'filedrop-pipeline[transform]'") from None

    def callback(event: Any) -> None:
        if on_node is not None and event.info.name == "NodeFinished":
            on_node(event.data.node_info.node_name, event.data.run_result.status)

    quiet = ["--log-level", "none", "--log-level-file", "info", "--no-use-colors", "--no-use-colors-file",
             "--no-send-anonymous-usage-stats", "--no-version-check"]
    log.info("dbt %s", " ".join(args))
    started = time.monotonic()
    with _environment(env):
        res = dbtRunner(callbacks=[callback]).invoke([*args, *quiet])
    if isinstance(res.exception, KeyboardInterrupt):
        raise res.exception  # dbt returns Ctrl-C as a result; the user meant to stop filedrop
    step = StepResult(command=" ".join(args[:2] if args[:1] in (["docs"], ["source"]) else args[:1]),
                      success=bool(res.success), seconds=time.monotonic() - started)
    results = getattr(res.result, "results", None)
    if isinstance(results, list):
        step.nodes = [n for n in (_node_outcome(r) for r in results if getattr(r, "node", None) is not None)
                      if n.resource_type != "operation" or n.failed]  # the project's hooks, unless they failed
    if res.exception is not None:
        step.error = _first_lines(str(res.exception))
    elif not res.success and not any(n.failed for n in step.nodes):
        step.error = "dbt reported a failure (see the log file)"
    return step


def _first_lines(text: str, n: int = 12) -> str:
    lines = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[:n])


# --- the dimensions this runtime owns locally ----------------------------------------------------

