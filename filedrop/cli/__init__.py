"""The ``filedrop`` command line: one Typer app (:mod:`filedrop.cli.root`) assembled from a module per area."""

from filedrop.cli.root import app, main

__all__ = ["app", "main"]
