"""Spark resources by file size (DESIGN §3 "Engines": driver only / N executors), as pure functions.

A tier applies to files up to ``max_bytes`` (the last tier has no limit). ``executors == 0`` means
driver only: the job runs Spark ``local[cores]`` inside the driver pod and asks Kubernetes for no
executors. Tiers are configurable with ``FILEDROP_SPARK_TIERS`` (JSON or YAML: a list of mappings with
the field names below); :func:`parse_tiers` validates them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

GiB = 1 << 30
_MEMORY = re.compile(r"^[1-9][0-9]*[mg]$")


class TierError(ValueError):
    """The tier configuration is invalid; the message says which tier and what to change."""


@dataclass(frozen=True)
class Tier:
    name: str
    max_bytes: int | None     # None: no upper limit (the last tier)
    executors: int            # 0: driver only
    driver_cores: int
    driver_memory: str        # Spark notation: 2g, 512m
    executor_cores: int = 1
    executor_memory: str = "1g"

    @property
    def driver_only(self) -> bool:
        return self.executors == 0

    @property
    def parallelism(self) -> int:
        """Tasks that run at once: also the number of parallel COPY sessions the warehouse sees."""
        return self.driver_cores if self.driver_only else self.executors * self.executor_cores


DEFAULT_TIERS: tuple[Tier, ...] = (
    Tier("small", 1 * GiB, executors=0, driver_cores=2, driver_memory="2g"),
    Tier("medium", 8 * GiB, executors=2, driver_cores=1, driver_memory="2g", executor_cores=2, executor_memory="4g"),
    Tier("large", 64 * GiB, executors=4, driver_cores=1, driver_memory="2g", executor_cores=4, executor_memory="8g"),
    Tier("xlarge", None, executors=8, driver_cores=2, driver_memory="4g", executor_cores=4, executor_memory="8g"),
)


def tier_for(size_bytes: int, tiers: Sequence[Tier] = DEFAULT_TIERS) -> Tier:
    """The first tier whose ``max_bytes`` is at least the size (tiers are ordered by size)."""
    if size_bytes < 0:
        raise ValueError(f"size must not be negative, got {size_bytes}")
    for tier in tiers:
        if tier.max_bytes is None or size_bytes <= tier.max_bytes:
            return tier
    raise TierError(f"no tier takes {size_bytes} bytes: the last tier must have no max_bytes")


def validate(tiers: Sequence[Tier]) -> tuple[Tier, ...]:
    if not tiers:
        raise TierError("at least one tier is needed")
    limits = [t.max_bytes for t in tiers]
    if limits[-1] is not None:
        raise TierError(f"the last tier ({tiers[-1].name}) must have no max_bytes, so every size has a tier")
    if any(m is None for m in limits[:-1]):
        raise TierError("only the last tier may have no max_bytes")
    bounded = [m for m in limits if m is not None]
    if bounded != sorted(set(bounded)):
        raise TierError(f"max_bytes must increase from tier to tier, got {bounded}")
    for t in tiers:
        if t.executors < 0 or t.driver_cores < 1 or t.executor_cores < 1:
            raise TierError(f"tier {t.name}: executors must be >= 0 and cores >= 1")
        for what, mem in (("driver_memory", t.driver_memory), ("executor_memory", t.executor_memory)):
            if not _MEMORY.match(mem):
                raise TierError(f"tier {t.name}: {what} {mem!r} must look like 512m or 4g")
    return tuple(tiers)


def parse_tiers(text: str) -> tuple[Tier, ...]:
    """Tiers from JSON or YAML: ``[{name, max_bytes, executors, driver_cores, driver_memory, ...}]``."""
    try:
        docs: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TierError(f"tiers are not valid YAML/JSON: {exc}") from None
    if not isinstance(docs, list):
        raise TierError("tiers must be a list of mappings")
    tiers = []
    for i, doc in enumerate(docs, 1):
        if not isinstance(doc, dict):
            raise TierError(f"tier {i} must be a mapping")
        try:
            tiers.append(Tier(**doc))
        except TypeError as exc:
            raise TierError(f"tier {i} ({doc.get('name', '?')}): {exc}") from None
    return validate(tiers)


def tiers_from_env(env: Mapping[str, str]) -> tuple[Tier, ...]:
    text = env.get("FILEDROP_SPARK_TIERS")
    return parse_tiers(text) if text else DEFAULT_TIERS
