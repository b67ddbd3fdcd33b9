"""``filedrop warehouse url|stop``: the embedded PostgreSQL warehouse."""

from __future__ import annotations

import typer

from filedrop.cli.common import out, resolve_warehouse
from filedrop.config import Settings
from filedrop.warehouse import EmbeddedPostgres

warehouse_app = typer.Typer(no_args_is_help=True, help="The embedded PostgreSQL warehouse.")


@warehouse_app.command("url")
def url() -> None:
    """Print the warehouse URL (starting the embedded server if that is the warehouse)."""
    out.print(resolve_warehouse(Settings(), None), highlight=False, soft_wrap=True)


@warehouse_app.command("stop")
def stop() -> None:
    """Stop the embedded PostgreSQL server (its data stays under FILEDROP_HOME)."""
    stopped = EmbeddedPostgres(Settings().home).stop()
    out.print("stopped" if stopped else "not running")
