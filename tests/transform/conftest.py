"""Fixtures for the transform tests: a database with the d2b files loaded and transformed once per
server (dbt runs take seconds, so tests that only read share it), and helpers to load and transform."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import psycopg
import pytest

from filedrop.analytics.transform import TransformConfig, TransformReport, transform
from filedrop.config import Settings
from filedrop.local.pipeline import RunReport, run_once
from filedrop.routes import load_routes
from tests.conftest import D2B, DB

AS_OF = date(2022, 9, 5)


def make_config(settings: Settings, *, target: str = "local", analytics_schema: str = "analytics",
                if_common_schema: str = "if_common") -> TransformConfig:
    base = TransformConfig.from_settings(settings)
    return TransformConfig(project_dir=base.project_dir, state_dir=base.state_dir, docs_dir=base.docs_dir,
                           staging_schema=settings.staging_schema, analytics_schema=analytics_schema,
                           if_common_schema=if_common_schema, target=target, holiday_country="NG")


def load_dir(url: str, settings: Settings, source: Path) -> RunReport:
    report = run_once(url, settings, load_routes(), str(source))
    assert report.ok, [(r.obj.key, r.first_error) for r in report.failed] + report.errors
    return report


@dataclass
class Transformed:
    """A database with the d2b files loaded and transformed with as_of_date = ingestion_date = 2022-09-05."""

    url: str
    db: DB
    settings: Settings
    cfg: TransformConfig
    report: TransformReport


@pytest.fixture(scope="session")
def d2b(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Transformed]:
    name = "t_" + uuid.uuid4().hex[:12]
    with psycopg.connect(pg_server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = pg_server.rsplit("/", 1)[0] + "/" + name
    try:
        # Every load that can attaches its table (reviews, replace_source): the models must read attached
        # tables as they read copied rows (the numbers are checked against an independent computation).
        settings = Settings(warehouse_url=url, home=tmp_path_factory.mktemp("home"), attach_min_bytes=0)
        load_dir(url, settings, D2B)
        cfg = make_config(settings)
        report = transform(url, settings, as_of=AS_OF, ingestion_date=AS_OF, cfg=cfg)
        yield Transformed(url, DB(url), settings, cfg, report)
    finally:
        with psycopg.connect(pg_server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
