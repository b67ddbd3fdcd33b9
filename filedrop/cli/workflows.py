"""``filedrop workflows``: the Argo workflows of the cluster runtime (DESIGN §4).

``render`` writes the manifests :mod:`filedrop.analytics.workflows` defines (``workflows/``, and the chart's
templates through :mod:`filedrop.analytics.chart`), ``apply`` submits them to an Argo server with Hera's
client, ``step ...`` are the commands the workflow's steps run, and ``serve-docs`` is the chart's docs server.

Hera is imported only by the commands that need it (it takes a second or two to import, and every
``filedrop`` command, e.g. each load Job, would pay for it).

Exit statuses of the steps (:class:`~filedrop.exitcodes.ExitCode`): 0 done, 1 dbt reported failures (a retry
would fail the same way), 2 bad arguments, 75 the warehouse, S3 or the docs server could not be reached (the
workflow retries those).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
import yaml

from filedrop.cli.common import WarehouseOpt, err, error, fail, say, termination_message
from filedrop.config import SOURCE_CHECKOUT, Settings
from filedrop.exitcodes import ExitCode

if TYPE_CHECKING:
    from filedrop.analytics.workflows import WorkflowConfig

log = logging.getLogger(__name__)

workflows_app = typer.Typer(no_args_is_help=True, help="The dbt workflows on Argo: render, apply, and their steps.")
step_app = typer.Typer(no_args_is_help=True, help=(
    "The commands the workflow's steps run (one per Argo task). Empty option values mean 'not given', "
    "which is what Argo passes for empty parameters."))
workflows_app.add_typer(step_app, name="step")


# --- render and apply --------------------------------------------------------------------------------

def _default_root() -> Path:
    """The repository when filedrop runs from a source checkout, else the working directory."""
    repo = SOURCE_CHECKOUT
    return repo if (repo / "helm" / "filedrop" / "Chart.yaml").is_file() else Path.cwd()


def rendered_files(root: Path) -> dict[Path, str]:
    """Every file ``render`` writes, by path: the plain manifests and the chart's templates."""
    from filedrop.analytics import chart
    from filedrop.analytics import workflows as wf

    files = {root / "workflows" / name: text for name, text in wf.render_plain().items()}
    files.update({root / "helm" / "filedrop" / rel: text for rel, text in chart.render_chart().items()})
    return files


@workflows_app.command("render")
def render(
    root: Annotated[Path | None, typer.Option(
        "--root", help="Repository root holding workflows/ and helm/filedrop/ (default: this checkout).")] = None,
    check: Annotated[bool, typer.Option(
        "--check", help="Write nothing; exit 1 if a committed file differs from what the Hera code renders.")] = False,
) -> None:
    """Write the Argo manifests from the Hera definitions: workflows/*.yaml and the chart's templates."""
    base = root or _default_root()
    stale = []
    for path, text in rendered_files(base).items():
        current = path.read_text() if path.is_file() else None
        if current == text:
            continue
        stale.append(path)
        if not check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        say(f"{'differs' if check else 'wrote'}: {path.relative_to(base)}")
    if check and stale:
        say("the committed manifests drifted from the Hera code (filedrop/analytics/workflows.py, chart.py): "
            "run `filedrop workflows render`", err)
        raise typer.Exit(ExitCode.FAILED)
    if not stale:
        say("up to date")


def _config(path: Path | None, namespace: str, image: str | None) -> WorkflowConfig:
    from filedrop.analytics import workflows as wf

    values: dict[str, Any] = {}
    if path is not None:
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise fail(f"{path}: expected a mapping of workflow settings")
        values.update(loaded)
    values["namespace"] = namespace
    if image:
        values["image"] = image
    try:
        return wf.config_from_mapping(values)
    except (TypeError, ValueError) as exc:
        raise fail(str(exc)) from None


@workflows_app.command("apply")
def apply(
    argo_server: Annotated[str, typer.Option(
        "--argo-server", envvar="ARGO_SERVER_URL", help="Argo server URL, e.g. https://argo.example.com:2746.")],
    namespace: Annotated[str, typer.Option("--namespace", "-n", envvar="ARGO_NAMESPACE",
                                           help="Namespace of the WorkflowTemplate and CronWorkflow.")],
    token: Annotated[str | None, typer.Option(
        "--token", envvar="ARGO_TOKEN", help="Bearer token for the Argo server ($ARGO_TOKEN).",
        show_default=False)] = None,
    config: Annotated[Path | None, typer.Option(
        "--config", help="YAML of workflow settings (image, service_account, warehouse_secret, schedule, "
        "timezone, export_to, docs_to ...; see filedrop.analytics.workflows.WorkflowConfig).")] = None,
    image: Annotated[str | None, typer.Option("--image", help="The filedrop image the steps run.")] = None,
    insecure: Annotated[bool, typer.Option(
        "--insecure-skip-verify", help="Do not verify the Argo server's TLS certificate.")] = False,
) -> None:
    """Create or update the WorkflowTemplate and the CronWorkflow through the Argo server (Hera's client)."""
    from hera.exceptions import HeraException
    from hera.workflows import WorkflowsService

    from filedrop.analytics import workflows as wf

    cfg = _config(config, namespace, image)
    service = WorkflowsService(host=argo_server, token=token, verify_ssl=not insecure, namespace=namespace)
    # the template first: the CronWorkflow refers to it
    for obj in (wf.workflow_template(cfg), wf.cron_workflow(cfg)):
        obj.workflows_service = service
        try:
            done = obj.update()  # creates it when it does not exist yet
        except HeraException as exc:  # the server answered no
            raise fail(f"{obj.kind} {obj.name}: {type(exc).__name__}: {exc}", ExitCode.FAILED) from None
        except OSError as exc:  # requests' connection errors: no answer at all
            raise fail(f"{obj.kind} {obj.name}: cannot reach {argo_server}: {exc}", ExitCode.TEMPFAIL) from None
        say(f"{obj.kind} {namespace}/{done.metadata.name} applied "
            f"(resourceVersion {done.metadata.resource_version})")


# --- the steps ---------------------------------------------------------------------------------------

def _given(value: str | None) -> str | None:
    return value if value not in (None, "") else None


def _prepare(warehouse: str | None) -> tuple[str, Any, Any]:
    """(warehouse URL, Settings, TransformConfig); exit 75 when the warehouse cannot be reached."""
    from filedrop.analytics.transform import TransformConfig, TransformError
    from filedrop.warehouse import WarehouseError, connect, resolve_url

    settings = Settings()
    try:
        cfg = TransformConfig.from_settings(settings)
        url = resolve_url(settings, warehouse)
        with connect(url) as conn:
            conn.execute("SELECT 1")
    except TransformError as exc:
        raise fail(str(exc)) from None
    except WarehouseError as exc:
        raise fail(str(exc), ExitCode.TEMPFAIL) from None
    return url, settings, cfg


def _variables(as_of: str | None, ingestion_date: str | None, scheduled: str | None,
               created: str | None) -> dict[str, str]:
    """dbt's dates: those given, else the run's day (:func:`~filedrop.analytics.dbt.run_day`), else today."""
    from filedrop.analytics.dbt import TransformError, dbt_vars, parse_date, run_day

    try:
        day = run_day(scheduled, created)
        variables = dbt_vars(parse_date(_given(as_of) or day, "--as-of"),
                             parse_date(_given(ingestion_date) or day, "--ingestion-date"))
    except TransformError as exc:
        raise fail(str(exc)) from None
    _say_day(day, as_of, ingestion_date, scheduled, created)
    return variables


def _say_day(day: date | None, as_of: str | None, ingestion_date: str | None, scheduled: str | None,
             created: str | None) -> None:
    """Where a step's day came from, when it uses the run's day (the steps' logs show one day per run)."""
    from filedrop.analytics.dbt import run_time

    given = run_time(scheduled, created)
    if day is not None and given is not None and not (_given(as_of) and _given(ingestion_date)):
        say(f"the run's day is {day.isoformat()}, from its {given[0]} {given[1]}", err)


def _run(command: list[str], url: str, cfg: Any, variables: dict[str, str] | None) -> Any:
    from filedrop.analytics.dbt import TransformError, connection_env, dbt_args, dbt_env, run_dbt

    try:
        env = {**connection_env(url), **dbt_env(cfg)}
        step = run_dbt(dbt_args(command, cfg, variables), env)
    except TransformError as exc:
        raise fail(str(exc)) from None
    counts: dict[str, int] = {}
    for n in step.nodes:
        counts[n.status] = counts.get(n.status, 0) + 1
    summary = ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) or "no nodes"
    headline = f"dbt {step.command}: {'ok' if step.success else 'FAILED'} in {step.seconds:.1f}s ({summary})"
    say(headline)
    failed = []
    for n in step.nodes:
        if n.failed or n.status in ("warn", "skipped"):
            detail = f"{n.failures} failing row(s)" if n.failures else (n.message or "")
            say(f"  {n.status}: {n.resource_type} {n.name}: {detail}")
            if n.failed:
                failed.append(f"{n.status}: {n.resource_type} {n.name}: {detail}")
    if step.error:
        error(step.error)
    if not step.success:
        # what failed, as the step's message in the Argo UI (and `kubectl describe pod`)
        termination_message("\n".join([headline, *failed, *([step.error] if step.error else [])]))
    log_file = cfg.log_path / "dbt.log"
    if not step.success and log_file.is_file():
        # the pod's log is all a reader of the Argo UI gets: the end of dbt's own log goes there too
        say("".join(log_file.read_text(errors="replace").splitlines(keepends=True)[-40:]), err)
    return step


#: the steps' dates: Argo passes an empty parameter as an empty string, which means the run's day
StepAsOfOpt = Annotated[str | None, typer.Option(
    "--as-of", help="as_of_date YYYY-MM-DD; empty: the run's day (below), else today.")]
StepIngestionOpt = Annotated[str | None, typer.Option(
    "--ingestion-date", help="ingestion_date YYYY-MM-DD; empty: the run's day (below), else today.")]
StepScheduledOpt = Annotated[str | None, typer.Option(
    "--scheduled-time", help="When the schedule started the run (RFC 3339); its date in $TZ is the run's day. "
    "Empty, or an unresolved Argo placeholder: not scheduled.")]
StepCreatedOpt = Annotated[str | None, typer.Option(
    "--created-time", help="When the run was created (RFC 3339): the run's day when it was not scheduled.")]


@step_app.command("freshness")
def step_freshness(warehouse: WarehouseOpt = None) -> None:
    """dbt source freshness of the staging tables (a warning passes, an error fails the step)."""
    url, _settings, cfg = _prepare(warehouse)
    step = _run(["source", "freshness"], url, cfg, None)
    raise typer.Exit(ExitCode.OK if step.success else ExitCode.FAILED)


@step_app.command("build")
def step_build(
    as_of: StepAsOfOpt = None,
    ingestion_date: StepIngestionOpt = None,
    scheduled_time: StepScheduledOpt = None,
    created_time: StepCreatedOpt = None,
    select: Annotated[str | None, typer.Option("--select", help="dbt node selection; empty: all.")] = None,
    full_refresh: Annotated[str, typer.Option(
        "--full-refresh", help="true: rebuild incremental models from scratch.")] = "false",
    warehouse: WarehouseOpt = None,
) -> None:
    """dbt build: seeds (local target), models, unit and data tests."""
    from filedrop.analytics.transform import TransformError, ensure_dim_dates

    if full_refresh.lower() not in ("", "true", "false"):
        raise fail(f"--full-refresh must be true or false, not {full_refresh!r}")
    variables = _variables(as_of, ingestion_date, scheduled_time, created_time)
    url, _settings, cfg = _prepare(warehouse)
    if cfg.builds_if_common:
        try:
            say(ensure_dim_dates(url, cfg))
        except (TransformError, ImportError) as exc:
            raise fail(f"cannot generate dim_dates: {exc}") from None
    command = ["build"]
    if _given(select):
        command += ["--select", str(select)]
    if full_refresh.lower() == "true":
        command.append("--full-refresh")
    say(f"as_of_date {variables['as_of_date']}, ingestion_date {variables['ingestion_date']}")
    step = _run(command, url, cfg, variables)
    raise typer.Exit(ExitCode.OK if step.success else ExitCode.FAILED)


@step_app.command("docs")
def step_docs(
    out_dir: Annotated[Path, typer.Option("--out", help="Directory to write index.html into.")],
    as_of: StepAsOfOpt = None,
    ingestion_date: StepIngestionOpt = None,
    scheduled_time: StepScheduledOpt = None,
    created_time: StepCreatedOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """dbt docs generate --static: one self-contained index.html in --out."""
    import shutil

    variables = _variables(as_of, ingestion_date, scheduled_time, created_time)
    url, _settings, cfg = _prepare(warehouse)
    step = _run(["docs", "generate", "--static"], url, cfg, variables)
    static = cfg.target_path / "static_index.html"
    if not step.success:
        raise typer.Exit(ExitCode.FAILED)
    if not static.is_file():
        raise fail(f"dbt docs generate --static succeeded but wrote no {static}", ExitCode.FAILED)
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(static, out_dir / "index.html")
    say(f"docs: {out_dir / 'index.html'} ({(out_dir / 'index.html').stat().st_size:,} bytes)")


@step_app.command("publish-docs")
def step_publish_docs(
    source: Annotated[Path, typer.Option("--from", help="Directory with the docs site (index.html).")],
    to: Annotated[str, typer.Option("--to", help="s3://bucket/prefix to publish to.")],
    notify: Annotated[str | None, typer.Option(
        "--notify", help="Docs server reload URL to call afterwards; empty: none.")] = None,
) -> None:
    """Upload the docs site to S3, then ask the docs server (if any) to serve the new one."""
    from filedrop.analytics.docs_site import DocsError, DocsUnavailable, publish, split_uri
    from filedrop.analytics.docs_site import notify as notify_server

    try:
        split_uri(to)
    except DocsError as exc:
        raise fail(str(exc)) from None
    try:
        for item in publish(source, to):
            say(f"published {item.uri} ({item.bytes:,} bytes)")
    except DocsError as exc:
        raise fail(str(exc), ExitCode.TEMPFAIL if isinstance(exc, DocsUnavailable) else ExitCode.FAILED) from None
    if _given(notify):
        try:
            say(f"docs server: {notify_server(str(notify))}")
        except DocsError as exc:
            raise fail(str(exc), ExitCode.TEMPFAIL) from None


@step_app.command("record")
def step_record(
    workflow: Annotated[str, typer.Option("--workflow", help="The run's name (the Workflow object's).")],
    status: Annotated[str, typer.Option("--status", help="The run's final status: Succeeded, Failed or Error.")],
    duration: Annotated[str | None, typer.Option("--duration", help="Seconds the run took.")] = None,
    failures: Annotated[str | None, typer.Option(
        "--failures", help="Argo's JSON list of the failed nodes ({{workflow.failures}}).")] = None,
    as_of: StepAsOfOpt = None,
    ingestion_date: StepIngestionOpt = None,
    scheduled_time: StepScheduledOpt = None,
    created_time: StepCreatedOpt = None,
    warehouse: WarehouseOpt = None,
) -> None:
    """The workflow's exit handler: write the run's outcome to the warehouse (shown by `filedrop status`).

    It records whatever it is given: a value it cannot read (the bad date that failed the run, say) is left out
    of the record with a warning, never a reason to lose it. Exit 75 (retried) when the warehouse cannot be
    reached."""
    from datetime import datetime

    from filedrop.analytics.dbt import TransformError, parse_date, run_day
    from filedrop.warehouse import WarehouseError, connect, resolve_url, runs

    if not workflow.strip() or not status.strip():
        raise fail("--workflow and --status must not be empty")

    def lenient(what: str, read: Any) -> Any:
        try:
            return read()
        except (TransformError, ValueError) as exc:
            say(f"warning: {what} left out of the record: {exc}", err)
            return None
    seconds = lenient("--duration", lambda: float(duration) if duration else None)
    started = lenient("--created-time", lambda: datetime.fromisoformat(created_time) if created_time else None)
    day: date | None = lenient("the run's day", lambda: run_day(scheduled_time, created_time))
    _say_day(day, as_of, ingestion_date, scheduled_time, created_time)
    run = runs.TransformRun(
        workflow=workflow, status=status,
        as_of_date=lenient("--as-of", lambda: parse_date(_given(as_of) or day, "--as-of")),
        ingestion_date=lenient("--ingestion-date",
                               lambda: parse_date(_given(ingestion_date) or day, "--ingestion-date")),
        started_at=started, duration_seconds=seconds, failures=runs.parse_failures(failures, workflow))
    settings = Settings()
    try:
        with connect(resolve_url(settings, warehouse)) as conn:
            runs.record(conn, settings.meta_schema, run)
    except WarehouseError as exc:
        raise fail(f"cannot record the run: {exc}", ExitCode.TEMPFAIL) from None
    say(f"recorded run {workflow}: {status}"
        + (f" in {seconds:.0f}s" if seconds is not None else "")
        + f", as_of_date {run.as_of_date or '-'}")
    for f in run.failures:
        say(f"  failed: {f['step'] or '?'} ({f['phase'] or '?'}): {f['message']}")


@workflows_app.command("serve-docs")
def serve_docs(
    source: Annotated[str, typer.Option("--from", help="s3://bucket/prefix the docs are published to.")],
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "0.0.0.0",  # noqa: S104
    port: Annotated[int, typer.Option("--port", help="Port to listen on.")] = 8080,
    refresh: Annotated[float, typer.Option(
        "--refresh", help="Re-read S3 at most this often (seconds) without a reload call.")] = 300.0,
) -> None:
    """Serve the published dbt docs (the chart's docs server): GET pages, POST /-/reload, GET /healthz."""
    from filedrop.analytics.docs_site import DocsError, DocsSite, make_server

    try:
        site = DocsSite(source)
    except DocsError as exc:
        raise fail(str(exc)) from None
    try:
        site.reload()
    except DocsError as exc:
        say(f"warning: {exc} (serving once it can be read)", err)
    server = make_server(site, host, port, refresh)

    def stop(signum: int, _frame: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    say(f"serving {source} on http://{host}:{server.server_address[1]}/")
    sys.stdout.flush()
    server.serve_forever()
    server.server_close()
