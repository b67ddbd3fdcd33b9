"""The pure parts of the transform: connection settings from a URL, dbt command lines, the cron
schedule of a watching run, the generated calendar. No servers needed."""

from __future__ import annotations

import json
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pytest

from filedrop.analytics import dims
from filedrop.analytics.dbt import (
    PASSWORD_ENV,
    TransformConfig,
    TransformError,
    connection_env,
    dbt_args,
    dbt_vars,
    parse_date,
)
from filedrop.analytics.transform import TransformSchedule
from filedrop.config import Settings


def test_connection_env_from_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGSSLMODE"):
        monkeypatch.delenv(var, raising=False)
    env = connection_env("postgresql://app:s3cr%40t@db.example.com:6432/warehouse?sslmode=require")
    assert env == {"FILEDROP_PG_HOST": "db.example.com", "FILEDROP_PG_PORT": "6432", "FILEDROP_PG_USER": "app",
                   "FILEDROP_PG_DATABASE": "warehouse", "FILEDROP_PG_SSLMODE": "require", PASSWORD_ENV: "s3cr@t"}
    # no password in the URL: none in the environment (libpq then reads PGPASSWORD or ~/.pgpass)
    env = connection_env("postgresql://postgres@127.0.0.1:5433/postgres")
    assert PASSWORD_ENV not in env and env["FILEDROP_PG_PORT"] == "5433"
    assert connection_env("host=/run/postgresql dbname=dw user=me")["FILEDROP_PG_HOST"] == "/run/postgresql"
    monkeypatch.setenv("PGHOST", "pg.internal")
    assert connection_env("postgresql:///dw")["FILEDROP_PG_HOST"] == "pg.internal"
    assert connection_env("postgresql://u@h/dw?application_name=x")["FILEDROP_PG_DATABASE"] == "dw"
    with pytest.raises(TransformError, match="target_session_attrs"):
        connection_env("postgresql://u@h/dw?target_session_attrs=read-write")
    with pytest.raises(TransformError, match="several hosts"):
        connection_env("postgresql://u@h1,h2/dw")


def test_dbt_command_line_keeps_state_out_of_the_project(tmp_path: Path) -> None:
    cfg = TransformConfig.from_settings(Settings(home=tmp_path))
    args = dbt_args(["build"], cfg, dbt_vars(date(2022, 9, 5), date(2022, 9, 6)))
    assert args[0] == "build"
    opts = dict(zip(args[1::2], args[2::2], strict=True))
    assert opts["--target-path"] == str(tmp_path / "dbt" / "target")
    assert opts["--log-path"] == str(tmp_path / "dbt" / "logs")
    assert (Path(opts["--project-dir"]) / "dbt_project.yml").is_file()
    assert opts["--target"] == "local"
    assert json.loads(opts["--vars"]) == {"as_of_date": "2022-09-05", "ingestion_date": "2022-09-06"}


def test_target_and_dates_are_validated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FILEDROP_DBT_TARGET", "prod")
    assert not TransformConfig.from_settings(Settings(home=tmp_path)).builds_if_common
    monkeypatch.setenv("FILEDROP_DBT_TARGET", "staging")
    with pytest.raises(TransformError, match="FILEDROP_DBT_TARGET"):
        TransformConfig.from_settings(Settings(home=tmp_path))
    assert parse_date("2022-09-05", "--as-of") == date(2022, 9, 5)
    assert parse_date(None, "--as-of") == date.today()
    with pytest.raises(TransformError, match="--as-of must be a date YYYY-MM-DD"):
        parse_date("05/09/2022", "--as-of")


def test_schedule_fires_once_per_cron_time() -> None:
    tz = timezone(timedelta(hours=1))
    start = datetime(2022, 9, 5, 5, 30, tzinfo=tz)
    sched = TransformSchedule("0 6 * * *", now=start)
    assert sched.next_at == datetime(2022, 9, 5, 6, 0, tzinfo=tz)
    assert sched.seconds_until(start) == 1800
    assert not sched.due(datetime(2022, 9, 5, 5, 59, tzinfo=tz))
    assert sched.due(datetime(2022, 9, 5, 6, 0, 30, tzinfo=tz))
    assert not sched.due(datetime(2022, 9, 5, 6, 1, tzinfo=tz))  # once per fire time
    assert sched.next_at == datetime(2022, 9, 6, 6, 0, tzinfo=tz)
    # three missed days (a suspended laptop) make one transform, then the next future time
    assert sched.due(datetime(2022, 9, 9, 7, 0, tzinfo=tz))
    assert sched.next_at == datetime(2022, 9, 10, 6, 0, tzinfo=tz)
    with pytest.raises(TransformError, match="not a cron expression"):
        TransformSchedule("every morning")


def test_calendar_marks_weekends_and_the_countrys_holidays() -> None:
    days = {d.calendar_dt: d for d in dims.calendar("NG")}
    assert (min(days), max(days), len(days)) == (date(2015, 1, 1), date(2030, 12, 31), 5844)
    assert all(not d.working_day for d in days.values() if d.day_of_the_week_num >= 6)
    assert [d.day_of_the_week_num for d in (days[date(2022, 9, 5)], days[date(2022, 9, 11)])] == [1, 7]
    assert not days[date(2022, 10, 3)].working_day and days[date(2022, 10, 3)].holiday_name  # National Day observed
    assert days[date(2022, 10, 4)].working_day
    gb = {d.calendar_dt: d for d in dims.calendar("GB")}
    assert not gb[date(2022, 6, 3)].working_day and days[date(2022, 6, 3)].working_day  # the Platinum Jubilee
    with pytest.raises(dims.DimsError, match="no calendar for country 'XX'"):
        list(dims.calendar("XX"))
