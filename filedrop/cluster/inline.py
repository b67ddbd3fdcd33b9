"""Small files loaded by the operator itself, without a pod each (``FILEDROP_INLINE_MAX_BYTES``).

A loader Job costs a pod: scheduling, an image's start and Python's imports, seconds for a file of a few
kilobytes. Files up to the threshold are loaded instead in a child process of the operator, forked from a
server process that imported the loader once (``multiprocessing``'s forkserver): the load itself is what
``filedrop load`` does in a Job (same function, same exactly-once protocol, same history rows), in its own
process, so a crash or a runaway parse ends that process and not the operator, and it can be killed.

Before it loads, the child asks S3 for the object's size: an object larger than the threshold (its FileDrop's
``spec.size`` was wrong or absent) or one the operator cannot read (no S3 access given to it) is *declined*:
nothing is written, and the controller gives the same attempt to a loader Job.

The operator's load slots limit these loads like any other; ``FILEDROP_INLINE_LOADS`` caps how many run in
the operator at once (past it, a file gets a Job). The registry is in memory: after an operator restart a
FileDrop whose inline load was running finds none, and the controller decides from the load history (a
load that committed is Loaded; one that did not is retried), as for a Job that vanished. The loads die with
the operator: each is killed when the fork server ends, and the fork server ends when the operator does.
"""

from __future__ import annotations

import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing import forkserver
from typing import Literal

from filedrop.exitcodes import ExitCode
from filedrop.objects import SourceObject
from filedrop.routes import FileRoute

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1  # prctl(2)

#: imported once by the fork server, so each load's process starts with them loaded (``filedrop.cli``: the
#: ``filedrop`` console script, run again in each child as ``__mp_main__``, imports it)
PRELOAD = ["filedrop.cli", "filedrop.load.session", "filedrop.load.sources", "filedrop.config", "boto3",
           "botocore.session", "psycopg"]

#: what a child reports: succeeded, failed (the load ran; the history says how), or declined (nothing done:
#: a loader Job should take it)
Report = Literal["succeeded", "failed", "declined"]
State = Literal["running", "succeeded", "failed", "declined", "none"]
#: the longest message a child sends back (a pipe holds 64 KiB before the sender blocks)
MESSAGE_CAP = 2000


def _die_with_parent() -> None:
    """Linux: this process is killed when its parent, the fork server, ends. The fork server ends when the
    operator does (it reads EOF from a pipe whose write end only the operator holds, once this process has
    closed the copy multiprocessing gives it), so a killed operator leaves no load that its successor races."""
    alive = forkserver._forkserver._forkserver_alive_fd  # type: ignore[attr-defined]
    if alive is not None:
        os.close(alive)
        forkserver._forkserver._forkserver_alive_fd = None  # type: ignore[attr-defined]
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: the load runs to its end, and the history decides
        pass
    if os.getppid() == 1:  # the fork server ended before the prctl
        os._exit(ExitCode.TEMPFAIL)


def _send(report: multiprocessing.connection.Connection, outcome: Report, message: str) -> None:
    from filedrop.warehouse.history import clean

    report.send((outcome, clean(message, MESSAGE_CAP) or ""))


def _load(url: str, route: FileRoute, obj: SourceObject, filedrop: str, replay: str, max_bytes: int,
          log_level: int, report: multiprocessing.connection.Connection) -> None:
    """The child process: one load, as ``filedrop load`` runs it; its outcome is in the history, and a short
    one goes back to the operator through ``report``."""
    _die_with_parent()
    from filedrop import logs
    from filedrop.config import Settings
    from filedrop.load.session import load_object
    from filedrop.load.sources import head

    logs.configure(log_level <= logging.INFO, os.environ.get("FILEDROP_LOG_FORMAT") == "json")
    try:
        size = head(obj.bucket, obj.key, obj.version_id).size
    except Exception as exc:  # noqa: BLE001 - no access, no such object, no endpoint: a Job's loader will say
        _send(report, "declined", f"the operator cannot read s3://{obj.bucket}/{obj.key}: {exc}")
        raise SystemExit(ExitCode.TEMPFAIL) from None
    if size > max_bytes:
        _send(report, "declined", f"s3://{obj.bucket}/{obj.key} is {size} bytes, more than the {max_bytes} "
                                  "the operator loads itself")
        raise SystemExit(ExitCode.TEMPFAIL)
    try:
        result = load_object(url, Settings(), route, obj, engine="direct", filedrop=filedrop, replay=replay)
    except BaseException as exc:  # noqa: BLE001 - reported to the operator, which retries (history decides)
        _send(report, "failed", f"{type(exc).__name__}: {exc}")
        raise SystemExit(ExitCode.TEMPFAIL) from None
    if result.status == "failed":
        _send(report, "failed", result.first_error or result.message or "the load failed")
        raise SystemExit(ExitCode.TEMPFAIL if result.retryable else ExitCode.FAILED)
    _send(report, "succeeded", "")


@dataclass
class _Running:
    filedrop: str  # its FileDrop, namespace/name
    process: multiprocessing.process.BaseProcess
    state: State = "running"
    message: str = ""


class InlineLoads:
    """The operator's inline loads, by FileDrop namespace and load name (``<filedrop>-<attempt>``, like the
    Job it stands for). Thread-safe: the controller runs on kopf's worker threads."""

    def __init__(self, url: str, max_bytes: int, max_running: int, deadline_seconds: float,
                 on_done: Callable[[str], None] = lambda key: None) -> None:
        self.url = url
        self.max_bytes = max_bytes
        self.max_running = max_running
        self.deadline_seconds = deadline_seconds
        #: called with the FileDrop's ``namespace/name`` (from a thread) when its load ends
        self.on_done = on_done
        self._lock = threading.Lock()
        self._loads: dict[tuple[str, str], _Running] = {}  # (namespace, load name) -> the load
        self._context = multiprocessing.get_context("forkserver")
        self._context.set_forkserver_preload(PRELOAD)

    @staticmethod
    def _id(key: str, name: str) -> tuple[str, str]:
        return key.split("/", 1)[0], name

    def warm(self) -> None:
        """Start the fork server now (it imports the loader once), so the first small file does not wait."""
        forkserver.ensure_running()

    def fits(self, size: int) -> bool:
        """A file of ``size`` bytes (as its FileDrop says) is one for the operator (0: unknown, so not)."""
        return 0 < size <= self.max_bytes

    def running(self) -> int:
        with self._lock:
            return sum(1 for r in self._loads.values() if r.state == "running")

    def start(self, key: str, name: str, route: FileRoute, obj: SourceObject, replay: str
              ) -> Literal["started", "exists", "full"]:
        """Start the load ``name`` of the FileDrop ``key`` (namespace/name): ``exists`` when an earlier try of
        this step started it, ``full`` when ``max_running`` loads run already (nothing started)."""
        ident = self._id(key, name)
        with self._lock:
            if ident in self._loads:
                return "exists"
            if sum(1 for r in self._loads.values() if r.state == "running") >= self.max_running:
                return "full"
            receive, send = self._context.Pipe(duplex=False)
            process = self._context.Process(
                target=_load, name=f"load-{name}", daemon=True,
                args=(self.url, route, obj, key.split("/", 1)[1], replay, self.max_bytes,
                      logging.getLogger().getEffectiveLevel(), send))
            process.start()
            send.close()
            self._loads[ident] = _Running(key, process)
        log.info("loading %s in the operator (process %s)", name, process.pid)
        threading.Thread(target=self._wait, args=(key, ident, process, receive), name=f"wait-{name}",
                         daemon=True).start()
        return "started"

    def _wait(self, key: str, ident: tuple[str, str], process: multiprocessing.process.BaseProcess,
              receive: multiprocessing.connection.Connection) -> None:
        state: State = "failed"
        message = ""
        # the report first, as it comes (a child whose report fills the pipe would block), then the exit
        reported = receive.poll(self.deadline_seconds)
        if reported:
            try:
                state, message = receive.recv()
            except (EOFError, OSError):  # the process died before it reported: its exit code says how
                pass
            process.join(30)
        if process.exitcode is None:
            process.kill()
            process.join()
            if not reported:
                message = f"the load ran longer than {self.deadline_seconds:.0f}s in the operator and was stopped"
        if state != "succeeded" and not message:
            message = f"the load process exited with {process.exitcode}"
        if state == "succeeded" and process.exitcode != 0:
            state, message = "failed", f"the load process exited with {process.exitcode}"
        receive.close()
        with self._lock:
            running = self._loads.get(ident)
            if running is not None and running.process is process:
                running.state, running.message = state, message
        log.info("inline load %s %s%s", ident[1], state, f": {message}" if message else "")
        try:
            self.on_done(key)
        except RuntimeError:  # the operator's event loop has closed: it is stopping
            pass

    def state(self, key: str, name: str) -> tuple[State, str]:
        """Like a Job's: ``running``, ``succeeded``, ``failed`` (with why), ``declined`` (a Job should load it),
        or ``none`` when this operator never ran it (it was restarted since) or has forgotten it."""
        with self._lock:
            running = self._loads.get(self._id(key, name))
            if running is None:
                return "none", "the operator that ran this load stopped before it ended"
            return running.state, running.message

    def pid(self, key: str, name: str) -> int | None:
        with self._lock:
            running = self._loads.get(self._id(key, name))
            return running.process.pid if running else None

    def forget(self, key: str, name: str | None) -> None:
        """Drop an ended load's record (its FileDrop moved on)."""
        if not name:
            return
        with self._lock:
            ident = self._id(key, name)
            running = self._loads.get(ident)
            if running is not None and running.state != "running":
                del self._loads[ident]

    def cancel(self, key: str) -> None:
        """The FileDrop ``key`` was deleted: kill its loads (their transactions roll back) and forget them."""
        with self._lock:
            mine = {ident: r for ident, r in self._loads.items() if r.filedrop == key}
            for ident in mine:
                del self._loads[ident]
        self._kill([r.process for r in mine.values()])

    def stop(self) -> None:
        """Kill the loads still running (the operator stops): their transactions roll back, and the next
        operator retries them from what the history says."""
        with self._lock:
            processes = [r.process for r in self._loads.values() if r.state == "running"]
        self._kill(processes)

    @staticmethod
    def _kill(processes: list[multiprocessing.process.BaseProcess]) -> None:
        for process in processes:
            if process.is_alive():
                process.kill()
        for process in processes:
            process.join(10)
