"""Helpers for integration tests: hand-made routes and files, and one-call loads."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from filedrop.cluster.resources import route_manifest
from filedrop.config import Settings
from filedrop.load.session import LoadResult, load_object
from filedrop.load.sources import describe_uri
from filedrop.routes import FileRoute, parse_routes_yaml


def items_route(mode: str = "append", on_error: str = "continue", max_bad: float = 50, *, name_nullable: bool = True,
                day_format: str | None = None, **spec: Any) -> FileRoute:
    """A small route: items(id integer not null, name text, qty integer, day date); ``name_nullable`` and
    ``day_format`` (the date column's declared format) vary it, ``spec`` adds top-level spec fields."""
    extra = "".join(f"\n  {k}: {v}" for k, v in spec.items())
    name_extra = "" if name_nullable else ", nullable: false"
    day_extra = f", format: '{day_format}'" if day_format else ""
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
    - {{name: name, type: text{name_extra}}}
    - {{name: qty, type: integer}}
    - {{name: day, type: date{day_extra}}}
  mode: {mode}{pk}
  onError: {on_error}
  maxBadRowsPercent: {max_bad}{extra}
"""
    return parse_routes_yaml(text)[0]


def route_variant(route: FileRoute, name: str, **spec: Any) -> FileRoute:
    """``route`` under another name with the given spec fields (by their YAML names) replaced, validated
    again as a FileRoute from YAML is."""
    doc = route_manifest(route)
    doc["metadata"]["name"] = name
    doc["spec"].update(spec)
    return parse_routes_yaml(yaml.safe_dump(doc))[0]


def write(path: Path, content: bytes | str, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def load(url: str, route: FileRoute, path: Path | str, settings: Settings | None = None) -> LoadResult:
    return load_object(url, settings or Settings(warehouse_url=url), route, describe_uri(str(path)))


def routes_file(path: Path, *routes: FileRoute) -> Path:
    """The routes as a manifest file, as the CLI's --routes reads it."""
    import yaml

    from filedrop.cluster.resources import route_manifest

    path.write_text(yaml.safe_dump_all([route_manifest(r) for r in routes], sort_keys=False))
    return path
