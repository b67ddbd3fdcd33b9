"""Edge inputs an adversarial review found after the parsing rules went in (DESIGN §3): bare carriage
returns, end-of-data markers after them, dates PostgreSQL reads by DateStyle in forms beyond 01/02/03,
the record cap on the tolerant path, ascii routes, zone abbreviations. Each failed before its fix; each
asserts the rule: the two paths (fast = COPY, tolerant = RecordReader + SQL typing) read alike, and nothing
is loaded wrong without a word."""

from __future__ import annotations

from pathlib import Path

import pytest

from filedrop.config import Settings
from filedrop.routes import parse_routes_yaml
from tests.conftest import DB
from tests.support.loads import items_route, load, write

HEADER = "id,name,qty,day\n"
BAD_ROW = "9,bad,not-a-number,\n"   # sends a file down the tolerant path


def rows(db: DB, key: str | None = None) -> list[tuple[object, ...]]:
    where = "" if key is None else f" WHERE _source_key = '{key}'"
    return db.rows(f"SELECT id, name, qty, day::text FROM staging.items{where} ORDER BY _row_number")


def rejected(db: DB) -> list[tuple[object, ...]]:
    return db.rows("SELECT line_number, raw_line, error FROM filedrop.rejected_rows ORDER BY load_id, line_number")


# --- 1. bare-CR (classic Mac) line ends after an LF header: COPY switches to CR records -------------

def test_cr_line_ends_after_an_lf_header_read_alike_on_both_paths(warehouse: str, db: DB,
                                                                        tmp_path: Path) -> None:
    """COPY detects the line end from the first DATA line (the header was consumed by readline): a
    bare CR there makes COPY read CR-terminated records. FastPathCheck never looks at CR outside
    quotes, so the fast path loads 2 rows; the tolerant reader sees one physical line and rejects it as
    a single merged record (both rows lost) once any other record is bad."""
    body = HEADER + "1,a,1,\r2,b,2,\r"
    fast = load(warehouse, items_route(max_bad=100), write(tmp_path / "items_fast.csv", body))
    tol = load(warehouse, items_route(max_bad=100),
               write(tmp_path / "items_tol.csv", body + BAD_ROW.replace("\n", "\r")))
    got_fast = rows(db, "items_fast.csv")
    got_tol = rows(db, "items_tol.csv")
    # the same records read the same on both paths: each CR-ended record is rejected with the reason,
    # none merged with the next
    assert (fast.status, fast.rows_loaded, fast.rows_rejected) == ("loaded", 0, 2)
    assert got_tol == got_fast == [], (tol.rows_parsed, tol.rows_rejected, rejected(db))
    assert [r[1:] for r in rejected(db)][:2] == [
        ("1,a,1,", "a bare carriage return as a line end (convert the file to LF or CRLF line ends)"),
        ("2,b,2,", "a bare carriage return as a line end (convert the file to LF or CRLF line ends)")]


def test_cr_line_ends_in_a_headerless_file_read_alike_on_both_paths(warehouse: str, db: DB,
                                                                              tmp_path: Path) -> None:
    route = items_route(max_bad=100, format="{header: false}")
    body = "1,a,1,\r2,b,2,\r"
    fast = load(warehouse, route, write(tmp_path / "items_fast.csv", body))
    tol = load(warehouse, route, write(tmp_path / "items_tol.csv", body + "9,bad,x,\r"))
    assert rows(db, "items_tol.csv") == rows(db, "items_fast.csv"), (fast, tol, rejected(db))


def test_backslash_dot_after_a_cr_line_end_drops_no_rows(warehouse: str, db: DB, tmp_path: Path) -> None:
    """FastPathCheck looks for the end-of-data marker only after LF (b'\\n\\\\.'). In a CR-terminated
    data section PostgreSQL < 18 stops at '\\.' + CR: rows after it vanish while the load says 'loaded'."""
    body = HEADER + "1,a,1,\r\\.\r3,c,3,\r4,d,4,\r"
    result = load(warehouse, items_route(max_bad=100), write(tmp_path / "items.csv", body))
    got = rows(db)
    # the rule: nothing dropped silently -- rows 3 and 4 are loaded, or the file/record is rejected
    assert result.status != "loaded" or result.rows_rejected > 0 or {r[0] for r in got} >= {3, 4}, (result, got)


# --- 2. dates read by DateStyle that neither path rejects, and where the paths disagree -------------

@pytest.mark.parametrize("value", ["01 02 03", "1 2 3", "03 01 02", "01 / 02 / 03", "(01/02/03)", "01/02/003",
                                   "Sep 5 22", "01-Feb-03", "22-Sep-05", "Feb 3 01"])
def test_datestyle_dependent_dates_in_any_form_are_rejected(warehouse: str, db: DB, tmp_path: Path,
                                                           value: str) -> None:
    """Each value reads differently under ISO,YMD / DMY / MDY (e.g. '01 02 03' is 2001-02-03,
    2003-02-01, 2003-01-02; 'Sep 5 22' is 2005-09-22 under YMD but 2022-09-05 under DMY/MDY).
    AMBIGUOUS_DATE_SQL and FastPathCheck._dates only know [-/.] between three bare 1-2 digit numbers."""
    for name, extra in (("items_fast.csv", ""), ("items_tol.csv", BAD_ROW)):
        load(warehouse, items_route(max_bad=100), write(tmp_path / name, HEADER + f'1,a,1,"{value}"\n' + extra))
    assert db.rows("SELECT _source_key, day::text FROM staging.items WHERE id = 1 ORDER BY 1") == [], \
        "an ambiguous date was guessed (loaded) instead of rejected"


@pytest.mark.parametrize("prefix", ["\x0b", "\x0c", "\r"])
def test_a_date_after_a_vertical_tab_form_feed_or_cr_reads_alike_on_both_paths(warehouse: str, db: DB, tmp_path: Path,
                                                                      prefix: str) -> None:
    """'\\v01/02/03': AMBIGUOUS_DATE_SQL (^\\s*) rejects it on the tolerant path, but FastPathCheck's
    starts() only accepts delimiter, LF, quote, space, tab before the first digit, so COPY loads
    2001-02-03 on the fast path."""
    value = f'"{prefix}01/02/03"'
    for name, extra in (("items_fast.csv", ""), ("items_tol.csv", BAD_ROW)):
        load(warehouse, items_route(max_bad=100), write(tmp_path / name, HEADER + f"1,a,1,{value}\n" + extra))
    got = db.rows("SELECT _source_key, day::text FROM staging.items WHERE id = 1 ORDER BY 1")
    assert got in ([], [("items_fast.csv", "2001-02-03"), ("items_tol.csv", "2001-02-03")]), got


def test_zone_abbreviations_do_not_depend_on_the_loaders_environment(warehouse: str, db: DB, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The session pins DateStyle and TimeZone but not timezone_abbreviations: PGOPTIONS in the
    loader's environment changes what '... IST' means (Israel +02 under Default, India +05:30)."""
    route = parse_routes_yaml("""
apiVersion: filedrop.dev/v1alpha1
kind: FileRoute
metadata: {name: events}
spec:
  match: {pattern: '^events.*$'}
  table: events
  columns: [{name: id, type: integer, nullable: false}, {name: at, type: timestamptz}]
""")[0]
    body = "id,at\n1,2022-01-02 10:00 IST\n"
    load(warehouse, route, write(tmp_path / "events_a.csv", body))
    monkeypatch.setenv("PGOPTIONS", "-c timezone_abbreviations=India")
    load(warehouse, route, write(tmp_path / "events_b.csv", body))
    got = db.rows("SELECT _source_key, to_char(at AT TIME ZONE 'UTC', 'HH24:MI') FROM staging.events ORDER BY 1")
    assert len({v for _, v in got}) <= 1, got


# --- 3. encoding 'ascii' (COPY ENCODING SQL_ASCII) ----------------------------------------------------

def test_an_ascii_route_reads_non_ascii_bytes_alike_on_both_paths(warehouse: str, db: DB,
                                                                              tmp_path: Path) -> None:
    """encoding: ascii maps to SQL_ASCII, which PostgreSQL only validates as the DATABASE encoding:
    'café' in UTF-8 loads on the fast path; Python's ascii codec rejects the same record when another
    record sends the file down the tolerant path."""
    route = items_route(max_bad=100, format="{encoding: ascii}")
    body = HEADER + "1,caf\u00e9,1,\n"
    load(warehouse, route, write(tmp_path / "items_fast.csv", body.encode()))
    load(warehouse, route, write(tmp_path / "items_tol.csv", (body + BAD_ROW).encode()))
    assert rows(db, "items_fast.csv") == rows(db, "items_tol.csv"), rejected(db)


# --- 4. the record byte cap is not enforced on the tolerant path ---------------------------------------

def test_a_record_over_the_cap_fails_even_when_the_file_fits_one_read(warehouse: str, db: DB, tmp_path: Path) -> None:
    """FastPathCheck sees the over-long record and hands the file to RecordReader, which checks the cap
    only when a record runs past its buffered read (1 MiB): a record of any length that ends inside the
    current read is accepted."""
    settings = Settings(warehouse_url=warehouse, max_record_bytes=1000)
    body = HEADER + "1," + "x" * 5000 + ",1,\n2,b,2,\n"
    result = load(warehouse, items_route(), write(tmp_path / "items.csv", body), settings)
    assert result.status == "failed" and "longer than 1000 bytes" in (result.first_error or ""), \
        (result.status, result.rows_loaded, result.first_error)


def test_a_record_just_over_the_cap_fails(warehouse: str, db: DB, tmp_path: Path) -> None:
    """Same with a 1 MiB cap and a record of 1 MiB + 1000 bytes: the reader's buffer holds exactly the
    cap (not more) after its first read, so it reads on and the record loads."""
    cap = 1 << 20
    settings = Settings(warehouse_url=warehouse, max_record_bytes=cap)
    body = HEADER + "1," + "x" * (cap + 1000) + ",1,\n2,b,2,\n"
    result = load(warehouse, items_route(), write(tmp_path / "items.csv", body), settings)
    assert result.status == "failed", (result.status, result.rows_loaded, result.first_error)


# --- 5. trailing bare CRs: held back and dropped by the fast path, a rejected record on the tolerant --

def test_trailing_bare_crs_read_alike_on_both_paths(warehouse: str, db: DB, tmp_path: Path) -> None:
    body = HEADER + "1,a,1,\n\r\r"
    fast = load(warehouse, items_route(max_bad=100), write(tmp_path / "items_fast.csv", body))
    tol = load(warehouse, items_route(max_bad=100),
               write(tmp_path / "items_tol.csv", HEADER + BAD_ROW + "1,a,1,\n\r\r"))
    assert (fast.rows_parsed, fast.rows_rejected) == (tol.rows_parsed - 1, tol.rows_rejected - 1), \
        ((fast.rows_parsed, fast.rows_rejected), (tol.rows_parsed, tol.rows_rejected), rejected(db))


def test_backslash_dot_cr_as_the_first_data_line_drops_nothing(warehouse: str, db: DB,
                                                                          tmp_path: Path) -> None:
    """An otherwise LF file whose first data record is '\\.' followed by ONE bare CR: FastPathCheck only
    flags '\\.' followed by LF, CRLF or EOF; PostgreSQL 15, with the line end not yet known, takes
    '\\.' + CR as the end of data. Every row is silently dropped and the load reports 'loaded', 0 rows."""
    body = HEADER + "\\.\r1,a,1,\n2,b,2,\n3,c,3,\n"
    result = load(warehouse, items_route(max_bad=100), write(tmp_path / "items.csv", body))
    got = rows(db)
    assert result.status != "loaded" or result.rows_rejected > 0 or len(got) >= 2, (result, got)


def test_backslash_dot_cr_does_not_empty_a_replace_table_target(warehouse: str, db: DB, tmp_path: Path) -> None:
    """Same input under mode replace_table: the new snapshot 'loads' with 0 rows and truncates the table."""
    route = items_route("replace_table", max_bad=100)
    load(warehouse, route, write(tmp_path / "items_1.csv", HEADER + "1,a,1,\n2,b,2,\n"))
    result = load(warehouse, route, write(tmp_path / "items_2.csv", HEADER + "\\.\r1,a,1,\n2,b,2,\n3,c,3,\n"))
    assert not (result.status == "loaded" and rows(db) == []), (result.status, result.message)
