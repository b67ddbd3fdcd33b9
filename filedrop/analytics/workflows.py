"""The dbt workflows of the cluster runtime (DESIGN §4), defined with Hera.

One ``WorkflowTemplate`` holds the DAG and is what people run on demand from the Argo UI::

    freshness ──> build ──> docs ──> publish-docs
                    └─────> export

(dbt source freshness, ``dbt build``, ``dbt docs generate``, the docs site to S3 and the chart's docs
server, the analytics tables to S3). A daily ``CronWorkflow`` runs that same template through
``workflowTemplateRef``, so the DAG exists once. Every step runs the filedrop image with the command line
:func:`step_command` gives (pure, unit-tested): what a step does can be run by hand the same way.

This module is the single source of the Argo manifests. :func:`render_plain` gives the YAML committed in
``workflows/`` (and what ``filedrop workflows apply`` submits); :func:`render_chart` gives the chart's
templates, in which Argo's ``{{...}}`` is escaped for Helm and chart values stand where the plain
rendering has defaults. ``filedrop workflows render`` writes both; a test fails when the committed files
drift from what this module renders.

Pure: builds objects and text, does no I/O (:mod:`filedrop.cli.workflows` writes files and talks to Argo).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

import yaml
from hera.workflows import (
    DAG,
    Artifact,
    ConfigMapEnvFrom,
    Container,
    CronWorkflow,
    EmptyDirVolume,
    Env,
    NoneArchiveStrategy,
    Parameter,
    RetryStrategy,
    SecretEnv,
    SecretEnvFrom,
    WorkflowTemplate,
)
from hera.workflows.models import (
    Backoff,
    Capabilities,
    Metadata,
    Mutex,
    PodGC,
    PodSecurityContext,
    ResourceRequirements,
    SeccompProfile,
    SecurityContext,
    Synchronization,
    TTLStrategy,
    VolumeMount,
    WorkflowMetadata,
    WorkflowTemplateRef,
)

__all__ = [
    "CHART_TEMPLATES",
    "DOCS_DIR",
    "PARAMETERS",
    "PLAIN_FILES",
    "RETRYABLE_EXIT_CODES",
    "STEPS",
    "STEP_DEADLINES",
    "WORKFLOW_DEADLINE",
    "WorkflowConfig",
    "config_from_mapping",
    "cron_workflow",
    "escape_for_helm",
    "manifests",
    "render_chart",
    "render_plain",
    "retry_expression",
    "step_command",
    "substitute_values",
    "workflow_template",
]

#: The DAG's tasks, in order.
STEPS = ("freshness", "build", "docs", "publish-docs", "export")

#: The workflow's parameters, with their defaults and what the Argo UI shows about them.
PARAMETERS: dict[str, tuple[str, str]] = {
    "as_of_date": ("", "The analytics' as_of_date, YYYY-MM-DD; empty: today in the workflow's timezone."),
    "ingestion_date": ("", "The day the analytics rows are written for, YYYY-MM-DD; empty: today."),
    "selection": ("", "dbt node selection for the build (e.g. 'marts.agg_shipments+'); empty: everything."),
    "full_refresh": ("false", "true rebuilds incremental models from scratch (dbt --full-refresh)."),
}

#: Exit statuses worth a retry: 75 (EX_TEMPFAIL: the warehouse or S3 could not be reached) from the step
#: commands and ``filedrop load``, 3 (the warehouse connection was lost mid-command) from the CLI.
RETRYABLE_EXIT_CODES = (3, 75)

#: Where a step keeps its files (an emptyDir: the root filesystem is read-only).
TMP = "/tmp"
DOCS_DIR = f"{TMP}/docs"

#: Seconds each step may run (Argo ``activeDeadlineSeconds``), and the whole workflow.
STEP_DEADLINES = {"freshness": 10 * 60, "build": 3 * 3600, "docs": 30 * 60, "publish-docs": 10 * 60,
                  "export": 3600}
WORKFLOW_DEADLINE = 6 * 3600

PLAIN_FILES = {"template": "filedrop-transform.workflowtemplate.yaml",
               "cron": "filedrop-transform.cronworkflow.yaml"}
CHART_TEMPLATES = {"template": "templates/workflows-workflowtemplate.yaml",
                   "cron": "templates/workflows-cronworkflow.yaml"}


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
                 docs_server: str = "", docs_dir: str = DOCS_DIR) -> list[str]:
    """The command line of one workflow step.

    The workflow passes Argo placeholders (``{{workflow.parameters.as_of_date}}``) as values; run by hand,
    real values. Empty dates mean today, an empty selection everything, an empty ``docs_server`` no
    reload call: the step commands take empty strings as "not given", which is what Argo substitutes.
    """
    dates = ["--as-of", as_of_date, "--ingestion-date", ingestion_date]
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
    raise ValueError(f"unknown workflow step {step!r}; steps are {', '.join(STEPS)}")


def retry_expression(codes: tuple[int, ...] = RETRYABLE_EXIT_CODES) -> str:
    """Argo retry expression: the pod failed to run (``Error``: evicted, node lost), or the command
    said a retry may help. A failing dbt test or model is not retried: it would fail the same way."""
    quoted = ", ".join(f'"{c}"' for c in codes)
    return f'lastRetry.status == "Error" || lastRetry.exitCode in [{quoted}]'


def _retry(limit: int = 3) -> RetryStrategy:
    return RetryStrategy(limit=limit, retry_policy="Always", expression=retry_expression(),
                         backoff=Backoff(duration="1m", factor=2, max_duration="30m"))


def _param(name: str) -> str:
    return "{{workflow.parameters.%s}}" % name


def _step_container(cfg: WorkflowConfig, step: str, **kw: Any) -> Container:
    """A step's template: the filedrop image, hardened, with the warehouse URL from its Secret."""
    env_from: list[Any] = [ConfigMapEnvFrom(name=cfg.config_map, optional=True)]
    if cfg.env_secret:
        env_from.append(SecretEnvFrom(name=cfg.env_secret))
    return Container(
        name=step,
        image=cfg.image,
        image_pull_policy=cfg.image_pull_policy,
        command=step_command(step, as_of_date=_param("as_of_date"), ingestion_date=_param("ingestion_date"),
                             selection=_param("selection"), full_refresh=_param("full_refresh"),
                             export_to=cfg.export_to, docs_to=cfg.docs_to, docs_server=cfg.docs_server),
        env=[SecretEnv(name="FILEDROP_WAREHOUSE_URL", secret_name=cfg.warehouse_secret,
                       secret_key=cfg.warehouse_secret_key),
             # "today" is the day in the schedule's timezone; state (dbt target/, logs) in the emptyDir
             Env(name="TZ", value=cfg.timezone),
             Env(name="HOME", value=TMP),
             Env(name="FILEDROP_HOME", value=f"{TMP}/filedrop"),
             Env(name="FILEDROP_NO_COLOR", value="1")],
        env_from=env_from,
        resources=ResourceRequirements(**dict(cfg.resources)),
        security_context=SecurityContext(allow_privilege_escalation=False, capabilities=Capabilities(drop=["ALL"]),
                                         read_only_root_filesystem=True, run_as_non_root=True),
        volume_mounts=[VolumeMount(name="tmp", mount_path=TMP)],
        active_deadline_seconds=STEP_DEADLINES[step],
        retry_strategy=_retry(),
        **kw,
    )


def workflow_template(cfg: WorkflowConfig = WorkflowConfig()) -> WorkflowTemplate:
    """The on-demand workflow (and the one the daily CronWorkflow runs)."""
    with WorkflowTemplate(
        name=cfg.name,
        namespace=cfg.namespace,
        labels=dict(cfg.labels),
        annotations={"workflows.argoproj.io/description":
                     "filedrop analytics: dbt source freshness, dbt build, docs (S3 and the docs server), "
                     "export of the analytics tables to S3."},
        entrypoint="transform",
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
        pod_gc=PodGC(strategy="OnPodSuccess"),  # failed pods stay, with their logs
        ttl_strategy=TTLStrategy(seconds_after_success=3 * 86400, seconds_after_failure=7 * 86400),
    ) as w:
        freshness = _step_container(cfg, "freshness")
        build = _step_container(cfg, "build")
        docs = _step_container(cfg, "docs", outputs=[
            Artifact(name="docs", path=f"{DOCS_DIR}/index.html", archive=NoneArchiveStrategy())])
        publish = _step_container(cfg, "publish-docs", inputs=[Artifact(name="docs", path=f"{DOCS_DIR}/index.html")])
        export = _step_container(cfg, "export")
        with DAG(name="transform"):
            t_fresh = freshness(name="freshness")
            t_build = build(name="build")
            t_docs = docs(name="docs")
            t_publish = publish(name="publish-docs", arguments=[t_docs.get_artifact("docs")])
            t_export = export(name="export")
            t_fresh >> t_build >> [t_docs, t_export]
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


_HEADER = "# Generated by `filedrop workflows render` from filedrop/analytics/workflows.py. Do not edit: change the Hera code.\n"


def _dump(doc: dict[str, Any]) -> str:
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=120)


def render_plain(cfg: WorkflowConfig = WorkflowConfig()) -> dict[str, str]:
    """The manifests with ``cfg``'s values, by file name (``workflows/``)."""
    return {PLAIN_FILES[kind]: _HEADER + _dump(doc) for kind, doc in manifests(cfg).items()}


# --- the chart's templates -------------------------------------------------------------------------

#: Placeholders for chart values: ``__HELM_<KEY>__`` stands for one scalar (rendered quoted) and a
#: mapping value ``__HELM_BLOCK_<KEY>__`` for a YAML block (rendered with nindent).
CHART_SCALARS = {
    "NAME": 'include "filedrop.workflows.name" .',
    "CRON_NAME": 'printf "%s-daily" (include "filedrop.workflows.name" .)',
    "NAMESPACE": ".Release.Namespace",
    "IMAGE": 'include "filedrop.image" .',
    "PULL_POLICY": ".Values.image.pullPolicy",
    "SERVICE_ACCOUNT": 'include "filedrop.workflows.serviceAccountName" .',
    "WAREHOUSE_SECRET": 'required "warehouse.existingSecret is required" .Values.warehouse.existingSecret',
    "WAREHOUSE_KEY": ".Values.warehouse.urlKey",
    "SCHEDULE": ".Values.argo.schedule",
    "TIMEZONE": ".Values.argo.timezone",
    "EXPORT_TO": 'required "argo.exportTo is required when argo.enabled" .Values.argo.exportTo',
    "DOCS_TO": 'required "docs.s3Uri is required when argo.enabled" .Values.docs.s3Uri',
    "DOCS_SERVER": 'include "filedrop.docs.reloadUrl" .',
    "SUCCESSFUL_HISTORY": ".Values.argo.successfulJobsHistoryLimit",
    "FAILED_HISTORY": ".Values.argo.failedJobsHistoryLimit",
    "STARTING_DEADLINE": ".Values.argo.startingDeadlineSeconds",
}
CHART_BLOCKS = {
    "LABELS": 'include "filedrop.labels" (dict "context" . "component" "workflows")',
    "POD_LABELS": 'include "filedrop.selectorLabels" (dict "context" . "component" "workflows")',
    "RESOURCES": "toYaml .Values.argo.resources",
    "ENV_FROM": 'include "filedrop.workflows.envFrom" .',
}
#: Integers in the manifest that come from values (a placeholder must be a string until rendered).
_CHART_INTS = {"SUCCESSFUL_HISTORY", "FAILED_HISTORY", "STARTING_DEADLINE"}


def _scalar(key: str) -> str:
    return f"__HELM_{key}__"


def _block(key: str) -> str:
    return f"__HELM_BLOCK_{key}__"


def chart_config() -> WorkflowConfig:
    """The config whose values are chart placeholders."""
    s = _scalar
    return WorkflowConfig(
        name=s("NAME"), namespace=s("NAMESPACE"), labels={_block("LABELS"): ""}, image=s("IMAGE"),
        service_account=s("SERVICE_ACCOUNT"),
        warehouse_secret=s("WAREHOUSE_SECRET"), warehouse_secret_key=s("WAREHOUSE_KEY"),
        schedule="0 6 * * *", timezone=s("TIMEZONE"), export_to=s("EXPORT_TO"), docs_to=s("DOCS_TO"),
        docs_server=s("DOCS_SERVER"))


def _chart_manifests() -> dict[str, dict[str, Any]]:
    """The manifests with placeholders; Hera validates types, so a few fields are placed afterwards."""
    docs = manifests(chart_config())
    blocks = {_block("LABELS"): ""}
    for doc in docs.values():
        assert doc["metadata"]["labels"] == blocks
        doc["metadata"]["labels"] = _block("LABELS")
    tmpl, cron = docs["template"]["spec"], docs["cron"]["spec"]
    tmpl["workflowMetadata"]["labels"] = _block("LABELS")
    tmpl["podMetadata"]["labels"] = _block("POD_LABELS")
    for t in tmpl["templates"]:
        if "container" in t:
            t["container"]["imagePullPolicy"] = _scalar("PULL_POLICY")
            t["container"]["resources"] = _block("RESOURCES")
            t["container"]["envFrom"] = _block("ENV_FROM")
    docs["cron"]["metadata"]["name"] = _scalar("CRON_NAME")
    cron["schedules"] = [_scalar("SCHEDULE")]
    cron["timezone"] = _scalar("TIMEZONE")
    cron["successfulJobsHistoryLimit"] = _scalar("SUCCESSFUL_HISTORY")
    cron["failedJobsHistoryLimit"] = _scalar("FAILED_HISTORY")
    cron["startingDeadlineSeconds"] = _scalar("STARTING_DEADLINE")
    return docs


_ARGO_EXPR = re.compile(r"\{\{(.*?)\}\}")


def escape_for_helm(text: str) -> str:
    """Make every Argo ``{{...}}`` expression come out of Helm unchanged: ``{{`{{...}}`}}``."""
    def esc(m: re.Match[str]) -> str:
        if "`" in m.group(0):
            raise ValueError(f"cannot escape an Argo expression containing a backtick: {m.group(0)}")
        return "{{`" + m.group(0) + "`}}"
    return _ARGO_EXPR.sub(esc, text)


_BLOCK_LINE = re.compile(r"^(?P<indent> *)(?P<dash>- )?(?P<key>[^\s:]+): __HELM_BLOCK_(?P<name>[A-Z_]+)__$", re.M)
_SCALAR = re.compile(r"(?P<q>'?)__HELM_(?P<name>[A-Z_]+)__(?P=q)")


def substitute_values(text: str, scalars: Mapping[str, str] = CHART_SCALARS,
                      blocks: Mapping[str, str] = CHART_BLOCKS) -> str:
    """Replace placeholders by Helm actions: a scalar by ``{{ expr | quote }}`` (``| int`` for numbers),
    a block by ``{{- expr | nindent N }}`` under its key."""
    def block(m: re.Match[str]) -> str:
        indent = len(m["indent"]) + (2 if m["dash"] else 0) + 2
        return f"{m['indent']}{m['dash'] or ''}{m['key']}:\n{' ' * indent}{{{{- {blocks[m['name']]} | nindent {indent} }}}}"

    def scalar(m: re.Match[str]) -> str:
        name = m["name"]
        if name in _CHART_INTS:
            return f"{{{{ {scalars[name]} | int }}}}"
        return f"{{{{ {scalars[name]} | quote }}}}"

    out = _BLOCK_LINE.sub(block, text)
    out = _SCALAR.sub(scalar, out)
    left = re.findall(r"__HELM_\w+?__", out)
    if left:
        raise ValueError(f"placeholders left after substitution: {left}")
    return out


def render_chart() -> dict[str, str]:
    """The chart's Argo templates, by path inside the chart, rendered only with ``argo.enabled``."""
    out = {}
    for kind, doc in _chart_manifests().items():
        body = substitute_values(escape_for_helm(_dump(doc)))
        out[CHART_TEMPLATES[kind]] = (_HEADER + '{{- if .Values.argo.enabled }}\n' + body + "{{- end }}\n")
    return out


def config_from_mapping(values: Mapping[str, Any]) -> WorkflowConfig:
    """A :class:`WorkflowConfig` from a mapping of its field names (``filedrop workflows apply --config``)."""
    known = {f.name for f in fields(WorkflowConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown workflow setting(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return replace(WorkflowConfig(), **dict(values))
