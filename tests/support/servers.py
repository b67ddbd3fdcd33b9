"""Real servers for the tests (DESIGN §7): PostgreSQL 15 from Debian, the embedded PostgreSQL 18,
and moto's S3/SQS server over HTTP. Each starts on a free loopback port and is polled until ready."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psycopg

PG15_BIN = Path(os.environ.get("FILEDROP_TEST_PG15_BIN", "/usr/lib/postgresql/15/bin"))


def _die_with_parent() -> None:
    """Runs in the child before exec: the server dies with the test session, even a killed one."""
    import ctypes
    import signal

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_until(check: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``check`` until it is true; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)  # polling interval, not a wait for a fixed outcome
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def _pg_ready(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def start_debian_postgres() -> tuple[str, Callable[[], None]]:
    """A throwaway PostgreSQL 15 cluster from Debian's packages, run as the ``postgres`` user."""
    server = DebianPostgres().start()
    return server.url, server.stop


def start_embedded_postgres() -> tuple[str, Callable[[], None]]:
    """The embedded PostgreSQL 18 exactly as ``filedrop`` starts it, in a throwaway FILEDROP_HOME."""
    from filedrop.warehouse import EmbeddedPostgres

    home = Path(tempfile.mkdtemp(prefix="filedrop-home-"))
    server = EmbeddedPostgres(home)
    url = server.start()

    def stop() -> None:
        server.stop()
        shutil.rmtree(home, ignore_errors=True)

    return url, stop


def start_moto(host: str = "127.0.0.1") -> tuple[str, Callable[[], None]]:
    """moto in server mode (S3 and SQS over HTTP) on a free port of ``host`` (loopback; the node's bridge
    address when pods must reach it, standing in for AWS outside the cluster)."""
    import urllib.request

    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="filedrop-moto-", suffix=".log", delete=False)
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", host, "-p", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
    endpoint = f"http://{host}:{port}"

    def ready() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"moto server exited: {Path(log.name).read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(endpoint + "/moto-api/", timeout=2):
                return True
        except OSError:
            return False

    wait_until(ready, 60, "moto server")

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    return endpoint, stop


class DebianPostgres:
    """A private PostgreSQL 15 from Debian's packages, run as the ``postgres`` user on a free loopback
    port; a test can restart it (fast shutdown: sessions are cut) on the same port.

    ``pod_address`` (the node's bridge address): also listen there and let the pod network in with a
    password (:func:`tools.k8s.stack.admit_pods`; :attr:`pod_url` is what a pod uses) — it stands in for RDS
    outside the cluster.
    """

    def __init__(self, pod_address: str | None = None) -> None:
        if not (PG15_BIN / "postgres").exists():
            raise RuntimeError(
                f"PostgreSQL 15 server binaries not found in {PG15_BIN}: install Debian's postgresql-15 "
                "(`.ci/run` and `make test-deps` do)"
            )
        self.base = Path(tempfile.mkdtemp(prefix="filedrop-pg15-"))  # traversable by the postgres user
        self.data = self.base / "data"
        self.as_user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.base, "postgres", "postgres")
            self.as_user = ["runuser", "-u", "postgres", "--"]
        subprocess.run(self.as_user + [str(PG15_BIN / "initdb"), "-D", str(self.data), "-U", "postgres",
                                       "--auth=trust", "--encoding=UTF8", "--locale=C"],
                       check=True, capture_output=True)
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarts = 0
        self.listen = "127.0.0.1"
        self.pod_password = self.pod_url = ""
        if pod_address is not None:
            import secrets

            self.pod_password = secrets.token_hex(16)
            self.listen = f"127.0.0.1,{pod_address}"
            self.pod_url = f"postgresql://filedrop:{self.pod_password}@{pod_address}:{self.port}/postgres"

    def start(self) -> DebianPostgres:
        log = open(self.base / "server.log", "ab")
        proc = self.proc = subprocess.Popen(
            self.as_user + [str(PG15_BIN / "postgres"), "-D", str(self.data), "-h", self.listen, "-p",
                            str(self.port), "-k", str(self.base), "-c", "fsync=off", "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        try:
            wait_until(lambda: proc.poll() is None and _pg_ready(self.url), 60, "PostgreSQL 15 to accept connections")
        except TimeoutError:
            proc.kill()
            raise RuntimeError((self.base / "server.log").read_text(errors="replace")[-3000:]) from None
        if self.pod_url and self.restarts == 0:
            from tools.k8s.stack import admit_pods

            admit_pods(self.url, self.data / "pg_hba.conf", self.pod_password)
        return self

    def restart(self) -> None:
        import signal

        assert self.proc is not None
        postmaster = int((self.data / "postmaster.pid").read_text().split()[0])
        os.kill(postmaster, signal.SIGINT)  # fast shutdown: active sessions are cut
        self.proc.wait(60)
        self.restarts += 1
        self.start()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        shutil.rmtree(self.base, ignore_errors=True)
