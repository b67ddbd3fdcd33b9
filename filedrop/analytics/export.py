"""Export the analytics tables to S3 as CSV (DESIGN §1): ``<to>/analytics_export/<id>/<table>.csv``.

Adapter layer. Each table streams from PostgreSQL ``COPY (...) TO STDOUT`` straight into a boto3
(multipart) upload, so memory holds a few upload parts, never a table. An export replaces the
previous one under the same prefix: every table is written, then objects of earlier exports that
this one did not write (tables since dropped) are deleted; other objects there are left alone.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from filedrop.load.sources import Location, SourceError, s3_client
from filedrop.warehouse import Client, connect
from filedrop.warehouse.client import quote_name

EXPORT_DIR = "analytics_export"
_PART = 8 * 1024 * 1024


class ExportError(RuntimeError):
    """The export target or the analytics schema is not usable."""


def export_id(analytics_schema: str, override: str | None = None) -> str:
    """The ``<id>`` of the export path: given, else ``FILEDROP_EXPORT_ID``, else the analytics schema
    without the brief's ``_analytics`` suffix (``abc123_analytics`` -> ``abc123``)."""
    value = override or os.environ.get("FILEDROP_EXPORT_ID") or analytics_schema.removesuffix("_analytics")
    if not value or "/" in value or value in (".", ".."):
        raise ExportError(f"export id {value!r} is not usable as one path segment")
    return value


def export_prefix(to: str, ident: str) -> tuple[str, str]:
    """(bucket, key prefix ending in ``/``) for ``--to s3://bucket/prefix``."""
    try:
        bucket, base = Location.s3_prefix(to, "--to")
    except SourceError as exc:
        raise ExportError(str(exc)) from None
    return bucket, "/".join(p for p in (base, EXPORT_DIR, ident) if p) + "/"


def select_sql(schema: str, table: str, columns: list[tuple[str, str]]) -> str:
    """The COPY query of one table: all columns in order, booleans as true/false, ordered by its first
    column (the key, ingestion_date) so exports are stable."""
    items = [f"{quote_name(c)}::text AS {quote_name(c)}" if t == "boolean" else quote_name(c) for c, t in columns]
    return (f"COPY (SELECT {', '.join(items)} FROM {quote_name(schema, table)} ORDER BY 1) "
            "TO STDOUT WITH (FORMAT csv, HEADER true)")


@dataclass(frozen=True)
class ExportedTable:
    table: str
    uri: str
    rows: int
    bytes: int


@dataclass(frozen=True)
class ExportReport:
    tables: list[ExportedTable]
    removed: list[str]


class _CopyReader(io.RawIOBase):
    """A read-only stream over the chunks (about a row each) of a ``COPY ... TO STDOUT``.

    ``readinto`` fills the caller's buffer as far as the data goes: one ``read`` is one upload part,
    and S3 wants parts of at least 5 MiB.
    """

    def __init__(self, chunks: Iterator[Any]) -> None:
        self._chunks = chunks
        self._chunk = b""
        self._pos = 0
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        view = memoryview(b).cast("B")
        filled = 0
        while filled < len(view):
            if self._pos >= len(self._chunk):
                chunk = next(self._chunks, None)
                if chunk is None:
                    break
                self._chunk, self._pos = bytes(chunk), 0
                continue
            n = min(len(view) - filled, len(self._chunk) - self._pos)
            view[filled:filled + n] = self._chunk[self._pos:self._pos + n]
            filled += n
            self._pos += n
        self.size += filled
        return filled


def analytics_tables(conn: Client, schema: str) -> dict[str, list[tuple[str, str]]]:
    """Base tables of the analytics schema with their (column, type) lists; dbt's scratch tables left out."""
    rows = conn.all(
        """SELECT c.relname, a.attname, format_type(a.atttypid, a.atttypmod)
           FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
           JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
           WHERE n.nspname = %s AND c.relkind IN ('r', 'p') AND c.relname NOT LIKE '%%\\_\\_dbt\\_%%'
           ORDER BY c.relname, a.attnum""", (schema,))
    out: dict[str, list[tuple[str, str]]] = {}
    for table, column, typ in rows:
        out.setdefault(str(table), []).append((str(column), str(typ)))
    return out


def export(url: str, to: str, analytics_schema: str = "analytics", ident: str | None = None, *,
           client: Any = None, on_table: Callable[[ExportedTable], None] | None = None) -> ExportReport:
    """Write every analytics table to ``<to>/analytics_export/<id>/<table>.csv`` (with a header row)."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = export_prefix(to, export_id(analytics_schema, ident))
    client = client or s3_client()
    try:
        return _export(url, analytics_schema, bucket, prefix, client, on_table)
    except (BotoCoreError, ClientError) as exc:
        raise ExportError(f"cannot write to s3://{bucket}/{prefix}: {exc}") from None


def _upload(client: Any, reader: io.RawIOBase, bucket: str, key: str) -> None:
    """Upload a stream part by part, one part in memory at a time.

    boto3's ``upload_fileobj`` reads a non-seekable stream ahead of its uploads (measured: the peak grew
    from ~30 MB to ~44 MB between a 39 MB and a 78 MB table), so the multipart calls are made here.
    """
    extra = {"ContentType": "text/csv; charset=utf-8"}
    data = reader.read(_PART) or b""
    if len(data) < _PART:
        client.put_object(Bucket=bucket, Key=key, Body=data, **extra)
        return
    upload_id = client.create_multipart_upload(Bucket=bucket, Key=key, **extra)["UploadId"]
    parts: list[dict[str, Any]] = []
    try:
        while data:
            number = len(parts) + 1
            etag = client.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data)["ETag"]
            parts.append({"ETag": etag, "PartNumber": number})
            data = reader.read(_PART) or b""
        client.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts})
    except BaseException:
        client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        raise


def _export(url: str, analytics_schema: str, bucket: str, prefix: str, client: Any,
            on_table: Callable[[ExportedTable], None] | None) -> ExportReport:
    written: list[ExportedTable] = []
    with connect(url) as conn:
        tables = analytics_tables(conn, analytics_schema)
        if not tables:
            raise ExportError(f"schema {analytics_schema!r} has no tables to export (run `filedrop transform` first)")
        for table, columns in tables.items():
            key = f"{prefix}{table}.csv"
            with conn.copy(select_sql(analytics_schema, table, columns)) as copy:
                reader = _CopyReader(iter(copy))
                _upload(client, reader, bucket, key)
            rows = max(copy.rows, 0)
            item = ExportedTable(table, f"s3://{bucket}/{key}", rows, reader.size)
            written.append(item)
            if on_table:
                on_table(item)
    keep = {f"{prefix}{t.table}.csv" for t in written}
    removed = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            name = obj["Key"][len(prefix):]
            if obj["Key"] not in keep and name.endswith(".csv") and "/" not in name:
                client.delete_object(Bucket=bucket, Key=obj["Key"])
                removed.append(f"s3://{bucket}/{obj['Key']}")
    return ExportReport(written, removed)
