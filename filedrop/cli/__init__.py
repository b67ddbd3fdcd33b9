"""The ``filedrop`` command line: one Typer app, with the cluster and workflow commands as sub-apps."""

from filedrop.cli.commands import app, main

__all__ = ["app", "main"]
