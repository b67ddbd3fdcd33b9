"""The analytics of DESIGN §6 computed independently, in plain Python, from CSV rows and a calendar.

Nothing here calls the dbt models or their SQL: it is a second implementation of the written rules,
so a test comparing the two checks every number.
"""

from __future__ import annotations

import csv
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
STARS = ["one", "two", "three", "four", "five"]


@dataclass(frozen=True)
class Day:
    day_of_the_week_num: int
    working_day: bool

    @property
    def is_public_holiday(self) -> bool:
        return 1 <= self.day_of_the_week_num <= 5 and not self.working_day


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _d(value: str) -> date | None:
    return date.fromisoformat(value) if value else None


def _pct(part: int, whole: int) -> Decimal:
    return (Decimal(100 * part) / Decimal(whole)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


def _year_before(day: date) -> date:
    try:
        return day.replace(year=day.year - 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year - 1, day=28)


def latest_by_key(*files: list[dict[str, str]], key: str) -> list[dict[str, str]]:
    """Upsert semantics across files loaded in order: the last row for a key wins."""
    merged: dict[str, dict[str, str]] = {}
    for rows in files:
        for row in rows:
            merged[row[key]] = row
    return list(merged.values())


def analytics(orders: list[dict[str, str]], reviews: list[dict[str, str]], shipments: list[dict[str, str]],
              calendar: dict[date, Day], as_of: date, ingestion_date: date) -> dict[str, dict[str, Any]]:
    """The one row of each analytics table for this run, as {table: {column: value}}."""
    by_order = {int(o["order_id"]): o for o in orders}

    # agg_public_holiday
    per_month = Counter()
    lower = _year_before(as_of)
    for o in orders:
        od = _d(o["order_date"])
        if od is not None and lower < od <= as_of and calendar[od].is_public_holiday:
            per_month[od.month] += 1
    holiday = {"ingestion_date": ingestion_date}
    holiday.update({f"tt_order_hol_{m}": per_month[i + 1] for i, m in enumerate(MONTHS)})

    # agg_shipments, and the per-shipment timing used by best_performing_product
    late_ids, early_ids, undelivered = set(), set(), 0
    for s in shipments:
        order = by_order.get(int(s["order_id"]))
        if order is None:
            continue
        od, sd, dd = _d(order["order_date"]), _d(s["shipment_date"]), _d(s["delivery_date"])
        assert od is not None
        if sd is not None and dd is None and sd >= od + timedelta(days=6):
            late_ids.add(s["shipment_id"])
        if sd is not None and sd < od + timedelta(days=6):
            early_ids.add(s["shipment_id"])
        if sd is None and dd is None and od <= as_of - timedelta(days=15):
            undelivered += 1
    agg_shipments = {"ingestion_date": ingestion_date, "tt_late_shipments": len(late_ids),
                     "tt_undelivered_items": undelivered}

    # best_performing_product
    stars: dict[int, Counter[int]] = defaultdict(Counter)
    for r in reviews:
        stars[int(r["product_id"])][int(r["review"])] += 1
    best = min(stars, key=lambda p: (-sum(stars[p].values()), -sum(k * n for k, n in stars[p].items()), p))
    n_reviews = sum(stars[best].values())
    days: dict[date, list[int]] = defaultdict(lambda: [0, 0])
    for o in orders:
        if int(o["product_id"]) == best:
            od = _d(o["order_date"])
            assert od is not None
            days[od][0] += 1
            days[od][1] += int(o["quantity"])
    top_day = min(days, key=lambda d: (-days[d][0], -days[d][1], d))
    late = early = 0
    for s in shipments:
        order = by_order.get(int(s["order_id"]))
        if order is not None and int(order["product_id"]) == best:
            late += s["shipment_id"] in late_ids
            early += s["shipment_id"] in early_ids
    pct_late = _pct(late, early + late)
    product = {
        "ingestion_date": ingestion_date,
        "product_id": best,
        "most_ordered_day": top_day,
        "is_public_holiday": calendar[top_day].is_public_holiday,
        "tt_review_points": sum(k * n for k, n in stars[best].items()),
        **{f"pct_{name}_star_review": _pct(stars[best][i + 1], n_reviews) for i, name in enumerate(STARS)},
        "pct_early_shipments": Decimal(100) - pct_late,
        "pct_late_shipments": pct_late,
    }
    return {"agg_public_holiday": holiday, "agg_shipments": agg_shipments, "best_performing_product": product}
