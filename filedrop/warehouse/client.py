"""The one way filedrop talks to PostgreSQL: statements, COPY, advisory locks, and what an error means.

Every other package runs SQL through a :class:`Client` (an import-linter contract keeps psycopg inside
``filedrop.warehouse``). A client is one session with DateStyle, TimeZone and the abbreviations pinned
(:data:`filedrop.warehouse.sql.SESSION_SETUP`), so values read the same whatever the server's defaults,
and with TCP keepalives on both ends, so a dead peer is noticed within about a minute.

Statements are text built by :mod:`filedrop.warehouse.sql` from validated, quoted identifiers; values
are always bound as parameters.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, Literal

import psycopg
from psycopg import errors as pgerrors
from psycopg import sql as pgsql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg.rows import dict_row

from filedrop.warehouse import sql

Row = tuple[Any, ...]
Params = Sequence[Any] | Mapping[str, Any] | None
Cursor = psycopg.Cursor[Row]

#: The server rejected a value (bad data in a file's row): the row, not the warehouse, is at fault.
BadValue = (psycopg.DataError, psycopg.IntegrityError)
#: An ``INSERT … ON CONFLICT`` met the same key twice in one statement.
DuplicateKeys = pgerrors.CardinalityViolation
#: A lock was not granted within the session's ``lock_timeout``.
LockTimeout = pgerrors.LockNotAvailable
#: The server could not run a statement (connection lost, out of resources, cancelled).
ServerError = psycopg.OperationalError
#: A statement that does not fit the database (a missing table or column, bad SQL).
StatementError = psycopg.ProgrammingError
#: Anything the server or the driver raised.
Error = psycopg.Error

#: What a failed statement means for the load that ran it (see :func:`classify`).
Failure = Literal["connection", "retryable", "permanent"]


class WarehouseError(RuntimeError):
    """The warehouse cannot be reached or does not have the shape the routes need."""


def load_lock(load_id: str) -> str:
    """The session lock a live loader holds for its whole load: a free lock means its loader is gone."""
    return f"filedrop.load:{load_id}"


def object_lock(bucket: str, key: str) -> str:
    """The lock on one (bucket, key) that final applies take, so two applies of one object serialize."""
    return f"filedrop.object:{bucket}/{key}"


def claim_lock(bucket: str, key: str) -> str:
    """The session lock a loader holds while it decides about and loads one (bucket, key)."""
    return f"filedrop.claim:{bucket}/{key}"


#: Schema changes (bookkeeping tables, staging tables) take this transaction lock (32-bit hash, as ever).
DDL_LOCK = "filedrop.ddl"


def quote_name(*parts: str) -> str:
    """Any name (a table or column read from the catalog), quoted; dotted when there are several parts.
    Names filedrop creates go through :func:`filedrop.warehouse.sql.ident`, which also validates them."""
    return pgsql.Identifier(*parts).as_string(None)


class CopyStream:
    """One ``COPY``: write bytes or rows into it (``FROM STDIN``) or iterate its data (``TO STDOUT``);
    ``rows`` is what the server counted, once the copy has ended."""

    def __init__(self, copy: psycopg.Copy) -> None:
        self._copy = copy
        self.rows = -1

    def write(self, data: bytes | str) -> None:
        self._copy.write(data)

    def write_row(self, row: Sequence[Any]) -> None:
        self._copy.write_row(row)

    def __iter__(self) -> Iterator[bytes]:
        for block in self._copy:
            yield bytes(block)


def conninfo(url: str) -> dict[str, Any]:
    """The parts of a connection URL or conninfo string (host, port, dbname, user, password…); ValueError
    when it cannot be read (its message never quotes the URL: libpq's would, password included)."""
    try:
        return conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        raise ValueError("it is neither a postgresql:// URL nor a conninfo string libpq can read "
                         "(check its percent-encoding, quoting and spaces)") from None


def _server(params: dict[str, Any]) -> tuple[str, str, str, str]:
    """(host, port, dbname, user) with libpq's defaults for what is left out (psycopg's dsn omits them)."""
    user = str(params.get("user") or os.environ.get("PGUSER") or "")
    return (str(params.get("host") or os.environ.get("PGHOST") or ""),
            str(params.get("port") or os.environ.get("PGPORT") or "5432"),
            str(params.get("dbname") or os.environ.get("PGDATABASE") or user), user)


def conninfo_with(target: str, *, password_from: str) -> str:
    """``target`` with the password of ``password_from`` when ``target`` has none and both name the same
    server, database and user (what either leaves out counts as libpq's default; a ``hostaddr`` only counts
    when both give one); else ``target`` unchanged."""
    mine, theirs = conninfo(target), conninfo(password_from)
    if mine.get("password") or not theirs.get("password") or _server(mine) != _server(theirs):
        return target
    if mine.get("hostaddr") and theirs.get("hostaddr") and mine["hostaddr"] != theirs["hostaddr"]:
        return target
    return make_conninfo(target, password=theirs["password"])


def _with_keepalives(url: str) -> str:
    """``url`` with :data:`~filedrop.warehouse.sql.CLIENT_KEEPALIVES` where it says nothing of them."""
    try:
        given = conninfo(url)
    except ValueError:
        return url  # psycopg.connect says what is wrong with it
    missing = {k: v for k, v in sql.CLIENT_KEEPALIVES.items() if k not in given}
    return make_conninfo(url, **missing) if missing else url


class Client:
    """One warehouse session. Use :meth:`open`; close it (or use it as a context manager) when done."""

    def __init__(self, conn: psycopg.Connection[Row]) -> None:
        self._conn = conn

    @classmethod
    def open(cls, url: str, *, autocommit: bool = True, application_name: str = "filedrop") -> Client:
        try:
            conn = psycopg.connect(_with_keepalives(url), autocommit=autocommit, application_name=application_name)
        except psycopg.OperationalError as exc:
            # The message can contain the URL; never echo a password.
            raise WarehouseError(f"cannot connect to the warehouse: {str(exc).strip().splitlines()[0]}") from None
        client = cls(conn)
        client.execute(sql.SESSION_SETUP)
        if not autocommit:
            conn.commit()
        return client

    def __enter__(self) -> Client:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        """As psycopg's connection: outside autocommit, commit (or roll back on an error); then close."""
        self._conn.__exit__(exc_type, exc, tb)

    # --- statements ------------------------------------------------------------------------------------

    def execute(self, query: str, params: Params = None) -> Cursor:
        return self._conn.execute(query, params)

    def executemany(self, query: str, rows: Sequence[Sequence[Any]]) -> None:
        with self._conn.cursor() as cur:
            cur.executemany(query, rows)

    def one(self, query: str, params: Params = None) -> Row | None:
        return self.execute(query, params).fetchone()

    def all(self, query: str, params: Params = None) -> list[Row]:
        return self.execute(query, params).fetchall()

    def dicts(self, query: str, params: Params = None) -> list[dict[str, Any]]:
        with self._conn.cursor(row_factory=dict_row) as cur:
            return cur.execute(query, params).fetchall()

    def transaction(self) -> AbstractContextManager[psycopg.Transaction]:
        """A transaction (a savepoint when one is already open): committed on exit, rolled back on error."""
        return self._conn.transaction()

    @contextmanager
    def copy(self, statement: str, params: Params = None) -> Iterator[CopyStream]:
        """A ``COPY … FROM STDIN`` / ``TO STDOUT`` (:class:`CopyStream`)."""
        with self._conn.cursor() as cur:
            with cur.copy(statement, params) as copy:
                stream = CopyStream(copy)
                yield stream
            stream.rows = cur.rowcount

    # --- the session -----------------------------------------------------------------------------------

    @property
    def alive(self) -> bool:
        """False once the connection is closed or broken (then nothing more can be done on it)."""
        return not (self._conn.closed or self._conn.broken)

    @property
    def dsn(self) -> str:
        """The session's connection string, without its password."""
        return self._conn.info.dsn

    @property
    def server_version(self) -> int:
        return self._conn.info.server_version

    def commit(self) -> None:
        self._conn.commit()

    def end_transaction(self) -> None:
        """Roll back whatever transaction a failed statement left open."""
        if self.alive and self._conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            self._conn.rollback()

    def close(self) -> None:
        self._conn.close()

    # --- advisory locks (keys are text, hashed to 64 bits) ---------------------------------------------

    def try_lock(self, name: str) -> bool:
        """Take the session lock ``name`` if it is free; True when taken."""
        got = self.one("SELECT pg_try_advisory_lock(hashtextextended(%s, 0))", (name,))
        return bool(got and got[0])

    def lock(self, name: str, wait_seconds: float | None = None) -> bool:
        """Take the session lock ``name``, waiting for its holder at most ``wait_seconds`` (None: as long
        as it takes). False when the wait ran out."""
        if wait_seconds is None:
            self.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (name,))
            return True
        previous = self.one("SELECT current_setting('lock_timeout')")
        try:
            self.execute("SELECT set_config('lock_timeout', %s, false)", (f"{max(1, int(wait_seconds * 1000))}ms",))
            self.execute("SELECT pg_advisory_lock(hashtextextended(%s, 0))", (name,))
            return True
        except (pgerrors.LockNotAvailable, pgerrors.QueryCanceled):
            return False
        finally:
            if self.alive:
                self.execute("SELECT set_config('lock_timeout', %s, false)", (previous[0] if previous else "0",))

    def unlock(self, name: str) -> None:
        self.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))", (name,))

    def lock_for_transaction(self, name: str) -> None:
        """Take the lock ``name`` until the open transaction ends."""
        self.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (name,))

    def lock_ddl(self, name: str = DDL_LOCK) -> None:
        """The transaction lock schema changes serialize on (hashed to 32 bits, as older releases did)."""
        self.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (name,))

    # --- errors ----------------------------------------------------------------------------------------

    def classify(self, exc: BaseException) -> Failure:
        """What a failed statement means: ``connection`` (this session is gone: stop, the next run cleans
        up), ``permanent`` (the server refused this data for good, e.g. a value past a hard limit) or
        ``retryable`` (out of memory, a timeout, a cancelled statement: the same file may load later)."""
        if not self.alive:
            return "connection"
        if isinstance(exc, pgerrors.ProgramLimitExceeded | psycopg.DataError | psycopg.IntegrityError):
            return "permanent"
        return "retryable"


def connect(url: str, *, autocommit: bool = True) -> Client:
    """A warehouse session (:meth:`Client.open`)."""
    return Client.open(url, autocommit=autocommit)
