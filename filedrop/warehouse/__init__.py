"""The PostgreSQL warehouse: the only package that talks to the database.

* :mod:`~filedrop.warehouse.client` — :class:`Client`, one session: statements, COPY, advisory locks,
  and what a failed statement means (retry or not);
* :mod:`~filedrop.warehouse.server` — where the warehouse is (a URL, or the embedded PostgreSQL);
* :mod:`~filedrop.warehouse.schema` — the bookkeeping and staging tables, created or checked idempotently;
* :mod:`~filedrop.warehouse.history` — the per-file load history (``ingest_history``);
* :mod:`~filedrop.warehouse.sql` — the SQL text, from validated and quoted identifiers (pure).
"""

from filedrop.warehouse.client import Client, WarehouseError, connect
from filedrop.warehouse.schema import ensure_meta, ensure_staging, prepare_meta
from filedrop.warehouse.server import EmbeddedPostgres, resolve_url

__all__ = ["Client", "EmbeddedPostgres", "WarehouseError", "connect", "ensure_meta", "ensure_staging",
           "prepare_meta", "resolve_url"]
