"""One object version as seen by a source (S3 listing/event or a local file). Pure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class SourceObject:
    """Identity and metadata of one version of one object.

    For S3, ``bucket``/``key`` are the object's; for a local directory, ``bucket`` is the directory's
    absolute path and ``key`` the path relative to it. ``etag`` is S3's ETag without quotes, or the
    MD5 of a local file's content (what S3 reports for a single-part upload).
    """

    bucket: str
    key: str
    etag: str
    size: int
    last_modified: datetime | None = None
    version_id: str | None = None
    sequencer: str | None = None
    #: ``s3://bucket/key`` or an absolute local path: what the engines open.
    uri: str = ""
    is_s3: bool = False

    @property
    def from_event(self) -> bool:
        """Named by an S3 event notification (which always carries a sequencer). Only such versions can
        be superseded: events arrive out of order, while a listed object is the current version."""
        return self.sequencer is not None

    @property
    def display(self) -> str:
        """The object's name for messages and terminals: a local path's undecodable bytes and any control
        character (a newline in a key) shown as ``\\xNN``."""
        text = self.uri or f"{self.bucket}/{self.key}"
        text = text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def sequencer_newer(a: str, b: str) -> bool:
    """Is sequencer ``a`` later than ``b``? The Amazon S3 User Guide's rule for events of one key:
    right-pad the shorter value with zeros, then compare the two as strings (case-insensitively:
    sequencers are hexadecimal). Comparing them as numbers is the same as left-padding, which orders
    values of different lengths wrongly."""
    a, b = a.strip().upper(), b.strip().upper()
    width = max(len(a), len(b))
    return a.ljust(width, "0") > b.ljust(width, "0")


def is_newer(candidate_seq: str | None, candidate_modified: datetime | None,
             other_seq: str | None, other_modified: datetime | None) -> bool | None:
    """Is the candidate version newer than the other? None when the two cannot be ordered.

    The S3 ``sequencer`` orders events for one key; when either side lacks it, LastModified decides.
    """
    if candidate_seq and other_seq:
        return sequencer_newer(candidate_seq, other_seq)
    if candidate_modified is not None and other_modified is not None:
        return candidate_modified > other_modified
    return None
