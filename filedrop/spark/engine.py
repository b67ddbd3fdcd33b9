"""The Spark engine: fills the per-load table of :mod:`filedrop.load.session`'s protocol with Spark.

Adapter layer (pyspark; SQL through the warehouse client). :class:`SparkEngine` has the constructor and
``parse() -> Parsed`` of :class:`~filedrop.load.session.DirectEngine`; the protocol around it (history, onError
rules, the final apply) is the loader's, unchanged. Importing this module registers the engine as
``ENGINES["spark"]`` (:mod:`filedrop.load.engine`).

How a file is read (see :mod:`filedrop.spark.plan` for the numbering):

1. The driver reads the first bytes through Hadoop (``s3a://`` or ``file://``) and checks the header with
   the loader's own :func:`~filedrop.load.session.read_header`.
2. **Parallel path, one read** — Spark reads the file as byte-exact lines in Hadoop splits ("blocks").
   When no line of the first bytes has an odd number of quotes, every line is taken to be one record:
   each block streams its lines, as the file's own bytes, into ``COPY ... (FORMAT csv)`` of the per-load
   table, many sessions at once, numbering its rows from a base of its own (its byte offset); the final
   apply turns those numbers into the file's record numbers (:class:`~filedrop.spark.plan.Numbering`).
   A block that meets a line with an odd number of quotes (a quoted field running over a line end)
   stores nothing; the load table is dropped and the file is planned:
   **parallel path, planned** — job 1 computes each split's quote parities; the driver plans which
   records each split owns and their row numbers; job 2 writes them as above, numbered from the plan.
   PostgreSQL parses and types exactly as in the direct engine, so the rows and their ``_row_number`` are
   the same.
3. **One-task path** — when a split's COPY meets bad data, the file is re-read by a single task that runs
   the direct engine's tolerant pass (same parser, same quarantine, same numbering by construction). The
   same path, both steps, loads files that cannot be split safely: gzip-compressed content whose name does
   not end in ``.gz`` (Hadoop picks codecs by name), ``\\r``-only line ends, a non-ASCII quote, or a record
   longer than :data:`~filedrop.spark.plan.MAX_CONTINUATION` that spans a split boundary.

Trade-off: a ``.gz`` file is one split (gzip cannot be split), so it is read and written by one task; a
file with bad rows pays a second, sequential read; a file whose first multi-line record lies past the first
bytes pays up to three reads. Correct row numbers come first.
"""

from __future__ import annotations

import io
import logging
import time
import zlib
from collections.abc import Callable
from functools import partial
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from filedrop.config import Settings
from filedrop.csvscan import FastPathCheck, NeedsTolerant
from filedrop.load.engine import ENGINES, LoadFailed, Parsed, fast_path_check, first_format_violation, read_header
from filedrop.load.sources import GZIP_MAGIC, ContentChanged, ObjectChanged, ObjectSuperseded, SourceError, local_md5
from filedrop.objects import SourceObject
from filedrop.routes import FileRoute
from filedrop.spark import plan as planning
from filedrop.spark import tasks
from filedrop.spark.conf import hadoop_uri
from filedrop.spark.session import get_session
from filedrop.warehouse import Client, sql

log = logging.getLogger(__name__)

#: Bytes the driver reads to check the header.
HEAD_BYTES = 1 << 20
_HADOOP_CODECS = (".gz", ".bz2", ".deflate", ".lz4", ".snappy", ".zst")


class SparkEngine:
    """Parses one object version into the per-load table with Spark; see the module docstring."""

    name = "spark"

    def __init__(self, conn: Client, settings: Settings, route: FileRoute, obj: SourceObject, load_id: str,
                 on_bytes: Callable[[int], None] | None = None) -> None:
        self.conn, self.settings, self.route, self.obj, self.load_id = conn, settings, route, obj, load_id
        self.on_bytes = on_bytes
        self.meta = settings.meta_schema
        self.src = hadoop_uri(obj.uri, obj.is_s3)
        self.conninfo = conn.dsn
        #: which path the last parse took (``parallel``, ``one-task``), and why, for logs and tests.
        self.path = ""
        self.blocks = 0

    # --- driver-side helpers -------------------------------------------------------------------------

    def _hadoop(self, spark: SparkSession) -> tuple[Any, Any]:
        jvm, jsc = spark.sparkContext._jvm, spark.sparkContext._jsc
        assert jvm is not None and jsc is not None, "a classic (JVM) SparkSession"
        path = jvm.org.apache.hadoop.fs.Path(self.src)
        return path.getFileSystem(jsc.hadoopConfiguration()), path

    def _peek(self, spark: SparkSession) -> bytes:
        """The first bytes of the object, raw, through Hadoop; checks the S3 ETag is still ours."""
        fs, path = _wrap(lambda: self._hadoop(spark))
        self._check_etag(fs, path)
        stream = _wrap(lambda: fs.open(path))
        try:
            return bytes(_wrap(lambda: stream.readNBytes(HEAD_BYTES)))
        finally:
            stream.close()

    def _check_etag(self, fs: Any, path: Any) -> None:
        if not self.obj.is_s3:
            return
        status = _wrap(lambda: fs.getFileStatus(path))
        etag = str(status.getEtag() or "").strip('"') if hasattr(status, "getEtag") else ""
        if etag and etag != self.obj.etag:
            raise ObjectSuperseded(f"{self.obj.display}: overwritten by a newer version (ETag {etag}) before this "
                                   f"one (ETag {self.obj.etag}) was read; the newer version is loaded on its own")

    def _lines(self, spark: SparkSession) -> DataFrame:
        return (spark.read.option("lineSep", "\n").text(self.src)
                .select(F.col("value").cast("binary").alias("line"), F.input_file_block_start().alias("block")))

    # --- parse ---------------------------------------------------------------------------------------

    def parse(self, *, attach: bool = False) -> Parsed:
        # Its tasks COPY from sessions of their own, each committing: the load table cannot be made in
        # the load's one transaction, so a Spark load is always copied into the staging table.
        if attach:
            raise ValueError("the Spark engine does not attach load tables")
        started = time.monotonic()
        spark = get_session()
        fmt = self.route.spec.format
        head = self._peek(spark)
        gz = fmt.compression == "gzip" or (fmt.compression == "auto" and (
            self.obj.key.endswith(".gz") or head[:2] == GZIP_MAGIC))
        text_head = _gunzip_head(head) if gz else head
        file_columns = read_header(io.BufferedReader(io.BytesIO(text_head)), self.route,
                                   self.settings.max_record_bytes)
        hadoop_gz = self.src.endswith(".gz")
        copy_stmt = sql.copy_csv(self.meta, self.load_id, self.route, file_columns)
        reason = _unsplittable(fmt.quote, text_head, gz, hadoop_gz, self.src)
        check: FastPathCheck | None = None
        try:
            check = fast_path_check(self.route, self.settings.max_record_bytes)
        except NeedsTolerant as exc:  # a multi-byte delimiter: only the reference parser reads it
            reason = reason or str(exc)
        parsed: Parsed | None = None
        if reason is None and check is not None:
            try:
                parsed = self._parallel(spark, copy_stmt, check, text_head)
            except planning.NeedsOneTask as exc:
                reason = str(exc)
        if parsed is None:
            self.path = f"one-task ({reason})"
            parsed = self._one_task(spark, gunzip=gz and not hadoop_gz, fast=reason != "bad data")
        if self.obj.is_s3:  # every split was read from the version we were asked to load
            fs, path = _wrap(lambda: self._hadoop(spark))
            self._check_etag(fs, path)
        elif (got := local_md5(self.obj.uri)) != self.obj.etag:  # a local file's etag is the MD5 of its bytes
            raise ContentChanged.of(self.obj.display, got, self.obj.etag)
        if self.on_bytes:
            self.on_bytes(self.obj.size)
        log.info("%s: spark %s, %d rows in %.1fs", self.obj.display, self.path, parsed.rows_good,
                 time.monotonic() - started)
        return parsed

    def _parallel(self, spark: SparkSession, copy_stmt: str, check: FastPathCheck, head: bytes) -> Parsed:
        """One read when lines are records (no quoted field in the first bytes runs over a line end, and
        none after them: the tasks check every line); else a planning pass, then the planned write."""
        lines = self._lines(spark)
        fmt = self.route.spec.format
        if self.src.endswith(".gz"):  # one split (gzip cannot be split): its records start where it does
            parsed = self._write(lines, copy_stmt, check, None, single_line=False)
            assert parsed is not None, "a one-split write never meets a record spanning splits"
            return parsed
        if planning.quoted_line_end(head, fmt.quote, header=fmt.header):
            log.info("%s: a quoted field runs over a line end in the first %d bytes: planning the blocks",
                     self.obj.display, len(head))
        else:
            parsed = self._write(lines, copy_stmt, check, None)
            if parsed is not None:
                return parsed
        t0 = time.monotonic()
        stats = _wrap(lambda: lines.mapInArrow(
            partial(tasks.block_stats, quote=fmt.quote, header=fmt.header), tasks.STATS_SCHEMA).collect())
        blocks = [planning.BlockStats(r.start, r.lines, r.even_ends, r.first_odd, r.parity,
                                      bytes(r.head) if r.head is not None else None) for r in stats]
        plans = planning.make_plan(blocks)
        log.info("%s: %d blocks planned in %.1fs", self.obj.display, len(plans), time.monotonic() - t0)
        parsed = self._write(lines, copy_stmt, check, plans)
        assert parsed is not None, "a planned write never meets a record spanning lines"
        return parsed

    def _write(self, lines: DataFrame, copy_stmt: str, check: FastPathCheck,
               plans: list[planning.BlockPlan] | None, *, single_line: bool = True) -> Parsed | None:
        """COPY every block in parallel. Without ``plans`` every line is a record (None when a task finds
        a quoted field running over a line end: nothing of the load is kept), unless not ``single_line``:
        the file is one block, whose records COPY finds by itself."""
        fmt = self.route.spec.format
        t0 = time.monotonic()
        self.conn.execute(planning.load_table_ddl(self.meta, self.load_id, self.route))
        by_start = {p.start: p for p in plans} if plans is not None else None
        results = _wrap(lambda: lines.mapInArrow(
            partial(tasks.write_blocks, conninfo=self.conninfo, copy_stmt=copy_stmt, plans=by_start,
                    single_line=single_line, header=fmt.header,
                    check=(check.d, check.q, check.dates, check.max_record, check.ascii_only)),
            tasks.WRITE_SCHEMA).collect())
        log.info("%s: %d blocks written in %.1fs", self.obj.display, len(results), time.monotonic() - t0)
        errors = sorted((r.start, r.error) for r in results if r.error)
        numbering: planning.Numbering | None = None
        if not single_line and len(results) > 1:  # never seen: Hadoop does not split a .gz file
            self._drop()
            raise planning.NeedsOneTask(f"a .gz file read as {len(results)} splits")
        if plans is None:
            if any(error == tasks.SPANS_LINES for _, error in errors):
                log.info("%s: a quoted field runs over a line end in the block at byte %d: planning the blocks",
                         self.obj.display, next(start for start, error in errors if error == tasks.SPANS_LINES))
                self._drop()
                return None
            numbering = planning.Numbering.of([(r.start, r.rows) for r in results])
            if numbering is None:  # never seen: a block with more lines than bytes
                log.warning("%s: blocks' row numbers overlap: planning the blocks", self.obj.display)
                self._drop()
                return None
        else:
            written = {r.start for r in results}
            missing = [p.start for p in plans if p.start not in written]
            if missing:
                raise LoadFailed(f"Spark wrote no result for the block(s) at byte {missing}", retryable=True)
        if errors:
            log.info("%s: COPY met bad data in block at byte %d (%s); re-reading with the tolerant parser",
                     self.obj.display, *errors[0])
            self._drop()
            raise planning.NeedsOneTask("bad data")
        violation = first_format_violation(self.conn, self.meta, self.load_id, self.route)
        if violation is not None:
            log.info("%s: record %s has a date not in its column's format; re-reading with the tolerant "
                     "parser", self.obj.display, numbering.row(violation) if numbering else violation)
            self._drop()
            raise planning.NeedsOneTask("bad data")
        rows = planning.total_rows(plans) if plans is not None else sum(r.rows for r in results)
        stored = self._count()
        if stored != rows:  # e.g. a task re-run after its COPY committed: never apply such a table
            raise LoadFailed(f"the load table holds {stored} rows, Spark "
                             f"{'planned' if plans is not None else 'wrote'} {rows}",
                             retryable=True)
        self.blocks = len(results)
        self.path = f"parallel ({len(results)} blocks, {'planned' if plans is not None else 'one pass'})"
        return Parsed(rows, rows, 0, row_number=numbering.sql() if numbering else None)

    def _drop(self) -> None:
        for stmt in sql.drop_load_tables(self.meta, self.load_id):
            self.conn.execute(stmt)

    def _count(self) -> int:
        row = self.conn.one(f"SELECT count(*) FROM {sql.qualified(self.meta, sql.load_table_name(self.load_id))}")
        return int(row[0]) if row else 0

    def _one_task(self, spark: SparkSession, *, gunzip: bool, fast: bool) -> Parsed:
        """The direct engine's two steps (fast COPY, then the tolerant pass if needed), each in one task."""
        lines = self._lines(spark).coalesce(1)
        run = partial(tasks.reference_parse, conninfo=self.conninfo, settings=self.settings, route=self.route,
                      obj=self.obj, load_id=self.load_id, gunzip=gunzip,
                      exact_size=self.obj.size if gunzip else None)
        self.conn.execute(sql.load_table_ddl(self.meta, self.load_id, self.route))
        for step in (("fast", "tolerant") if fast else ("tolerant",)):
            collect = partial(lambda s: lines.mapInArrow(partial(run, step=s), tasks.REFERENCE_SCHEMA).collect(), step)
            [row] = _wrap(collect)
            if row.outcome == "failed":
                raise LoadFailed(row.first_error, line=row.first_error_line)
            if row.outcome == "ok":
                out = Parsed(row.rows_parsed, row.rows_good, row.rows_rejected, row.first_error,
                             row.first_error_line)
                if row.note:
                    out.notes.append(row.note)
                return out
            log.info("%s: COPY stopped at bad data (%s), quarantining bad rows", self.obj.display, row.first_error)
        raise AssertionError("the tolerant step always ends in ok or failed")


def _unsplittable(quote: str, head: bytes, gz: bool, hadoop_gz: bool, src: str) -> str | None:
    """Why the file must be read by one task, or None when the parallel path is exact."""
    if gz != hadoop_gz:
        return "gzip content without the .gz name Hadoop needs" if gz else "not gzip despite its .gz name"
    if any(src.endswith(ext) for ext in _HADOOP_CODECS if ext != ".gz"):
        return "a compression codec name the direct engine does not decompress"
    if not quote.isascii():
        return "non-ASCII quote character"
    first_end = head.find(b"\n")
    first = head if first_end < 0 else head[:first_end]
    if b"\r" in first.rstrip(b"\r"):
        return "carriage-return line ends"
    return None


def _gunzip_head(data: bytes) -> bytes:
    try:
        return zlib.decompressobj(wbits=31).decompress(data, HEAD_BYTES * 4)
    except zlib.error as exc:
        raise LoadFailed(f"cannot decompress: {exc}") from None


def _wrap(call: Callable[[], Any]) -> Any:
    """Run a Spark/JVM call; turn its failures into the protocol's errors with a one-line message."""
    try:
        return call()
    except (LoadFailed, SourceError, planning.NeedsOneTask):
        raise
    except Exception as exc:  # noqa: BLE001 - py4j and Spark raise many types; classified by message
        text = str(exc)
        short = _first_line(text)
        if "EOFException" in text and ("end of input stream" in text or "Unexpected end" in text):
            raise LoadFailed(f"truncated gzip file: {short}") from None
        if "ZipException" in text or "Not in GZIP format" in text or "incorrect header check" in text:
            raise LoadFailed(f"cannot decompress: {short}") from None
        if "RemoteFileChangedException" in text:  # S3A change detection: overwritten while being read
            raise ObjectSuperseded(f"overwritten by a newer version while being read: {short}") from None
        if "FileNotFoundException" in text:
            raise ObjectChanged(f"the object (version) no longer exists: {short}") from None
        if "LoadFailed" in text or "PythonException" in text:
            raise LoadFailed(f"Spark task failed: {short}", retryable=True) from None
        raise LoadFailed(f"Spark job failed: {short}", retryable=True) from None


def _first_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in lines:  # the most specific line: a Java or Python exception with its message
        if "Exception:" in ln or "Error:" in ln:
            return ln[:500]
    return (lines[0] if lines else text)[:500]


ENGINES["spark"] = SparkEngine
