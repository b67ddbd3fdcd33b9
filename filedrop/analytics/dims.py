"""The calendar dimension ``if_common.dim_dates`` (DESIGN §6), generated from the PyPI ``holidays`` package.

Pure: computes rows and writes a seed CSV; no service clients. In production ``if_common`` exists
already and nothing here runs; locally ``filedrop.analytics.transform`` writes ``dim_dates.csv`` into a seed
directory outside the repository before dbt runs, and dbt seeds it (with the static dimensions).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

FIRST_DAY = date(2015, 1, 1)
LAST_DAY = date(2030, 12, 31)
#: The d2b assessment (Data2Bots) is Nigerian; any country code the ``holidays`` package knows works.
DEFAULT_COUNTRY = "NG"

DIM_DATES_COLUMNS = ("calendar_dt", "year_num", "month_of_the_year_num", "day_of_the_month_num",
                     "day_of_the_week_num", "working_day")


class DimsError(ValueError):
    """The calendar cannot be generated as configured (e.g. an unknown country code)."""


def holiday_country() -> str:
    """``FILEDROP_HOLIDAYS_COUNTRY`` (ISO 3166-1 alpha-2, e.g. ``NG``, ``GB``), else :data:`DEFAULT_COUNTRY`."""
    return (os.environ.get("FILEDROP_HOLIDAYS_COUNTRY") or DEFAULT_COUNTRY).strip().upper()


@dataclass(frozen=True)
class CalendarDay:
    calendar_dt: date
    year_num: int
    month_of_the_year_num: int
    day_of_the_month_num: int
    day_of_the_week_num: int  # ISO: Monday = 1 .. Sunday = 7
    working_day: bool
    holiday_name: str | None

    def as_row(self) -> tuple[str, int, int, int, int, str]:
        return (self.calendar_dt.isoformat(), self.year_num, self.month_of_the_year_num, self.day_of_the_month_num,
                self.day_of_the_week_num, "true" if self.working_day else "false")


def public_holidays(country: str, first: date = FIRST_DAY, last: date = LAST_DAY) -> dict[date, str]:
    """The country's public holidays (observed days included, as the ``holidays`` package gives them)."""
    import holidays

    try:
        found = holidays.country_holidays(country, years=range(first.year, last.year + 1))
    except NotImplementedError:
        raise DimsError(f"the holidays package has no calendar for country {country!r} "
                        "(set FILEDROP_HOLIDAYS_COUNTRY to an ISO 3166-1 alpha-2 code such as NG or GB)") from None
    return {d: str(name) for d, name in sorted(found.items()) if first <= d <= last}


def calendar(country: str, first: date = FIRST_DAY, last: date = LAST_DAY) -> Iterator[CalendarDay]:
    """One :class:`CalendarDay` per day from ``first`` to ``last``; weekends and public holidays are days off."""
    off = public_holidays(country, first, last)
    day = first
    while day <= last:
        iso_dow = day.isoweekday()
        yield CalendarDay(day, day.year, day.month, day.day, iso_dow,
                          working_day=iso_dow <= 5 and day not in off, holiday_name=off.get(day))
        day += timedelta(days=1)


def write_dim_dates(directory: Path, country: str | None = None) -> Path:
    """Write ``dim_dates.csv`` (a dbt seed) into ``directory``; rewritten only when its content changes.

    Leaving an unchanged file alone keeps its mtime, so dbt's partial parsing stays valid between runs.
    """
    country = country or holiday_country()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "dim_dates.csv"
    tmp = directory / f".dim_dates.{os.getpid()}.tmp"
    with tmp.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(DIM_DATES_COLUMNS)
        writer.writerows(day.as_row() for day in calendar(country))
    if path.exists() and path.read_bytes() == tmp.read_bytes():
        tmp.unlink()
    else:
        tmp.replace(path)
    return path
