"""Where files come from: a local directory or an ``s3://`` prefix (boto3, ``AWS_ENDPOINT_URL``).

Adapter layer. Listing yields :class:`Listed` entries (cheap); :func:`describe` turns one into a full
:class:`~filedrop.objects.SourceObject` (for local files that means hashing the content, which only
matched files pay). :func:`open_stream` gives a decompressed byte stream that never holds more than
a buffer in memory.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from filedrop.objects import SourceObject

CHUNK = 1 << 20
GZIP_MAGIC = b"\x1f\x8b"


class SourceError(RuntimeError):
    """A source location cannot be listed or an object cannot be read."""


class ObjectChanged(SourceError):
    """The object version named is gone (deleted, or overwritten): retrying cannot load it."""


class ObjectSuperseded(ObjectChanged):
    """The object was overwritten after its version was described: a newer version replaced it."""


class ContentChanged(SourceError):
    """A local file's bytes changed while it was being read: this attempt loads nothing; retry."""

    @classmethod
    def of(cls, name: str, got: str, expected: str) -> ContentChanged:
        return cls(f"{name}: the file changed while it was being read (MD5 {got}, expected {expected}); "
                   "nothing from this attempt is applied, the next run loads the new content")


@dataclass(frozen=True)
class Location:
    """A parsed ``--source``: ``s3://bucket/prefix`` or a local directory/file."""

    uri: str
    is_s3: bool
    bucket: str  # for local sources: the absolute directory
    prefix: str  # for local sources: "" (or the file name when a single file was given)

    @classmethod
    def parse(cls, uri: str) -> Location:
        if uri.startswith("s3a://") or uri.startswith("s3://"):
            rest = uri.split("://", 1)[1]
            bucket, _, prefix = rest.partition("/")
            if not bucket:
                raise SourceError(f"{uri}: no bucket name (expected s3://bucket/prefix)")
            return cls(uri, True, bucket, prefix)
        path = Path(uri.removeprefix("file://")).expanduser().resolve()
        if not path.exists():
            raise SourceError(f"{uri}: no such file or directory")
        if path.is_file():
            return cls(str(path), False, str(path.parent), path.name)
        return cls(str(path), False, str(path), "")

    @classmethod
    def s3_prefix(cls, uri: str, what: str) -> tuple[str, str]:
        """(bucket, key prefix without surrounding ``/``) of ``s3://bucket/prefix``; ``what`` names the
        setting in the error."""
        if not uri.startswith(("s3://", "s3a://")):
            raise SourceError(f"{what} must be an s3://bucket/prefix URI, not {uri!r}")
        loc = cls.parse(uri)
        return loc.bucket, loc.prefix.strip("/")


@dataclass(frozen=True)
class Listed:
    """One object found by listing, before its content identity is known (local files)."""

    bucket: str
    key: str
    size: int
    last_modified: datetime
    etag: str | None = None
    version_id: str | None = None
    is_s3: bool = False
    #: a local file's real path, when its name is not valid UTF-8 (``key`` then shows it escaped)
    path: str | None = None
    #: a local file's status-change time (ns): set by the kernel on every write, whatever the mtime says
    changed: int | None = None

    @property
    def uri(self) -> str:
        if self.path is not None:
            return self.path
        return f"s3://{self.bucket}/{self.key}" if self.is_s3 else os.path.join(self.bucket, self.key)


def printable_name(name: str) -> str:
    """A local path as text every consumer can store and print: bytes that are not UTF-8 (kept by
    Python as surrogate escapes) as ``\\xNN``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def s3_client() -> Any:
    """A boto3 S3 client; boto3 itself honours ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_S3``."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", config=Config(retries={"max_attempts": 5, "mode": "standard"}))


def list_objects(loc: Location, client: Any = None) -> Iterator[Listed]:
    """Everything under the location, in key order. Hidden local files (``.name``) are ignored."""
    if loc.is_s3:
        client = client or s3_client()
        from botocore.exceptions import ClientError

        try:
            pages = client.get_paginator("list_objects_v2").paginate(Bucket=loc.bucket, Prefix=loc.prefix)
            for page in pages:
                for o in page.get("Contents", []):
                    if o["Key"].endswith("/"):
                        continue
                    yield Listed(loc.bucket, o["Key"], int(o["Size"]), o["LastModified"],
                                 etag=o["ETag"].strip('"'), is_s3=True)
        except ClientError as exc:
            raise SourceError(f"{loc.uri}: cannot list: {exc.response['Error'].get('Message', exc)}") from None
        return
    root = Path(loc.bucket)
    if loc.prefix:  # a single file
        paths = [root / loc.prefix]
    else:
        paths = sorted(p for p in root.rglob("*") if p.is_file()
                       and not any(part.startswith(".") for part in p.relative_to(root).parts))
    for p in paths:
        st = p.stat()
        key = p.relative_to(root).as_posix()
        shown, bucket = printable_name(key), printable_name(str(root))
        yield Listed(bucket, shown, st.st_size, datetime.fromtimestamp(st.st_mtime, UTC),
                     path=str(p) if (shown, bucket) != (key, str(root)) else None, changed=st.st_ctime_ns)


def local_md5(path: str) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


def describe(item: Listed, sequencer: str | None = None) -> SourceObject:
    etag = item.etag if item.etag is not None else local_md5(item.uri)
    return SourceObject(
        bucket=item.bucket, key=item.key, etag=etag, size=item.size, last_modified=item.last_modified,
        version_id=item.version_id, sequencer=sequencer, uri=item.uri, is_s3=item.is_s3,
    )


def head(bucket: str, key: str, version_id: str | None = None, client: Any = None) -> Listed:
    """Metadata of one S3 object (the version given, else the current one)."""
    client = client or s3_client()
    from botocore.exceptions import ClientError

    kwargs: dict[str, str] = {"Bucket": bucket, "Key": key}
    if version_id:
        kwargs["VersionId"] = version_id
    try:
        h = client.head_object(**kwargs)
    except ClientError as exc:
        raise SourceError(f"s3://{bucket}/{key}: {exc.response['Error'].get('Message') or exc}") from None
    return Listed(bucket, key, int(h["ContentLength"]), h["LastModified"], etag=h["ETag"].strip('"'),
                  version_id=h.get("VersionId") if version_id else None, is_s3=True)


def pinned_object(uri: str, *, etag: str, size: int | None = None, version_id: str | None = None,
                  sequencer: str | None = None) -> SourceObject:
    """An ``s3://`` object version as an event or FileDrop names it; reads are pinned to that version."""
    loc = Location.parse(uri)
    if not loc.is_s3 or not loc.prefix:
        raise SourceError(f"{uri}: --etag pins a version of an s3://bucket/key object")
    if size is None:
        size = head(loc.bucket, loc.prefix, version_id).size
    return SourceObject(bucket=loc.bucket, key=loc.prefix, etag=etag.strip('"'), size=size, version_id=version_id,
                        sequencer=sequencer, uri=f"s3://{loc.bucket}/{loc.prefix}", is_s3=True)


def describe_uri(uri: str) -> SourceObject:
    """A single file or ``s3://bucket/key`` as a SourceObject."""
    loc = Location.parse(uri)
    if loc.is_s3:
        if not loc.prefix:
            raise SourceError(f"{uri}: expected s3://bucket/key of one object")
        return describe(head(loc.bucket, loc.prefix))
    if not loc.prefix:
        raise SourceError(f"{uri}: is a directory; `filedrop load` takes one file (use `filedrop run`)")
    return describe(next(list_objects(loc)))


class _Counting(io.RawIOBase):
    """Counts bytes read from a raw stream (for progress on the compressed size).

    With ``expect_md5`` it also hashes what it reads and, at the end of the stream, refuses content
    whose MD5 is not the etag the load was decided on (a local file written to while it loads)."""

    def __init__(self, raw: IO[bytes] | Any, on_bytes: Callable[[int], None] | None,
                 expect_md5: str | None = None, name: str = "") -> None:
        self._raw = raw
        self._on_bytes = on_bytes
        self._md5 = hashlib.md5(usedforsecurity=False) if expect_md5 else None
        self._expect, self._name = expect_md5, name

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        data = self._raw.read(len(b))
        n = len(data)
        b[:n] = data
        if self._md5 is not None:
            if n:
                self._md5.update(data)
            elif self._md5.hexdigest() != self._expect:
                got, self._md5 = self._md5.hexdigest(), None
                raise ContentChanged.of(self._name, got, self._expect or "")
        if n and self._on_bytes:
            self._on_bytes(n)
        return n

    def close(self) -> None:
        try:
            self._raw.close()
        finally:
            super().close()


def open_stream(obj: SourceObject, compression: str = "auto",
                on_bytes: Callable[[int], None] | None = None, client: Any = None) -> io.BufferedReader[Any]:
    """The object's content, decompressed, as a buffered byte stream.

    ``compression: auto`` decides by the ``.gz`` extension or the gzip magic bytes. S3 reads are
    pinned to the version described (VersionId, else If-Match on the ETag), so an object overwritten
    after listing is reported, not silently mixed up with the newer version. A local file is hashed
    while it is read; if its bytes are not the ones its etag names, the end of the stream raises
    :class:`ContentChanged` (only a stream read to its end is checked).
    """
    if obj.is_s3:
        client = client or s3_client()
        from botocore.exceptions import ClientError

        kwargs: dict[str, str] = {"Bucket": obj.bucket, "Key": obj.key}
        if obj.version_id:
            kwargs["VersionId"] = obj.version_id
        else:
            kwargs["IfMatch"] = f'"{obj.etag}"'
        try:
            body: Any = client.get_object(**kwargs)["Body"]
        except ClientError as exc:
            code = exc.response["Error"].get("Code", "")
            if code in ("PreconditionFailed", "412"):
                raise ObjectSuperseded(
                    f"{obj.display}: overwritten by a newer version before this one (ETag {obj.etag}) was read; "
                    "the newer version is loaded on its own") from None
            if code in ("NoSuchKey", "NoSuchVersion", "404"):
                raise ObjectChanged(f"{obj.display}: the object (version) no longer exists") from None
            raise SourceError(f"{obj.display}: {exc.response['Error'].get('Message') or code}") from None
    else:
        try:
            body = open(obj.uri, "rb")  # noqa: SIM115 - closed by the returned stream
        except OSError as exc:
            raise SourceError(f"{obj.display}: {exc.strerror}") from None
    # A local file's etag is the MD5 of its bytes: every read of it is hashed and checked at its end.
    expect = None if obj.is_s3 else obj.etag
    raw = io.BufferedReader(_Counting(body, on_bytes, expect, obj.display), CHUNK)
    gz = compression == "gzip" or (
        compression == "auto" and (obj.key.endswith(".gz") or raw.peek(2)[:2] == GZIP_MAGIC)
    )
    if gz:
        return io.BufferedReader(gzip.GzipFile(fileobj=raw, mode="rb"), CHUNK)
    return raw
