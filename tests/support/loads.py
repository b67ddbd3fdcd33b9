"""Helpers for integration tests: hand-made routes and files, and one-call loads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from filedrop.config import Settings
from filedrop.loader import LoadResult, load_object
from filedrop.routes import FileRoute, parse_routes_yaml
from filedrop.sources import describe_uri


def items_route(mode: str = "append", on_error: str = "continue", max_bad: float = 50, **spec: Any) -> FileRoute:
    """A small route: items(id integer not null, name text, qty integer, day date)."""
    extra = "".join(f"\n  {k}: {v}" for k, v in spec.items())
    pk = "\n  primaryKey: [id]" if mode == "upsert" else ""
    text = f"""
apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {{name: items}}
spec:
  match: {{pattern: '^items.*\\.csv(\\.gz)?$'}}
  table: items
  columns:
    - {{name: id, type: integer, nullable: false}}
    - {{name: name, type: text}}
    - {{name: qty, type: integer}}
    - {{name: day, type: date}}
  mode: {mode}{pk}
  onError: {on_error}
  maxBadRowsPercent: {max_bad}{extra}
"""
    return parse_routes_yaml(text)[0]


def write(path: Path, content: bytes | str, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def load(url: str, route: FileRoute, path: Path | str, settings: Settings | None = None) -> LoadResult:
    return load_object(url, settings or Settings(warehouse_url=url), route, describe_uri(str(path)))
