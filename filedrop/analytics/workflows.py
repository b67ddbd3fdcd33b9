"""The dbt workflows of the cluster runtime (DESIGN §4), defined with Hera.

One ``WorkflowTemplate`` holds the DAG and is what people run on demand from the Argo UI::

    freshness ──> build ──> docs ──> publish-docs
                    └─────> export
    (on exit, whatever happened) record

(dbt source freshness, ``dbt build``, ``dbt docs generate``, the docs site to S3 and the chart's docs
server, the analytics tables to S3; ``record`` writes the run's outcome to the warehouse, where ``filedrop
status`` shows it). A daily ``CronWorkflow`` runs that same template through ``workflowTemplateRef``, so the
DAG exists once. Every step runs the filedrop image with the command line :func:`step_command` gives (pure,
unit-tested): what a step does can be run by hand the same way. What every step shares (image, environment,
security context, resources, mounts) is said once, in the template's ``templateDefaults``.

One run has one date: a step whose ``as_of_date``/``ingestion_date`` is empty takes the day of the run's
scheduled time (``workflow.scheduledTime``, a run the CronWorkflow started) or else of its creation time, in
the workflow's timezone, never the clock when the step happens to start. The workflow's logs are archived
with its artifacts (``archiveLogs``), and the controller exposes two metrics per finished run
(:data:`METRICS`).

This module is the single source of the Argo manifests. :func:`render_plain` gives the YAML committed in
``workflows/`` (and what ``filedrop workflows apply`` submits); :func:`filedrop.analytics.chart.render_chart`
turns the same manifests into the chart's templates. ``filedrop workflows render`` writes both; a test
fails when the committed files drift from what these modules render.

Pure: builds objects and text, does no I/O (:mod:`filedrop.cli.workflows` writes files and talks to Argo).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import yaml
from hera.workflows import (
    DAG,
    Artifact,
    ConfigMapEnvFrom,
    Counter,
    CronWorkflow,
    EmptyDirVolume,
    Env,
    Gauge,
    Label,
    Parameter,
    RetryStrategy,
    SecretEnv,
    SecretEnvFrom,
    Task,
    WorkflowTemplate,
)
from hera.workflows.models import (
    ArchiveStrategy,
    Backoff,
    Capabilities,
    Inputs,
    IntOrString,
    Metadata,
    Mutex,
    NoneStrategy,
    Outputs,
    PodGC,
    PodSecurityContext,
    ResourceRequirements,
    SeccompProfile,
    SecurityContext,
    Synchronization,
    Template,
    TTLStrategy,
    VolumeMount,
    WorkflowMetadata,
    WorkflowTemplateRef,
)
from hera.workflows.models import Artifact as ModelArtifact
from hera.workflows.models import Container as ModelContainer

from filedrop.exitcodes import ExitCode

__all__ = [
    "DOCS_DIR",
    "EXIT_STEP",
    "HEADER",
    "METRICS",
    "PARAMETERS",
    "PLAIN_FILES",
    "RETRYABLE_EXIT_CODES",
    "STEPS",
    "STEP_DEADLINES",
    "WORKFLOW_DEADLINE",
    "WorkflowConfig",
    "config_from_mapping",
    "cron_workflow",
    "dump_yaml",
    "manifests",
    "render_plain",
    "retry_expression",
    "step_command",
    "workflow_template",
]

#: The DAG's tasks, in order.
STEPS = ("freshness", "build", "docs", "publish-docs", "export")

#: The exit handler's template: it runs after the DAG, whatever its outcome.
EXIT_STEP = "record"

#: The workflow's parameters, with their defaults and what the Argo UI shows about them.
PARAMETERS: dict[str, tuple[str, str]] = {
    "as_of_date": ("", "The analytics' as_of_date, YYYY-MM-DD; empty: the day the run was scheduled (or "
                       "created) in the workflow's timezone."),
    "ingestion_date": ("", "The day the analytics rows are written for, YYYY-MM-DD; empty: the run's day, as for "
                           "as_of_date."),
    "selection": ("", "dbt node selection for the build (e.g. 'marts.agg_shipments+'); empty: everything."),
    "full_refresh": ("false", "true rebuilds incremental models from scratch (dbt --full-refresh)."),
}

#: Exit statuses worth a retry: 75 (EX_TEMPFAIL: the warehouse or S3 could not be reached) from the step
#: commands and ``filedrop load``, 3 (the warehouse connection was lost mid-command) from the CLI.
RETRYABLE_EXIT_CODES: tuple[int, ...] = (ExitCode.WAREHOUSE_LOST, ExitCode.TEMPFAIL)

#: Where a step keeps its files (an emptyDir: the root filesystem is read-only).
TMP = "/tmp"
DOCS_DIR = f"{TMP}/docs"

#: Seconds each step may run (Argo ``activeDeadlineSeconds``), and the whole workflow.
STEP_DEADLINES = {"freshness": 10 * 60, "build": 3 * 3600, "docs": 30 * 60, "publish-docs": 10 * 60,
                  "export": 3600, EXIT_STEP: 10 * 60}

#: The run's time as Argo gives it to a step: the CronWorkflow's scheduled time (left as the literal
#: placeholder in a run nobody scheduled) and the Workflow's creation time.
SCHEDULED_TIME = "{{workflow.scheduledTime}}"
CREATED_TIME = "{{workflow.creationTimestamp}}"

#: The workflow's metrics (the Argo controller's /metrics, prefixed ``argo_workflows_``), each labelled with
#: the DAG's final ``status`` (Succeeded, Failed, Error).
METRICS = {
    "filedrop_transform_duration_seconds": "Seconds the last filedrop transform run took, by final status.",
    "filedrop_transform_runs_total": "filedrop transform runs finished, by final status.",
}
WORKFLOW_DEADLINE = 6 * 3600

PLAIN_FILES = {"template": "filedrop-transform.workflowtemplate.yaml",
               "cron": "filedrop-transform.cronworkflow.yaml"}


@dataclass(frozen=True)
class WorkflowConfig:
    """What an installation decides about the workflows (the chart's values; defaults for the plain YAML)."""

    name: str = "filedrop-transform"
    namespace: str | None = None
    labels: Mapping[str, str] = field(default_factory=lambda: {
        "app.kubernetes.io/name": "filedrop", "app.kubernetes.io/component": "workflows"})
    image: str = "ghcr.io/filedrop/filedrop:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    service_account: str = "filedrop-workflows"
    #: Secret with the warehouse URL (the same one the operator and its load Jobs use).
    warehouse_secret: str = "filedrop-warehouse"
    warehouse_secret_key: str = "url"
    #: ConfigMap of non-secret settings (schemas, dbt target, AWS region ...); optional.
    config_map: str = "filedrop-config"
    #: Secret whose keys become environment variables (e.g. AWS keys without IRSA); optional.
    env_secret: str | None = None
    schedule: str = "0 6 * * *"
    timezone: str = "UTC"
    #: ``s3://bucket/prefix``: the analytics tables go to ``<prefix>/analytics_export/<id>/``.
    export_to: str = "s3://filedrop-analytics/exports"
    #: ``s3://bucket/prefix``: where the docs site is published (and the docs server reads it).
    docs_to: str = "s3://filedrop-analytics/docs"
    #: URL the docs server reloads on (``POST``) after a publish; empty: no docs server.
    docs_server: str = ""
    resources: Mapping[str, Any] = field(default_factory=lambda: {
        "requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}})
    successful_history: int = 3
    failed_history: int = 3
    #: A run that could not start on time (controller down) still starts within this many seconds.
    starting_deadline_seconds: int = 3600

    @property
    def cron_name(self) -> str:
        return f"{self.name}-daily"


def step_command(step: str, *, as_of_date: str = "", ingestion_date: str = "", selection: str = "",
                 full_refresh: str = "false", export_to: str = "", docs_to: str = "",
                 docs_server: str = "", docs_dir: str = DOCS_DIR, scheduled_time: str = "",
                 created_time: str = "") -> list[str]:
    """The command line of one workflow step.

    The workflow passes Argo placeholders (``{{workflow.parameters.as_of_date}}``) as values; run by hand,
    real values. Empty dates mean the day of ``scheduled_time`` or else ``created_time`` (the run's), or
    today when neither is given; an empty selection everything, an empty ``docs_server`` no reload call: the
    step commands take empty strings as "not given", which is what Argo substitutes.
    """
    dates = ["--as-of", as_of_date, "--ingestion-date", ingestion_date, "--scheduled-time", scheduled_time,
             "--created-time", created_time]
    if step == EXIT_STEP:
        return ["filedrop", "workflows", "step", "record", "--workflow", "{{workflow.name}}",
                "--status", "{{workflow.status}}", "--duration", "{{workflow.duration}}",
                "--failures", "{{workflow.failures}}", *dates]
    if step == "freshness":
        return ["filedrop", "workflows", "step", "freshness"]
    if step == "build":
        return ["filedrop", "workflows", "step", "build", *dates, "--select", selection,
                "--full-refresh", full_refresh]
    if step == "docs":
        return ["filedrop", "workflows", "step", "docs", *dates, "--out", docs_dir]
    if step == "publish-docs":
        return ["filedrop", "workflows", "step", "publish-docs", "--from", docs_dir, "--to", docs_to,
                "--notify", docs_server]
    if step == "export":
        return ["filedrop", "export", "--to", export_to]
    raise ValueError(f"unknown workflow step {step!r}; steps are {', '.join((*STEPS, EXIT_STEP))}")


def retry_expression(codes: tuple[int, ...] = RETRYABLE_EXIT_CODES) -> str:
    """Argo retry expression: the pod failed to run (``Error``: evicted, node lost), or the command
    said a retry may help. A failing dbt test or model is not retried: it would fail the same way."""
    quoted = ", ".join(f'"{int(c)}"' for c in codes)
    return f'lastRetry.status == "Error" || lastRetry.exitCode in [{quoted}]'


def _retry(limit: int = 3) -> RetryStrategy:
    return RetryStrategy(limit=limit, retry_policy="Always", expression=retry_expression(),
                         backoff=Backoff(duration="1m", factor=IntOrString(2), max_duration="30m"))


def _param(name: str) -> str:
    return f"{{{{workflow.parameters.{name}}}}}"


def _defaults(cfg: WorkflowConfig) -> Template:
    """What every step's container shares (Argo merges ``templateDefaults`` into each container template):
    the filedrop image, hardened, with the warehouse URL from its Secret."""
    env_from: list[Any] = [ConfigMapEnvFrom(name=cfg.config_map, optional=True)]
    if cfg.env_secret:
        env_from.append(SecretEnvFrom(name=cfg.env_secret))
    env = [SecretEnv(name="FILEDROP_WAREHOUSE_URL", secret_name=cfg.warehouse_secret,
                     secret_key=cfg.warehouse_secret_key),
           # a run's day is in the schedule's timezone; state (dbt target/, logs) in the emptyDir
           Env(name="TZ", value=cfg.timezone),
           Env(name="HOME", value=TMP),
           Env(name="FILEDROP_HOME", value=f"{TMP}/filedrop"),
           Env(name="FILEDROP_NO_COLOR", value="1")]
    return Template(container=ModelContainer(
        image=cfg.image,
        image_pull_policy=cfg.image_pull_policy,
        env=[e.build() for e in env],
        env_from=[e.build() for e in env_from],
        resources=ResourceRequirements(**dict(cfg.resources)),
        security_context=SecurityContext(allow_privilege_escalation=False, capabilities=Capabilities(drop=["ALL"]),
                                         read_only_root_filesystem=True, run_as_non_root=True),
        volume_mounts=[VolumeMount(name="tmp", mount_path=TMP)],
    ))


def _step(cfg: WorkflowConfig, step: str, **kw: Any) -> Template:
    """A step's template: its command, deadline and retries (the rest is in :func:`_defaults`)."""
    command = step_command(step, as_of_date=_param("as_of_date"), ingestion_date=_param("ingestion_date"),
                           selection=_param("selection"), full_refresh=_param("full_refresh"),
                           export_to=cfg.export_to, docs_to=cfg.docs_to, docs_server=cfg.docs_server,
                           scheduled_time=SCHEDULED_TIME, created_time=CREATED_TIME)
    return Template(name=step, container=ModelContainer(command=command),
                    active_deadline_seconds=IntOrString(STEP_DEADLINES[step]), retry_strategy=_retry().build(), **kw)


def _metrics() -> list[Any]:
    """Per finished run: its duration and a count, labelled with the final status."""
    labels = [Label(key="status", value="{{workflow.status}}")]
    name, runs = METRICS
    return [Gauge(name=name, help=METRICS[name], labels=labels, realtime=False, value="{{workflow.duration}}"),
            Counter(name=runs, help=METRICS[runs], labels=labels, value="1")]


def workflow_template(cfg: WorkflowConfig = WorkflowConfig()) -> WorkflowTemplate:
    """The on-demand workflow (and the one the daily CronWorkflow runs)."""
    with WorkflowTemplate(
        name=cfg.name,
        namespace=cfg.namespace,
        labels=dict(cfg.labels),
        annotations={"workflows.argoproj.io/description":
                     "filedrop analytics: dbt source freshness, dbt build, docs (S3 and the docs server), "
                     "export of the analytics tables to S3; the outcome recorded in the warehouse."},
        entrypoint="transform",
        on_exit=EXIT_STEP,
        arguments=[Parameter(name=n, value=v, description=d, enum=["false", "true"] if n == "full_refresh" else None)
                   for n, (v, d) in PARAMETERS.items()],
        service_account_name=cfg.service_account,
        active_deadline_seconds=WORKFLOW_DEADLINE,
        # the cron forbids overlapping runs; the mutex also keeps a manual run from overlapping one
        synchronization=Synchronization(mutexes=[Mutex(name=cfg.name)]),
        workflow_metadata=WorkflowMetadata(labels=dict(cfg.labels)),
        pod_metadata=Metadata(labels=dict(cfg.labels)),
        security_context=PodSecurityContext(run_as_non_root=True, run_as_user=10001, run_as_group=10001,
                                            fs_group=10001, seccomp_profile=SeccompProfile(type="RuntimeDefault")),
        volumes=[EmptyDirVolume(name="tmp")],
        template_defaults=_defaults(cfg),
        # the steps' logs outlive their pods (collected on success, and by the TTL below); they go to the
        # artifact repository Argo resolves for the namespace (the chart's argo.artifactRepository)
        archive_logs=True,
        metrics=_metrics(),
        pod_gc=PodGC(strategy="OnPodSuccess"),  # failed pods stay, with their logs
        ttl_strategy=TTLStrategy(seconds_after_success=3 * 86400, seconds_after_failure=7 * 86400),
    ) as w:
        # the docs site's one file, handed from the docs step to publish-docs through the artifact repository
        docs_file = f"{DOCS_DIR}/index.html"
        w.templates.extend([
            _step(cfg, "freshness"),
            _step(cfg, "build"),
            _step(cfg, "docs", outputs=Outputs(artifacts=[ModelArtifact(
                name="docs", path=docs_file, archive=ArchiveStrategy(none=NoneStrategy()))])),
            _step(cfg, "publish-docs", inputs=Inputs(artifacts=[ModelArtifact(name="docs", path=docs_file)])),
            _step(cfg, "export"),
            _step(cfg, EXIT_STEP),
        ])
        with DAG(name="transform"):
            t_fresh = Task(name="freshness", template="freshness")
            t_build = Task(name="build", template="build")
            t_docs = Task(name="docs", template="docs")
            t_publish = Task(name="publish-docs", template="publish-docs", arguments=[
                Artifact(name="docs", from_="{{tasks.docs.outputs.artifacts.docs}}")])
            t_export = Task(name="export", template="export")
            t_fresh >> t_build
            t_build >> [t_docs, t_export]
            t_docs >> t_publish
    return w


def cron_workflow(cfg: WorkflowConfig = WorkflowConfig()) -> CronWorkflow:
    """The daily run of :func:`workflow_template`, never two at once."""
    return CronWorkflow(
        name=cfg.cron_name,
        namespace=cfg.namespace,
        labels=dict(cfg.labels),
        schedules=[cfg.schedule],
        timezone=cfg.timezone,
        concurrency_policy="Forbid",
        starting_deadline_seconds=cfg.starting_deadline_seconds,
        successful_jobs_history_limit=cfg.successful_history,
        failed_jobs_history_limit=cfg.failed_history,
        workflow_template_ref=WorkflowTemplateRef(name=cfg.name),
    )


def _ordered(value: Any) -> Any:
    """Keys in the order Hera's ``to_yaml`` uses: ``name`` first, then scalars, lists, mappings."""
    if isinstance(value, list):
        return [_ordered(v) for v in value]
    if not isinstance(value, dict):
        return value

    def rank(item: tuple[str, Any]) -> tuple[int, str]:
        k, v = item
        if k == "name" and isinstance(v, str):
            return 0, k
        return (3 if isinstance(v, dict) else 2 if isinstance(v, list) else 1), k
    return {k: _ordered(v) for k, v in sorted(value.items(), key=rank)}


def manifests(cfg: WorkflowConfig = WorkflowConfig()) -> dict[str, dict[str, Any]]:
    """``{"template": ..., "cron": ...}`` as plain dicts (what the API server stores)."""
    return {"template": _ordered(workflow_template(cfg).to_dict()), "cron": _ordered(cron_workflow(cfg).to_dict())}


#: The first line of the files ``filedrop workflows render`` writes to ``workflows/``.
HEADER = ("# Generated by `filedrop workflows render` from filedrop/analytics/workflows.py. "
          "Do not edit: change the Hera code.\n")


def dump_yaml(doc: dict[str, Any]) -> str:
    """A manifest as the committed files have it: keys in :func:`_ordered`'s order, block style."""
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)


def render_plain(cfg: WorkflowConfig = WorkflowConfig()) -> dict[str, str]:
    """The manifests with ``cfg``'s values, by file name (``workflows/``)."""
    return {PLAIN_FILES[kind]: HEADER + dump_yaml(doc) for kind, doc in manifests(cfg).items()}


def config_from_mapping(values: Mapping[str, Any]) -> WorkflowConfig:
    """A :class:`WorkflowConfig` from a mapping of its field names (``filedrop workflows apply --config``)."""
    known = {f.name for f in fields(WorkflowConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown workflow setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return replace(WorkflowConfig(), **dict(values))
