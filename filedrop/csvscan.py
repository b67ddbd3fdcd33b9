"""CSV records as RFC 4180 reads them, the same on every path (DESIGN §3, "Parsing rules"). Pure: works
on bytes handed to it, does no I/O of its own.

PostgreSQL's ``COPY ... (FORMAT csv)`` (the fast path of both engines) reads well-formed RFC 4180 exactly,
but it is lenient where RFC 4180 says a record is malformed, and lenient differently from any other
reader: a quote character inside an unquoted field starts a quoted section there, so ``a,5'3"`` and the
next line become one record. Two pieces keep every path to one reading:

- :class:`FastPathCheck` watches the bytes streamed into COPY and stops the fast path
  (:class:`NeedsTolerant`) before COPY can read them differently: a quote inside an unquoted field, text
  after a closing quote, an end-of-data line ``\\.`` (PostgreSQL before 18 silently stops reading there),
  or — for routes with date columns — a date PostgreSQL would read differently under another DateStyle.
  A chunk without a quote, a backslash or a date separator costs a few ``memchr``-speed scans.
- :class:`RecordReader` is the tolerant pass's reader: one record at a time with its bytes as written,
  telling a quoted empty string ``""`` from an empty (NULL) field, and reporting a malformed record with
  its reason instead of merging it with the next one.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

#: Values that cannot depend on DateStyle and skip the exact check (ISO ``YYYY-MM-DD``, or a first part
#: of 3+ digits): almost every date in practice. SQL regex, matched against one value.
UNAMBIGUOUS_DATE_SQL = r"^\s*[0-9]{3,}"

_NL, _CR, _TAB, _SPACE = 10, 13, 9, 32
_CONTEXT = 64  # bytes kept from one chunk to the next for patterns that span chunks
#: bytes.translate table: 1 for the separators of date parts (- / . space), 0 for every other byte
_DATE_SEPARATORS = bytes(1 if b in b"-/. " else 0 for b in range(256))


class NeedsTolerant(Exception):
    """The fast path (COPY) would read these bytes differently from RFC 4180: use the tolerant pass."""


def single_bytes(delimiter: str, quote: str, encoding: str) -> tuple[int, int] | None:
    """The delimiter and quote as single bytes of the file's encoding, or None (multi-byte)."""
    try:
        d, q = delimiter.encode(encoding), quote.encode(encoding)
    except UnicodeEncodeError:
        return None
    if len(d) != 1 or len(q) != 1:
        return None
    return d[0], q[0]


class FastPathCheck:
    """Streaming check of the data records (header excluded) that COPY is about to read.

    :meth:`feed` every chunk in order, then :meth:`finish`; either raises :class:`NeedsTolerant`. The
    check tracks quote parity the way COPY does (every quote toggles; a doubled quote toggles twice),
    and requires each quote that opens a quoted field to follow a delimiter, a line end or another quote,
    and each quote that closes one to precede a delimiter, a line end or another quote.
    """

    def __init__(self, delimiter: int, quote: int, *, dates: bool, max_record: int = 16 << 20,
                 ascii_only: bool = False) -> None:
        import numpy  # here, not at module level: commands that never load a file skip its import time

        self.np = numpy
        self.d, self.q, self.dates, self.max_record = delimiter, quote, dates, max_record
        self.ascii_only = ascii_only  # PostgreSQL's SQL_ASCII accepts any byte; Python's ascii does not
        self.line = 0          # bytes since the last line feed
        self.opened = -1       # offset of the quote that opened the quoted field we are in
        self.inside = False    # inside a quoted field before the next unchecked quote
        self.carry = b"\n"     # the byte before the unchecked data (+ a quote whose next byte is unknown)
        self.context = b"\n" * 4  # the last bytes seen, for patterns that span chunks (a record start first)
        self.offset = 0        # bytes of data fed so far

    def feed(self, chunk: bytes) -> None:
        if not chunk:
            return
        if self.ascii_only and not chunk.isascii():
            raise NeedsTolerant("a byte above 0x7f in an ascii file")
        self._bare_cr(chunk)
        self._line_length(chunk)
        self._quotes(chunk)
        if self.dates or b"\\" in chunk or b"\\" in self.context:
            window = self.context + chunk
            if b"\\." in window:
                self._end_marker(window, eof=False)
            if self.dates:
                self._dates(window, eof=False)
            self.context = window[-_CONTEXT:]
        else:
            self.context = (self.context + chunk[-_CONTEXT:])[-_CONTEXT:]
        self.offset += len(chunk)

    def finish(self) -> None:
        """End of data: check the last quote and the patterns that waited for more bytes."""
        if self.context.endswith(b"\r"):
            raise NeedsTolerant("a carriage return not followed by a line feed")
        if len(self.carry) == 2 and not self.inside and self.carry[0] not in (self.d, _NL, self.q):
            raise NeedsTolerant(f"a quote character inside an unquoted field (byte {self.offset - 1} of the data)")
        self._end_marker(self.context, eof=True)
        if self.dates:
            self._dates(self.context, eof=True)

    def _bare_cr(self, chunk: bytes) -> None:
        """A carriage return not followed by a line feed: COPY takes its line-end style from the first
        data line, so CR-terminated data (or a stray CR) can end records where RFC 4180 does not."""
        if self.context.endswith(b"\r") and not chunk.startswith(b"\n"):
            raise NeedsTolerant("a carriage return not followed by a line feed")
        crs = chunk.count(b"\r")
        if crs and crs != chunk.count(b"\r\n") + (1 if chunk.endswith(b"\r") else 0):
            raise NeedsTolerant("a carriage return not followed by a line feed")

    # --- the record byte cap -----------------------------------------------------------------------

    def _line_length(self, chunk: bytes) -> None:
        """A physical line longer than the cap sends the file to the record reader, which enforces the
        cap exactly, before PostgreSQL has to buffer the line (lines inside one chunk are shorter than
        the chunk; only runs across chunks can exceed a cap of at least a chunk)."""
        first = chunk.find(b"\n")
        if first < 0:
            self.line += len(chunk)
        else:
            if self.line + first > self.max_record:
                self._too_long()
            self.line = len(chunk) - chunk.rfind(b"\n") - 1
        if self.line > self.max_record:
            self._too_long()

    def _too_long(self) -> None:
        raise NeedsTolerant(f"a record longer than {self.max_record} bytes")

    # --- quotes ------------------------------------------------------------------------------------

    def _quotes(self, chunk: bytes) -> None:
        if self.q not in chunk and len(self.carry) == 1:
            self.carry = chunk[-1:]
            return
        np = self.np
        data = self.carry + chunk
        a = np.frombuffer(data, np.uint8)
        pos = np.flatnonzero(a == self.q)
        pos = pos[pos >= 1]  # index 0 is the context byte
        last = len(data) - 1
        deferred = bool(pos.size) and pos[-1] == last  # its next byte is in the next chunk
        check = pos[:-1] if deferred else pos
        if check.size:
            before = (np.arange(check.size) + int(self.inside)) & 1  # quotes seen before each, mod 2
            prev, nxt = a[check - 1], a[check + 1]
            d, q = self.d, self.q
            opening_ok = (prev == d) | (prev == _NL) | (prev == q)
            closing_ok = (nxt == d) | (nxt == _NL) | (nxt == _CR) | (nxt == q)
            bad = np.where(before == 0, ~opening_ok, ~closing_ok)
            if bad.any():
                i = int(np.argmax(bad))
                at = self.offset - len(self.carry) + int(check[i])
                what = ("a quote character inside an unquoted field" if before[i] == 0
                        else "text after the closing quote of a quoted field")
                raise NeedsTolerant(f"{what} (byte {at} of the data)")
            self._quoted_spans(check + (self.offset - len(self.carry)))
            self.inside ^= bool(check.size & 1)
        self.carry = data[-2:] if deferred else data[-1:]
        if self.inside and self.offset + len(chunk) - self.opened > self.max_record:
            self._too_long()

    def _quoted_spans(self, quotes: Any) -> None:
        """Quotes alternate opening and closing: a quoted stretch (line ends and all) longer than the cap
        is an over-long record."""
        if self.inside:
            quotes = self.np.concatenate(([self.opened], quotes))
        opens, closes = quotes[0::2], quotes[1::2]
        if closes.size and int((closes - opens[:closes.size]).max()) > self.max_record:
            self._too_long()
        if opens.size > closes.size:
            self.opened = int(opens[-1])

    # --- PostgreSQL's end-of-data marker -----------------------------------------------------------

    def _end_marker(self, window: bytes, *, eof: bool) -> None:
        start = 0
        while (i := window.find(b"\n\\.", start)) >= 0:
            after = window[i + 3:i + 5]
            if after[:1] == b"\n" or after == b"\r\n" or (eof and after in (b"", b"\r")):
                raise NeedsTolerant("a line holding only \\. (PostgreSQL's end-of-data marker before version 18)")
            start = i + 1

    # --- dates whose reading depends on DateStyle --------------------------------------------------

    def _dates(self, window: bytes, *, eof: bool) -> None:
        """Raise when the bytes hold something PostgreSQL may read as a date whose day, month and year
        order depends on DateStyle: three short parts, of which two are numbers of 1–2 digits and the
        third a number of 1–3 digits or a month name (``01/02/03``, ``1 2 3``, ``01-Feb-03``,
        ``Sep 5 22``). A superset: the tolerant pass then decides per date column, exactly
        (:data:`DATESTYLE_CHECK_SQL`)."""
        np = self.np
        data = window + b"\n\n\n\n" if eof else window
        a = np.frombuffer(data, np.uint8)
        s = np.flatnonzero(np.frombuffer(data.translate(_DATE_SEPARATORS), np.uint8))
        if s.size < 2:
            return
        # runs of separators count as one ("01 / 02 / 03"): (first, last) position of each run
        first = np.ones(s.size, bool)
        first[1:] = np.diff(s) > 1
        starts, ends = s[first], s[np.append(first[1:], True)]
        if starts.size < 2:
            return
        # consecutive runs: s1 starts the first, e1 ends it; s2 starts the second, e2 ends it
        s1, e1, s2, e2 = starts[:-1], ends[:-1], starts[1:], ends[1:]
        gap = s2 - e1
        keep = (s1 >= 3) & (e2 + 4 < len(data)) & (gap >= 2) & (gap <= 10)
        s1, e1, s2, e2, gap = s1[keep], e1[keep], s2[keep], e2[keep], gap[keep]
        if s1.size:  # most candidates are ISO dates: 3+ digits before the first separator, a year first
            b2, b3 = a[s1 - 2], a[s1 - 3]
            keep = ~((b2 >= 48) & (b2 <= 57) & (b3 >= 48) & (b3 <= 57))
            s1, e1, s2, e2, gap = s1[keep], e1[keep], s2[keep], e2[keep], gap[keep]
        if not s1.size:
            return

        def digit(i: Any) -> Any:
            v = a[i]
            return (v >= 48) & (v <= 57)

        def letter(i: Any) -> Any:
            v = a[i] | 32
            return (v >= 97) & (v <= 122)

        def edge(i: Any) -> Any:  # not a letter or digit: where a part starts or ends
            return ~digit(i) & ~letter(i)

        def start(i: Any) -> Any:  # where a value may start: an edge that is not a date separator
            v = a[i]
            return edge(i) & (v != 45) & (v != 47) & (v != 46)  # (2022-09-05 10:00 holds "09-05 10")

        short_before = digit(s1 - 1) & (start(s1 - 2) | (digit(s1 - 2) & start(s1 - 3)))
        month_before = letter(s1 - 1) & letter(s1 - 2) & letter(s1 - 3)
        short_middle = digit(e1 + 1) & ((gap == 2) | ((gap == 3) & digit(e1 + 2)))
        month_middle = (gap >= 4) & letter(e1 + 1) & letter(e1 + 2) & letter(e1 + 3) & letter(s2 - 1)
        after = digit(e2 + 1) & (edge(e2 + 2) | (digit(e2 + 2) & (edge(e2 + 3) | (digit(e2 + 3) & edge(e2 + 4)))))
        found = after & ((short_before & (short_middle | month_middle)) | (month_before & short_middle))
        if found.any():
            raise NeedsTolerant("a date whose day/month/year order may depend on DateStyle (like 03/04/22)")


# --- the tolerant reader ---------------------------------------------------------------------------

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
