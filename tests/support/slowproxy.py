"""A slow network in front of a real server: a TCP proxy that delays each connection's first byte
and caps its bandwidth. The fault-injection suite puts it between the loaders and moto's S3, so
reads are slow the way a distant or throttled S3 is slow (the bytes themselves are moto's)."""

from __future__ import annotations

import socket
import threading
import time

from tests.support.servers import free_port


class SlowProxy:
    """``<host>:<port>`` forwards to ``target``; responses flow at ``bytes_per_second``. ``host`` is
    loopback, or the node's bridge address when pods are the clients."""

    def __init__(self, target: str, *, bytes_per_second: int = 2 << 20, latency: float = 0.05,
                 host: str = "127.0.0.1") -> None:
        target_host, target_port = target.removeprefix("http://").rsplit(":", 1)
        self.target = (target_host, int(target_port))
        self.rate, self.latency = bytes_per_second, latency
        self.port = free_port()
        self.host = host
        self._server = socket.create_server((host, self.port))
        self._stop = threading.Event()
        self.connections = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> SlowProxy:
        threading.Thread(target=self._accept, name="slowproxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            self.connections += 1
            try:
                upstream = socket.create_connection(self.target, timeout=30)
            except OSError:
                client.close()
                continue
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, throttled: bool) -> None:
        chunk = 16 << 10
        first = True
        try:
            while data := src.recv(chunk):
                if throttled:
                    # the throttle itself: latency before the first byte, then bytes at the capped rate
                    time.sleep((self.latency if first else 0) + len(data) / self.rate)
                    first = False
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
