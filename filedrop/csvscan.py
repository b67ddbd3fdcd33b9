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
- :class:`~filedrop.csvrecords.RecordReader` is the tolerant pass's reader: one record at a time with
  its bytes as written, telling a quoted empty string ``""`` from an empty (NULL) field, and reporting a
  malformed record with its reason instead of merging it with the next one.
"""

from __future__ import annotations

from typing import Any

#: Values that cannot depend on DateStyle and skip the exact check (ISO ``YYYY-MM-DD``, or a first part
#: of 3+ digits): almost every date in practice. SQL regex, matched against one value.
UNAMBIGUOUS_DATE_SQL = r"^\s*[0-9]{3,}"

_NL, _CR, _TAB, _SPACE = 10, 13, 9, 32
_NL_BYTE = b"\n"
_CONTEXT = 64  # bytes kept from one chunk to the next for patterns that span chunks
#: bytes.translate table: 1 for the separators of date parts (- / . space), 0 for every other byte
_DATE_SEPARATORS = bytes(1 if b in b"-/. " else 0 for b in range(256))


class NeedsTolerant(Exception):
    """The fast path (COPY) would read these bytes differently from RFC 4180: use the tolerant pass."""


class QuotedLineEnd(Exception):
    """A quoted field runs over a line end, in a check told that every line is one record."""


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
    and each quote that closes one to precede a delimiter, a line end or another quote. With
    ``single_line`` it also raises :class:`QuotedLineEnd` at a line feed inside a quoted field (a reader
    that takes each line for a record); that costs nothing on chunks without quotes.
    """

    def __init__(self, delimiter: int, quote: int, *, dates: bool, max_record: int = 16 << 20,
                 ascii_only: bool = False, single_line: bool = False) -> None:
        import numpy  # here, not at module level: commands that never load a file skip its import time

        self.np = numpy
        self.d, self.q, self.dates, self.max_record = delimiter, quote, dates, max_record
        self.ascii_only = ascii_only  # PostgreSQL's SQL_ASCII accepts any byte; Python's ascii does not
        self.single_line = single_line
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
            if self.single_line and self.inside and _NL_BYTE in chunk:
                self._line_end_inside()
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
        if self.single_line:
            nl = np.flatnonzero(a == _NL)
            nl = nl[nl >= 1]
            if nl.size and ((np.searchsorted(check, nl) + int(self.inside)) & 1).any():
                self._line_end_inside()
        if check.size:
            self.inside ^= bool(check.size & 1)
        self.carry = data[-2:] if deferred else data[-1:]
        if self.inside and self.offset + len(chunk) - self.opened > self.max_record:
            self._too_long()

    def _line_end_inside(self) -> None:
        raise QuotedLineEnd("a quoted field runs over a line end")

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
