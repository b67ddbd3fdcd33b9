"""Commands of the cluster runtime: ``filedrop operator``, ``filedrop bridge``, ``filedrop backfill``,
``filedrop crds apply``."""

from __future__ import annotations

import logging
import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer

from filedrop.cli.common import out

log = logging.getLogger(__name__)


def _namespace(value: str | None) -> str:
    if value:
        return value
    sa_ns = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"
    if os.path.exists(sa_ns):
        with open(sa_ns) as f:
            return f.read().strip()
    return os.environ.get("FILEDROP_NAMESPACE") or "default"


def operator(
    namespace: Annotated[str | None, typer.Option(
        "--namespace", "-n", help="Watch one namespace (default: $FILEDROP_NAMESPACE, else cluster-wide).")] = None,
    liveness: Annotated[str, typer.Option(
        "--liveness", help="Liveness endpoint served by kopf.")] = "http://0.0.0.0:8081/healthz",
    peering: Annotated[str, typer.Option("--peering", help="kopf peering name (one active operator).")] = "filedrop",
    standalone: Annotated[bool, typer.Option("--standalone", help="No peering (tests, single process).")] = False,
) -> None:
    """Run the kopf operator: FileDrops become load Jobs, followed until Loaded, Skipped or Failed."""
    import kopf

    from filedrop.cluster import handlers  # noqa: F401 - registers the handlers

    ns = namespace or os.environ.get("FILEDROP_NAMESPACE") or None
    if ns:
        os.environ["FILEDROP_NAMESPACE"] = ns
    json_logs = os.environ.get("FILEDROP_LOG_FORMAT") == "json"
    root = logging.getLogger()
    for handler in list(root.handlers):  # kopf adds its own: every line once, in kopf's format
        root.removeHandler(handler)
    kopf.configure(verbose=logging.getLogger().isEnabledFor(logging.INFO),
                   log_format=kopf.LogFormat.JSON if json_logs else kopf.LogFormat.FULL)
    kopf.run(
        clusterwide=ns is None,
        namespaces=[ns] if ns else [],
        standalone=standalone,
        peering_name=None if standalone else peering,
        liveness_endpoint=liveness or None,
    )


def bridge(
    queue: Annotated[str, typer.Option("--queue", help="SQS queue URL receiving the S3 notifications.")],
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="Where FileDrops are created.")] = None,
    wait: Annotated[int, typer.Option("--wait", help="Long-poll seconds (1-20).", min=1, max=20)] = 20,
    visibility: Annotated[int, typer.Option("--visibility", help="Visibility timeout while handling (s).")] = 60,
    allowed_bucket: Annotated[list[str] | None, typer.Option(
        "--allowed-bucket", help="Serve only these buckets (repeatable; default $FILEDROP_ALLOWED_BUCKETS, "
                                 "comma-separated). Messages for others are refused.")] = None,
    metrics_port: Annotated[int, typer.Option(
        "--metrics-port", help="Serve /metrics and /healthz on this port (0: not at all).", min=0,
        max=65535)] = 0,
) -> None:
    """Long-poll SQS and create a FileDrop for each S3 object version a FileRoute matches."""
    import boto3

    from filedrop.cluster.bridge import Bridge
    from filedrop.cluster.kube import Kube
    from filedrop.cluster.metrics import HealthServer

    ns = _namespace(namespace)
    stop = threading.Event()

    def on_term(signum: int, _frame: object) -> None:
        log.warning("signal %s: finishing the batch in hand, then stopping", signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    allowed = allowed_bucket or [b for b in os.environ.get("FILEDROP_ALLOWED_BUCKETS", "").split(",") if b]
    b = Bridge(Kube(), boto3.client("sqs"), queue, ns, wait_seconds=wait, visibility_timeout=visibility,
               allowed_buckets=frozenset(allowed) if allowed else None)
    server = HealthServer(metrics_port, b.health).start() if metrics_port else None
    out.print(f"bridge: {queue} -> FileDrops in namespace {ns}"
              + (f"; /metrics and /healthz on port {server.port}" if server else ""), highlight=False)
    try:
        stats = b.run(stop)
    finally:
        if server:
            server.stop()
    out.print(f"stopped: {stats.messages} messages, {stats.created} FileDrops created, {stats.existing} existing, "
              f"{stats.unmatched} unmatched, {stats.unparseable} unparseable, {stats.foreign} refused (bucket)",
              highlight=False)


def backfill_cmd(
    bucket: Annotated[str, typer.Option("--bucket", help="S3 bucket to list.")],
    prefix: Annotated[str, typer.Option("--prefix", help="Key prefix to list.")] = "",
    since: Annotated[datetime | None, typer.Option("--since", help="Only objects modified at or after.")] = None,
    namespace: Annotated[str | None, typer.Option("--namespace", "-n", help="Where FileDrops are created.")] = None,
    warehouse: Annotated[str | None, typer.Option("--warehouse", help="PostgreSQL URL.")] = None,
) -> None:
    """Create FileDrops for objects under a prefix whose current version is not loaded yet."""
    from filedrop.cluster.bridge import backfill
    from filedrop.cluster.kube import Kube
    from filedrop.config import Settings
    from filedrop.warehouse import resolve_url

    settings = Settings()
    if since is not None and since.tzinfo is None:

        since = since.replace(tzinfo=UTC)
    stats = backfill(Kube(), settings, resolve_url(settings, warehouse), _namespace(namespace),
                     f"s3://{bucket}/{prefix}", since)
    out.print(f"{stats.created} FileDrops created, {stats.existing} already loaded or present, "
              f"{stats.unmatched} unmatched", highlight=False)


crds_app = typer.Typer(no_args_is_help=True, help="filedrop's CustomResourceDefinitions in the cluster.")


@crds_app.command("apply")
def crds_apply(
    source: Annotated[Path, typer.Option(
        "--from", help="Directory of the CRD files (the chart's crds/).", exists=True, file_okay=False)],
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the CRDs to be Established.")] = 120,
) -> None:
    """Replace the cluster's filedrop CRDs by the files' (what `helm upgrade` never does; the chart's optional
    pre-upgrade hook runs this). Only existing filedrop.dev CRDs are touched."""
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from filedrop.cli.common import fail, say
    from filedrop.cluster.crd_upgrade import CrdError, apply_crds, read_crds
    from filedrop.cluster.kube import Kube
    from filedrop.exitcodes import ExitCode

    try:
        docs = read_crds(source)
        results = apply_crds(Kube(), docs, timeout=timeout)
    except CrdError as exc:
        raise fail(str(exc), ExitCode.FAILED) from None
    except ApiException as exc:
        code = ExitCode.TEMPFAIL if exc.status in (409, 429) or (exc.status or 0) >= 500 else ExitCode.FAILED
        raise fail(f"the API server refused: {exc.status} {exc.reason}: {(exc.body or '')[:2000]}", code) from None
    except (HTTPError, OSError) as exc:
        raise fail(f"cannot reach the API server: {exc}", ExitCode.TEMPFAIL) from None
    for r in results:
        say(f"{r.name}: {'updated' if r.changed else 'unchanged'}, Established (served: {', '.join(r.versions)})")


def register(app: typer.Typer) -> None:
    app.command("operator")(operator)
    app.command("bridge")(bridge)
    app.command("backfill")(backfill_cmd)
    app.add_typer(crds_app, name="crds")
