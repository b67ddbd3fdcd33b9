"""One object version as seen by a source (S3 listing/event or a local file). Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


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
    def display(self) -> str:
        return self.uri or f"{self.bucket}/{self.key}"


def sequencer_value(sequencer: str) -> int:
    """S3 event sequencers are hexadecimal; compare them as numbers (shorter ones are zero-padded)."""
    return int(sequencer, 16)


def is_newer(candidate_seq: str | None, candidate_modified: datetime | None,
             other_seq: str | None, other_modified: datetime | None) -> bool | None:
    """Is the candidate version newer than the other? None when the two cannot be ordered.

    The S3 ``sequencer`` orders events for one key; when either side lacks it, LastModified decides.
    """
    if candidate_seq and other_seq:
        return sequencer_value(candidate_seq) > sequencer_value(other_seq)
    if candidate_modified is not None and other_modified is not None:
        return candidate_modified > other_modified
    return None
