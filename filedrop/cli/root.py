"""The ``filedrop`` app (DESIGN §5): typer for parsing, rich for tables and progress.

The commands live in modules by area and are assembled here, in the order ``filedrop --help`` lists them:

* :mod:`~filedrop.cli.load` — ``run``, ``load``, ``sample``
* :mod:`~filedrop.cli.status` — ``status``, ``history``
* :mod:`~filedrop.cli.analytics` — ``transform``, ``export``
* :mod:`~filedrop.cli.cluster` — ``operator``, ``bridge``, ``backfill``
* :mod:`~filedrop.cli.warehouse` — ``warehouse url|stop``
* :mod:`~filedrop.cli.workflows` — ``workflows render|apply|step ...|serve-docs``

:mod:`~filedrop.cli.common` holds what they share: the consoles, ``fail``, the common options.
"""

from __future__ import annotations

import os
import sys
import warnings
from enum import StrEnum
from typing import Annotated

import typer

from filedrop import logs
from filedrop.cli import analytics, cluster, load, status, warehouse, workflows
from filedrop.cli.common import error
from filedrop.exitcodes import ExitCode
from filedrop.warehouse import WarehouseError
from filedrop.warehouse.client import ServerError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_show_locals=False, help=(
    "Load files dropped into S3 (or a directory) exactly once into PostgreSQL staging tables."))


class LogFormat(StrEnum):
    plain = "plain"
    json = "json"


def _version(value: bool) -> None:
    if value:
        import platform

        from filedrop import __version__

        typer.echo(f"filedrop {__version__} (Python {platform.python_version()})")
        raise typer.Exit()


@app.callback()
def _setup(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
    log_format: Annotated[LogFormat, typer.Option(
        "--log-format", envvar="FILEDROP_LOG_FORMAT",
        help="Log lines as text, or as one JSON object per line (for log collectors).")] = LogFormat.plain,
) -> None:
    try:
        logs.configure(verbose, log_format is LogFormat.json)
    except ImportError as exc:
        raise typer.BadParameter(str(exc), param_hint="--log-format") from None
    os.environ["FILEDROP_LOG_FORMAT"] = log_format.value  # `filedrop operator` hands it to kopf
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")


app.command("run")(load.run)
app.command("load")(load.load)
app.command("history")(status.history)
app.command("status")(status.status)
app.command("sample")(load.sample)
app.command("transform")(analytics.transform)
app.command("export")(analytics.export)
cluster.register(app)
app.add_typer(warehouse.warehouse_app, name="warehouse")
app.add_typer(workflows.workflows_app, name="workflows")


def main() -> None:
    if os.environ.get("FILEDROP_NO_COLOR"):
        os.environ.setdefault("NO_COLOR", "1")  # for typer's own messages (usage errors, --help)
    try:
        app()
    except WarehouseError as exc:
        error(str(exc))
        sys.exit(ExitCode.USAGE)
    except ServerError as exc:  # the warehouse went away mid-command
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        error(f"lost the warehouse connection: {first}")
        sys.exit(ExitCode.WAREHOUSE_LOST)
