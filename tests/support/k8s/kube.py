"""A small Kubernetes REST client on the standard library (plus PyYAML for kubeconfigs).

Used by the test fixtures so that they depend on nothing
but the API server's own wire format: JSON objects in, JSON objects out.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import socket
import ssl
import tempfile
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


class ApiError(Exception):
    def __init__(self, status: int, body: str, method: str, path: str):
        self.status = status
        self.body = body
        try:
            self.obj = json.loads(body)
        except ValueError:
            self.obj = {}
        self.message = self.obj.get("message", body[:500])
        super().__init__(f"{method} {path}: {status} {self.message}")


class Kube:
    """Talks to the API server named by a kubeconfig's current context.

    Supports what kubeconfigs for test clusters use: CA data or file (or
    insecure-skip-tls-verify), client certificates (data or files), bearer tokens.
    """

    def __init__(self, kubeconfig: str | os.PathLike):
        cfg = yaml.safe_load(Path(kubeconfig).read_text())
        ctx_name = cfg["current-context"]
        ctx = next(c["context"] for c in cfg["contexts"] if c["name"] == ctx_name)
        cluster = next(c["cluster"] for c in cfg["clusters"] if c["name"] == ctx["cluster"])
        user = next((u["user"] for u in cfg.get("users", []) if u["name"] == ctx.get("user")), {})
        self.namespace = ctx.get("namespace", "default")
        url = urllib.parse.urlsplit(cluster["server"])
        self.host, self.port = url.hostname, url.port or 443
        self.base_path = url.path.rstrip("/")
        self._tmp = tempfile.TemporaryDirectory(prefix="kube-")

        def material(data_key: str, file_key: str, src: dict) -> str | None:
            if src.get(data_key):
                p = Path(self._tmp.name) / data_key
                p.write_bytes(base64.b64decode(src[data_key]))
                return str(p)
            return src.get(file_key)

        if cluster.get("insecure-skip-tls-verify"):
            self.ssl = ssl._create_unverified_context()
        else:
            self.ssl = ssl.create_default_context(
                cafile=material("certificate-authority-data", "certificate-authority", cluster))
        cert = material("client-certificate-data", "client-certificate", user)
        key = material("client-key-data", "client-key", user)
        if cert and key:
            self.ssl.load_cert_chain(cert, key)
        self.token = user.get("token")
        if not self.token and user.get("tokenFile"):
            self.token = Path(user["tokenFile"]).read_text().strip()
        self.server = cluster["server"]
        self._ca_data = cluster.get("certificate-authority-data")

    def _conn(self, timeout: float | None) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(self.host, self.port, context=self.ssl, timeout=timeout)

    def _headers(self, content_type: str | None) -> dict[str, str]:
        h = {"Accept": "application/json", "User-Agent": "filedrop-tests"}
        if content_type:
            h["Content-Type"] = content_type
        if self.token:
            h["Authorization"] = f"Bearer {self.token}"
        return h

    def request(self, method: str, path: str, body: Any = None, *,
                content_type: str = "application/json", query: dict | None = None,
                timeout: float = 30.0) -> Any:
        full = self.base_path + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = None if body is None else (body if isinstance(body, (bytes, str)) else json.dumps(body))
        conn = self._conn(timeout)
        try:
            conn.request(method, full, body=data, headers=self._headers(content_type if data else None))
            resp = conn.getresponse()
            text = resp.read().decode("utf-8", "replace")
        finally:
            conn.close()
        if resp.status >= 400:
            raise ApiError(resp.status, text, method, path)
        return json.loads(text) if text else None

    def get(self, path: str, **kw) -> Any:
        return self.request("GET", path, **kw)

    def create(self, path: str, obj: dict, **kw) -> Any:
        return self.request("POST", path, obj, **kw)

    def delete(self, path: str, **kw) -> Any:
        return self.request("DELETE", path, **kw)

    def merge_patch(self, path: str, patch: dict, **kw) -> Any:
        return self.request("PATCH", path, patch, content_type="application/merge-patch+json", **kw)

    def watch(self, path: str, resource_version: str, *, timeout_seconds: int = 60,
              stop: threading.Event | None = None) -> Iterator[dict]:
        """Yield watch events ({"type", "object"}) until the server ends the watch.

        Raises ApiError(410) when resource_version is too old. stop(), set from
        another thread, ends the iteration promptly (see `Watcher`).
        """
        query = {"watch": "1", "resourceVersion": resource_version, "allowWatchBookmarks": "true",
                 "timeoutSeconds": str(timeout_seconds)}
        full = self.base_path + path + "?" + urllib.parse.urlencode(query)
        conn = self._conn(timeout_seconds + 30)
        try:
            conn.request("GET", full, headers=self._headers(None))
            resp = conn.getresponse()
            if resp.status >= 400:
                raise ApiError(resp.status, resp.read().decode("utf-8", "replace"), "WATCH", path)
            if stop is not None:
                stop_conn = threading.Thread(target=_close_on, args=(stop, conn), daemon=True)
                stop_conn.start()
            while True:
                try:
                    line = resp.readline()
                except (OSError, ValueError, http.client.HTTPException):
                    return
                if not line:
                    return
                event = json.loads(line)
                if event.get("type") == "ERROR":
                    status = event.get("object", {})
                    raise ApiError(status.get("code", 500), json.dumps(status), "WATCH", path)
                yield event
        finally:
            conn.close()


def _close_on(stop: threading.Event, conn: http.client.HTTPSConnection) -> None:
    """Unblock a reader of conn as soon as stop is set (or give up when conn closes)."""
    while not stop.wait(1.0):
        if conn.sock is None:
            return
    sock = conn.sock
    if sock is not None:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def token_kubeconfig(server: str, ca_data: str | None, token: str, namespace: str = "default") -> str:
    """A kubeconfig (JSON, which is YAML) that authenticates with a bearer token."""
    cluster: dict[str, Any] = {"server": server}
    if ca_data:
        cluster["certificate-authority-data"] = ca_data
    return json.dumps({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u", "namespace": namespace}}],
        "current-context": "c",
    }, indent=2) + "\n"
