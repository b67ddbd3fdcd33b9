"""When the operator looks at a FileDrop again. Adapter layer (asyncio; no kopf, no API client).

Every FileDrop with work left has one follower (:func:`follow`, run by a kopf daemon in
:mod:`filedrop.cluster.handlers`). It takes the FileDrop's next step through the controller, then sleeps until
what it waits for happens: its Job or SparkApplication ends (a watch event wakes it), a load slot frees
(the follower that freed it wakes those queued), a replay is asked for, or its backoff is over; at the latest
after ``recheck`` seconds, should a watch event have been missed. A waiting FileDrop costs no API call;
once final, the follower sleeps until kopf stops it (at once: its filter no longer matches).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from filedrop.cluster.controller import Controller, Result
from filedrop.cluster.view import FileDropError, FileDropView

log = logging.getLogger(__name__)

#: runs a blocking call (the controller's API and warehouse work) off the event loop
Execute = Callable[[Callable[[], Result]], Awaitable[Result]]
Event = tuple[str, str, str]


class Stopped(Protocol):
    """kopf's ``stopped`` flag of a daemon (true once the follower must end)."""

    def __bool__(self) -> bool: ...

    def wait(self) -> Awaitable[object]: ...


class Wakeups:
    """One asyncio event per followed FileDrop (by ``namespace/name``). Used from the event loop only."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}
        self._queued: set[str] = set()

    def register(self, key: str) -> asyncio.Event:
        event = self._events[key] = asyncio.Event()
        return event

    def unregister(self, key: str, event: asyncio.Event) -> None:
        if self._events.get(key) is event:
            del self._events[key]
            self._queued.discard(key)

    def wake(self, key: str) -> None:
        """Make the FileDrop's follower look again now (nothing when none follows it)."""
        event = self._events.get(key)
        if event is not None:
            event.set()

    def mark_queued(self, key: str, queued: bool) -> None:
        (self._queued.add if queued else self._queued.discard)(key)

    def wake_queued(self) -> None:
        """A load slot freed: the queued FileDrops look whether it is theirs (those that wait cost no call)."""
        for key in list(self._queued):
            self.wake(key)

    def __contains__(self, key: str) -> bool:
        return key in self._events


def newest(live: Mapping[str, Any], written: Mapping[str, Any] | None) -> Mapping[str, Any]:
    """The later of the body kopf last saw and the one our own status patch returned.

    The patch's answer can be ahead of the watch (its event is on its way); the watch can be ahead of it
    (an annotation since). The API server's resourceVersions are etcd revisions: the larger one is newer.
    """
    if written is None:
        return live
    try:
        later = int(written["metadata"]["resourceVersion"]) > int(live["metadata"]["resourceVersion"])
    except (KeyError, TypeError, ValueError):
        return live
    return written if later else live


async def _sleep(wake: asyncio.Event, stopped: Stopped, seconds: float | None) -> None:
    """Until woken, stopped, or ``seconds`` passed (None: until woken or stopped)."""
    waiters = [asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stopped.wait())]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


def error_backoff(failures: int) -> float:
    """Seconds before trying again after ``failures`` errors in a row (the warehouse restarting, say)."""
    return float(min(60, 2 ** min(failures, 6)))


async def follow(key: str, read: Callable[[], Mapping[str, Any]], controller: Controller, wakeups: Wakeups,
                 stopped: Stopped, execute: Execute, post: Callable[[Event], None], recheck: float) -> None:
    """Take the FileDrop's steps until ``stopped`` (kopf stops the follower when the FileDrop becomes final,
    is deleted, or the operator stops); once final it sleeps until stopped or woken (a replay)."""
    wake = wakeups.register(key)
    written: Mapping[str, Any] | None = None
    failures = 0
    reported = ""
    try:
        while not stopped:
            wake.clear()
            try:
                fd = FileDropView.parse(newest(read(), written))
                # queued already while it looks: a slot freed meanwhile wakes it again
                wakeups.mark_queued(key, fd.status.phase == "Queued")
                result = await execute(functools.partial(controller.reconcile, fd))
            except FileDropError as exc:
                if str(exc) != reported:  # once, not at every look
                    log.error("%s", exc)
                    post(("Warning", "InvalidFileDrop", str(exc)))
                    reported = str(exc)
                delay: float | None = recheck
            except Exception:  # noqa: BLE001 - logged; the follower carries on after a pause
                failures += 1
                delay = error_backoff(failures)
                wakeups.wake_queued()  # the step may have freed a load slot before it failed
                log.exception("FileDrop %s: step failed; trying again in %.0fs", key, delay)
            else:
                failures = 0
                written = result.body or written
                if result.event:
                    post(result.event)
                if result.released:
                    wakeups.wake_queued()
                wakeups.mark_queued(key, result.phase == "Queued")
                # a final FileDrop sleeps until stopped or a replay wakes it; the others look again at the latest
                # after ``recheck``, should a watch event have been missed
                delay = None if result.terminal else recheck if result.delay is None else min(result.delay, recheck)
            if delay is None or delay > 0:
                await _sleep(wake, stopped, delay)
    finally:
        wakeups.unregister(key, wake)
