"""A counting reverse proxy in front of kube-apiserver: plain HTTP on loopback, TLS to the API server.

A client given a kubeconfig whose server is :attr:`CountingProxy.url` (and its own bearer token) talks to
the real API server as before, and every request it makes is recorded (time, method, path and query), so
a test can say exactly how many API calls a component made in a time window. Responses are streamed, so
watches work through it.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from tests.support.servers import free_port

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length"}


@dataclass(frozen=True)
class Request:
    at: float  # time.monotonic()
    method: str
    path: str  # with the query string

    @property
    def is_watch(self) -> bool:
        return "watch=true" in self.path or "watch=1" in self.path


class CountingProxy:
    def __init__(self, upstream: str, ca_pem: str | None) -> None:
        self.upstream = upstream.rstrip("/")
        self.ssl = ssl.create_default_context(cadata=ca_pem) if ca_pem else False
        self.port = free_port()
        self.requests: list[Request] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="apiproxy", daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CountingProxy:
        self._thread.start()
        if not self._ready.wait(30):
            raise RuntimeError("the counting proxy did not start")
        return self

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    async def _close(self) -> None:
        await self._session.close()  # ends the streams (watches) still open upstream
        assert self._runner is not None
        await self._runner.cleanup()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def between(self, start: float, end: float) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if start <= r.at < end]

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None),
                                              auto_decompress=False)
        app = web.Application(client_max_size=64 << 20)
        app.router.add_route("*", "/{tail:.*}", self._forward)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        with self._lock:
            self.requests.append(Request(time.monotonic(), request.method, request.path_qs))
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        # a request without a Content-Type (the kubernetes client sends none with some bodies) must not get one
        skip = () if "Content-Type" in request.headers else ("Content-Type",)
        async with self._session.request(request.method, self.upstream + request.path_qs, headers=headers,
                                         data=body or None, ssl=self.ssl, allow_redirects=False,
                                         skip_auto_headers=skip) as upstream:
            response = web.StreamResponse(status=upstream.status, headers={
                k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP})
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (ConnectionResetError, aiohttp.ClientError):
                pass  # the client went away (a watch it stopped): nothing to deliver to
            return response
