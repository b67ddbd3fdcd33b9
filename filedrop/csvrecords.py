"""The tolerant reader: CSV records one at a time as RFC 4180 reads them, each with its bytes as written
(DESIGN §3, "Parsing rules"). Pure: works on the stream handed to it.

The fast path's guard, which sends a file here when COPY could read it differently, is
:mod:`filedrop.csvscan`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

_NL, _CR = 10, 13


@dataclass
class Record:
    """One record: its bytes as written (line end excluded), its values, or why it is malformed."""

    raw: bytes
    values: list[str | None] | None
    error: str | None = None


class RecordTooLong(Exception):
    """A record runs on past the byte cap; the file cannot be read safely past it."""


class RecordReader:
    """Records of a CSV byte stream (header already consumed), one at a time, RFC 4180 strictly.

    - a field is quoted only if it starts with the quote; ``""`` inside it is one quote; it may hold
      delimiters and line ends; after its closing quote comes a delimiter or the record's end;
    - an unquoted field equal to ``null`` is NULL; a quoted one never is (``""`` is an empty string);
    - a malformed record (a quote inside an unquoted field, text after a closing quote, a bare carriage
      return, a NUL byte, bytes invalid in the encoding) is returned with ``error`` set, and ends at the
      end of the physical line where it went wrong: it never swallows the next record;
    - blank lines are skipped, except in a one-column file, where (as in COPY) they are a NULL field.
    """

    def __init__(self, stream: IO[bytes], *, delimiter: str, quote: str, null: str, encoding: str,
                 columns: int, max_record: int, chunk: int = 1 << 20) -> None:
        self.stream, self.encoding, self.columns = stream, encoding, columns
        self.d, self.q = delimiter.encode(encoding), quote.encode(encoding)
        self.qq = self.q + self.q
        self.null = null
        self.max_record, self.chunk = max_record, chunk
        self.buf, self.pos, self.eof = b"", 0, False
        if len(self.d) == 1 and len(self.q) == 1:
            self._unquoted = re.compile(b"[^" + re.escape(self.d + self.q) + rb"\r\n]*+")
        else:
            stop = re.escape(self.d) + b"|" + re.escape(self.q) + rb"|[\r\n]"
            self._unquoted = re.compile(b"(?:(?!" + stop + b").)*+", re.S)

    def _more(self) -> bool:
        if self.eof:
            return False
        data = self.stream.read(self.chunk)
        if not data:
            self.eof = True
            return False
        self.buf = self.buf[self.pos:] + data
        self.pos = 0
        return True

    def __iter__(self) -> Iterator[Record]:
        while True:
            rec = self._next()
            if rec is None:
                return
            if rec.raw or rec.values is not None:
                yield rec

    def _next(self) -> Record | None:
        while True:
            if self.pos >= len(self.buf) and not self._more():
                return None
            try:
                return self._parse()
            except _NeedMore:
                if len(self.buf) - self.pos > self.max_record:
                    raise RecordTooLong(f"a record longer than {self.max_record} bytes") from None
                if not self._more():
                    self.eof = True  # parse again, knowing the data ends here

    def _parse(self) -> Record:
        buf, start = self.buf, self.pos
        nl = buf.find(b"\n", start)
        limit = len(buf) if nl < 0 else nl
        cr = buf.find(b"\r", start, limit)  # a CR before the line feed, unless it is a CRLF's
        bare = cr >= 0 and (cr < limit - 1 or (nl < 0 and self.eof))
        if bare and self.q not in buf[start:cr]:
            self.pos = cr + 1  # a bare carriage return ends this record, malformed; the next starts after it
            return self._bare_cr(buf[start:cr])
        if nl < 0 and not self.eof:
            raise _NeedMore
        line = buf[start:limit]
        if self.q not in line:  # the common case: no quoting on this line
            self.pos = limit + 1
            body = line[:-1] if line.endswith(b"\r") else line
            return self._finish(body, body.split(self.d), None)
        return self._parse_quoted(start)

    def _bare_cr(self, raw: bytes) -> Record:
        if not raw:
            return Record(b"", None)  # a blank line (ended by a carriage return): skipped
        self._cap(raw)
        return Record(raw, None, "a bare carriage return as a line end (convert the file to LF or CRLF line ends)")

    def _cap(self, raw: bytes) -> None:
        if len(raw) > self.max_record:
            raise RecordTooLong(f"a record longer than {self.max_record} bytes")

    def _parse_quoted(self, start: int) -> Record:
        buf, q, d = self.buf, self.q, self.d
        fields: list[bytes] = []
        quoted: list[bool] = []
        i = start
        while True:
            if buf.startswith(q, i):
                j = i + len(q)
                while True:
                    k = buf.find(q, j)
                    if k < 0 or k + len(q) >= len(buf) and not self.eof:
                        if k < 0 and self.eof:  # never closed: reject its first line, read on after it
                            nl = buf.find(b"\n", i)
                            return self._malformed(start, len(buf) if nl < 0 else nl,
                                                   "a quoted field that is never closed")
                        raise _NeedMore
                    if buf.startswith(q, k + len(q)):
                        j = k + 2 * len(q)
                        continue
                    break
                fields.append(buf[i + len(q):k].replace(self.qq, q))
                quoted.append(True)
                i = k + len(q)
                what = "text after the closing quote of a quoted field"
            else:
                m = self._unquoted.match(buf, i)
                assert m is not None
                fields.append(m.group())
                quoted.append(False)
                i = m.end()
                what = "a quote character inside an unquoted field"
            if buf.startswith(d, i):
                i += len(d)
                continue
            if i >= len(buf):
                if not self.eof:
                    raise _NeedMore
                self.pos = i
                return self._finish(buf[start:i], fields, quoted)
            if buf[i] == _NL or buf.startswith(b"\r\n", i):
                self.pos = i + (1 if buf[i] == _NL else 2)
                return self._finish(buf[start:i], fields, quoted)
            if buf[i] == _CR:
                if i + 1 >= len(buf) and not self.eof:
                    raise _NeedMore
                self.pos = i + 1
                return self._bare_cr(buf[start:i])
            nl = buf.find(b"\n", i)
            if nl < 0 and not self.eof:
                raise _NeedMore
            return self._malformed(start, len(buf) if nl < 0 else nl, what)

    def _malformed(self, start: int, end: int, why: str) -> Record:
        self.pos = end + 1
        raw = self.buf[start:end]
        self._cap(raw)
        return Record(raw[:-1] if raw.endswith(b"\r") else raw, None, why)

    def _finish(self, raw: bytes, fields: list[bytes], quoted: list[bool] | None) -> Record:
        self._cap(raw)
        if not raw and quoted is None:
            if self.columns != 1:
                return Record(b"", None)  # a blank line: skipped (__iter__ drops it)
            fields = [b""]
        if b"\x00" in raw:
            return Record(raw, None, "NUL byte (0x00) in the record")
        if len(fields) != self.columns:
            return Record(raw, None, f"expected {self.columns} columns, found {len(fields)}")
        values: list[str | None] = []
        for n, f in enumerate(fields):
            try:
                text = f.decode(self.encoding)
            except UnicodeDecodeError as exc:
                return Record(raw, None, f"invalid {self.encoding} byte(s) 0x{f[exc.start:exc.end].hex()}")
            values.append(None if text == self.null and not (quoted and quoted[n]) else text)
        return Record(raw, values)


class _NeedMore(Exception):
    """The record runs past the buffered bytes."""


def printable(raw: bytes, encoding: str, cap: int) -> str:
    """A record's bytes as text for ``rejected_rows.raw_line``: undecodable bytes as ``\\xNN``, NUL as
    ``\\x00``, at most ``cap`` characters (with a note of the full length)."""
    text = raw[: cap * 4].decode(encoding, "backslashreplace").replace("\x00", "\\x00")
    if len(text) > cap or len(raw) > cap * 4:
        note = f"… ({len(raw)} bytes in all)"
        return text[: cap - len(note)] + note
    return text
