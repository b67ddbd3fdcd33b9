"""The dbt docs site in the cluster: published to S3 by the workflow, served by the chart's docs server.

Adapter layer (boto3, HTTP). ``dbt docs generate --static`` makes one self-contained ``index.html``;
:func:`publish` uploads a directory of such files under an ``s3://bucket/prefix``, and :class:`DocsSite`
serves what is under that prefix over HTTP, from memory, re-reading S3 when asked (``POST /-/reload``,
which the publishing step calls) and otherwise every ``refresh`` seconds. The server is stateless, so it
needs no volume and any number of replicas serve the same docs.
"""

from __future__ import annotations

import logging
import mimetypes
import posixpath
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from filedrop.load.sources import Location, SourceError, s3_client

log = logging.getLogger(__name__)

RELOAD_PATH = "/-/reload"
HEALTH_PATH = "/healthz"
#: The docs site is one HTML file of a few MB; anything far bigger under the prefix is not ours to serve.
MAX_OBJECT_BYTES = 64 * 1024 * 1024


class DocsError(RuntimeError):
    """The docs cannot be published or read (bad URI, missing files)."""


class DocsUnavailable(DocsError):
    """S3 or the docs server did not answer or refused: a later attempt may succeed."""


def split_uri(uri: str) -> tuple[str, str]:
    """(bucket, key prefix ending in ``/`` or empty) of ``s3://bucket/prefix``."""
    try:
        bucket, prefix = Location.s3_prefix(uri, "the docs location")
    except SourceError as exc:
        raise DocsError(str(exc)) from None
    return bucket, f"{prefix}/" if prefix else ""


def content_type(name: str) -> str:
    if name.endswith(".json"):
        return "application/json"
    guessed = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


@dataclass(frozen=True)
class Published:
    uri: str
    bytes: int


def publish(source: Path, to: str, client: Any = None) -> list[Published]:
    """Upload every file under ``source`` to ``to`` (same relative paths), ``index.html`` last so a
    reader never gets a new page that points at files not there yet."""
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, prefix = split_uri(to)
    files = sorted((p for p in source.rglob("*") if p.is_file()), key=lambda p: (p.name == "index.html", str(p)))
    if not any(p.name == "index.html" for p in files):
        raise DocsError(f"no index.html under {source} (did `dbt docs generate` run?)")
    client = client or s3_client()
    done = []
    for path in files:
        key = prefix + path.relative_to(source).as_posix()
        try:
            client.upload_file(str(path), bucket, key, ExtraArgs={"ContentType": content_type(path.name)})
        except (BotoCoreError, ClientError) as exc:
            raise DocsUnavailable(f"cannot write s3://{bucket}/{key}: {exc}") from None
        done.append(Published(f"s3://{bucket}/{key}", path.stat().st_size))
    return done


def notify(url: str, timeout: float = 10.0) -> str:
    """Ask a docs server to re-read S3 now; returns its answer."""
    req = urllib.request.Request(url, method="POST", data=b"")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - the chart's own service URL
            return str(resp.read().decode(errors="replace")).strip()
    except OSError as exc:
        raise DocsUnavailable(f"the docs server at {url} did not take the reload: {exc}") from None


@dataclass(frozen=True)
class Page:
    body: bytes
    content_type: str
    etag: str


class DocsSite:
    """What is under ``s3://bucket/prefix``, kept in memory: ``{relative path: Page}``."""

    def __init__(self, uri: str, client: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.bucket, self.prefix = split_uri(uri)
        self.uri = uri
        self._client = client
        self._clock = clock
        self._lock = threading.Lock()
        self._pages: dict[str, Page] = {}
        self.loaded_at: float | None = None
        self.error: str | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = s3_client()
        return self._client

    def reload(self) -> int:
        """Re-read the prefix (unchanged objects are not downloaded again); the number of pages."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            pages: dict[str, Page] = {}
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    rel = obj["Key"][len(self.prefix):]
                    if not rel or rel.endswith("/") or int(obj["Size"]) > MAX_OBJECT_BYTES:
                        continue
                    etag = obj["ETag"].strip('"')
                    with self._lock:
                        known = self._pages.get(rel)
                    if known is not None and known.etag == etag:
                        pages[rel] = known
                        continue
                    body = self.client.get_object(Bucket=self.bucket, Key=obj["Key"])["Body"].read()
                    pages[rel] = Page(body, content_type(rel), etag)
        except (BotoCoreError, ClientError) as exc:
            self.error = f"cannot read {self.uri}: {exc}"
            log.warning("%s", self.error)
            raise DocsUnavailable(self.error) from None
        with self._lock:
            self._pages = pages
            self.loaded_at = self._clock()
            self.error = None
        return len(pages)

    def get(self, path: str) -> Page | None:
        rel = posixpath.normpath("/" + path.split("?", 1)[0]).lstrip("/")
        if rel in ("", "."):
            rel = "index.html"
        with self._lock:
            return self._pages.get(rel) or self._pages.get(posixpath.join(rel, "index.html"))

    def stale(self, refresh: float) -> bool:
        return self.loaded_at is None or self._clock() - self.loaded_at >= refresh


def make_server(site: DocsSite, host: str, port: int, refresh: float = 300.0) -> ThreadingHTTPServer:
    """An HTTP server for ``site``: ``GET`` pages, ``POST /-/reload``, ``GET /healthz``."""
    reload_lock = threading.Lock()

    def refresh_if_stale() -> None:
        if site.stale(refresh) and reload_lock.acquire(blocking=False):
            try:
                site.reload()
            except DocsError:
                pass  # keep serving what we have; /healthz says what went wrong
            finally:
                reload_lock.release()

    class Handler(BaseHTTPRequestHandler):
        server_version = "filedrop-docs"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the stdlib's name
            log.info("%s %s", self.address_string(), format % args)

        def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8",
                  head: bool = False, etag: str | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-cache")
            if etag:
                self.send_header("ETag", f'"{etag}"')
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _get(self, head: bool) -> None:
            if self.path == HEALTH_PATH:
                self._send(200, b"ok\n", head=head)
                return
            refresh_if_stale()
            page = site.get(self.path)
            if page is None:
                what = site.error or f"no docs published at {site.uri} yet"
                self._send(404, f"{what}\n".encode(), head=head)
                return
            self._send(200, page.body, page.content_type, head=head, etag=page.etag)

        def do_GET(self) -> None:  # noqa: N802 - http.server's names
            self._get(head=False)

        def do_HEAD(self) -> None:  # noqa: N802
            self._get(head=True)

        def do_POST(self) -> None:  # noqa: N802
            if self.path != RELOAD_PATH:
                self._send(404, b"not found\n")
                return
            with reload_lock:
                try:
                    n = site.reload()
                except DocsError as exc:
                    self._send(502, f"{exc}\n".encode())
                    return
            self._send(200, f"reloaded {n} file(s) from {site.uri}\n".encode())

    return ThreadingHTTPServer((host, port), Handler)
