"""Settings read from the environment, with the defaults DESIGN §3 and §5 name. Pure: no I/O."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def env_int(name: str, default: int) -> int:
    """The integer in environment variable ``name`` (``default`` when unset or empty); a clear error otherwise."""
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"{name} must be an integer, got {raw!r}") from None


#: the repository when filedrop runs from a source checkout or an editable install (``pip install -e``)
SOURCE_CHECKOUT = Path(__file__).resolve().parent.parent


def default_home() -> Path:
    """``FILEDROP_HOME``, else ``$XDG_DATA_HOME/filedrop`` (``~/.local/share/filedrop``)."""
    if os.environ.get("FILEDROP_HOME"):
        return Path(os.environ["FILEDROP_HOME"]).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "filedrop"


@dataclass(frozen=True)
class Settings:
    """Everything configurable that is not part of a FileRoute."""

    warehouse_url: str | None = field(default_factory=lambda: os.environ.get("FILEDROP_WAREHOUSE_URL") or None)
    home: Path = field(default_factory=default_home)
    staging_schema: str = field(default_factory=lambda: os.environ.get("FILEDROP_STAGING_SCHEMA", "staging"))
    meta_schema: str = field(default_factory=lambda: os.environ.get("FILEDROP_META_SCHEMA", "filedrop"))
    #: files at or above this size go to Spark when a route says ``engine: auto``.
    spark_threshold_bytes: int = field(
        default_factory=lambda: env_int("FILEDROP_SPARK_THRESHOLD_BYTES", 256 * 1024 * 1024)
    )
    #: a direct load of a file at least this large into an ``append``, ``replace_source`` or ``replace_table``
    #: route writes its rows once: its table becomes part of the staging table (``sql.attach_statements``)
    #: instead of being copied into it. Smaller files are copied (cheap, and no table per file).
    attach_min_bytes: int = field(default_factory=lambda: env_int("FILEDROP_ATTACH_MIN_BYTES", 64 * 1024 * 1024))
    #: a staging table with this many attached load tables takes further loads by copying (see
    #: docs/operations.md, "Attached load tables", for folding them back in).
    attach_max_tables: int = field(default_factory=lambda: env_int("FILEDROP_ATTACH_MAX_TABLES", 100))
    #: largest CSV record (or header line) read, in bytes (DESIGN §3 "Limits").
    max_record_bytes: int = field(default_factory=lambda: env_int("FILEDROP_MAX_RECORD_BYTES", 16 * 1024 * 1024))
    #: how long a loader waits for another loader of the same object to finish before giving up (retryable)
    claim_wait_seconds: float = field(default_factory=lambda: float(env_int("FILEDROP_CLAIM_WAIT_SECONDS", 900)))
