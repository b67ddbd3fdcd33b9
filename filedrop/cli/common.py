"""What every ``filedrop`` command shares: the two consoles, how a command fails, the common options.

Exit statuses are :class:`filedrop.exitcodes.ExitCode` (0 done, 1 failed, 2 bad arguments or input, 3 the
warehouse connection was lost, 75 worth a retry).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from rich.console import Console
from rich.markup import escape

from filedrop.config import Settings
from filedrop.exitcodes import ExitCode
from filedrop.routes import FileRoute, RouteError, load_routes
from filedrop.warehouse import WarehouseError, resolve_url

__all__ = [
    "STATUS_STYLE", "TERMINATION_LOG", "AsOfOpt", "EngineOpt", "Output", "OutputOpt", "RoutesOpt", "WarehouseOpt",
    "emit", "err", "error", "fail", "machine_output", "out", "resolve_warehouse", "routes_from", "say", "shown",
    "termination_message",
]


def _console(stream: TextIO | None, stderr: bool) -> Console:
    """Tables are wide: when the stream is not a terminal (make, CI, pipes, pod logs) and $COLUMNS does not
    say, 160 columns rather than rich's 80. FILEDROP_NO_COLOR (set in the workflow steps) turns colour off."""
    width = None if (stream is not None and stream.isatty()) or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, width=width, no_color=True if os.environ.get("FILEDROP_NO_COLOR") else None)


#: stdout: what a command produced (tables, summaries)
out = _console(sys.stdout, stderr=False)
#: stderr: errors, progress, notes on what is going on
err = _console(sys.stderr, stderr=True)


def say(text: str, console: Console = out) -> None:
    """Print text exactly as it is: no markup, no highlighting, no wrapping (log lines, paths, dbt output)."""
    console.print(text, markup=False, highlight=False, soft_wrap=True)


def error(message: str) -> None:
    """``error: <message>`` on stderr, the message as written (brackets in it are not markup), on one line;
    in a container also its termination message."""
    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    termination_message(message)


#: In a container, the file whose text Kubernetes keeps as the container's termination message: `kubectl
#: describe pod` shows it, and Argo makes it the failed step's message (the Argo UI). The kubelet mounts it;
#: elsewhere it does not exist.
TERMINATION_LOG = Path("/dev/termination-log")
#: the kubelet keeps at most 4096 bytes of it
TERMINATION_LIMIT = 4096


def termination_message(message: str, path: Path | None = None) -> None:
    """Leave ``message`` as the container's termination message (the last one written wins); nothing outside
    a container, where the file does not exist (never created)."""
    path = path or TERMINATION_LOG
    try:
        if path.is_file():
            # cut at the limit, never inside a character
            text = message.encode(errors="replace")[:TERMINATION_LIMIT].decode(errors="ignore")
            path.write_bytes(text.encode())
    except OSError:
        pass  # a read-only or vanished file: the message is still on stderr


def fail(message: str, code: ExitCode = ExitCode.USAGE) -> typer.Exit:
    """Print the error and return the exit that ends the command: ``raise fail(...) from None``."""
    error(message)
    return typer.Exit(code)


def shown(text: str) -> str:
    """Text from files and keys, safe to print: control characters (a newline in a key) as ``\\xNN``,
    and no Rich markup (a key like ``a[red].csv`` is printed as written)."""
    return escape(re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\x{ord(m.group()):02x}", text))


STATUS_STYLE = {"loaded": "green", "skipped_duplicate": "cyan", "skipped_superseded": "cyan",
                "failed": "bold red", "running": "yellow"}


# --- machine-readable output ----------------------------------------------------------------------------

class Output(StrEnum):
    table = "table"
    json = "json"


OutputOpt = Annotated[Output, typer.Option(
    "--output", "-o", help="table (for people) or json (for scripts: JSON on stdout, everything else on stderr).")]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


#: while :func:`machine_output` runs with JSON: the real stdout, which only :func:`emit` writes to
_json_stdout: list[TextIO] = []


def emit(document: Any) -> None:
    """One JSON document on stdout, on one line (a watching command emits one per pass: JSON Lines)."""
    stream = _json_stdout[-1] if _json_stdout else sys.stdout
    stream.write(json.dumps(document, default=_jsonable, ensure_ascii=False) + "\n")
    stream.flush()


@contextmanager
def machine_output(output: Output) -> Iterator[bool]:
    """With ``-o json``, what the command prints for people (tables, dbt's output) goes to stderr, so stdout
    holds only what :func:`emit` writes; yields True in that case."""
    if output is not Output.json:
        yield False
        return
    real = sys.stdout
    _json_stdout.append(real)
    sys.stdout = sys.stderr
    try:
        yield True
    finally:
        sys.stdout = real
        _json_stdout.pop()


# --- options more than one command takes --------------------------------------------------------------

RoutesOpt = Annotated[list[Path] | None, typer.Option(
    "--routes", help="FileRoute manifest file or directory (repeatable); default: the d2b routes.")]
WarehouseOpt = Annotated[str | None, typer.Option(
    "--warehouse", help="PostgreSQL URL; default $FILEDROP_WAREHOUSE_URL, else the embedded server.",
    show_default=False)]
EngineOpt = Annotated[str | None, typer.Option(
    "--engine", help="auto | direct | spark (default: each route's engine).")]
AsOfOpt = Annotated[str | None, typer.Option(
    "--as-of", help="The analytics' as_of_date, YYYY-MM-DD (default: today).", show_default=False)]


def routes_from(paths: list[Path] | None) -> list[FileRoute]:
    """The FileRoutes of ``--routes`` (default: the d2b routes); a bad manifest ends the command."""
    try:
        return load_routes(paths)
    except RouteError as exc:
        raise fail(str(exc)) from None


def resolve_warehouse(settings: Settings, warehouse: str | None) -> str:
    """The warehouse URL of ``--warehouse`` (else the environment, else the embedded server, started)."""
    try:
        return resolve_url(settings, warehouse)
    except WarehouseError as exc:
        raise fail(str(exc)) from None
