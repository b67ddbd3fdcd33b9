"""The DDL of the warehouse contract (DESIGN §3): the bookkeeping schema (``ingest_history``,
``rejected_rows`` and the functions the loads call) and the routes' staging tables. Pure text from
validated, quoted identifiers (:mod:`filedrop.warehouse.sql`).
"""

from __future__ import annotations

from filedrop.csvscan import UNAMBIGUOUS_DATE_SQL
from filedrop.routes import FileRoute
from filedrop.warehouse.sql import PG_TYPES, ident, literal, qualified

# --- bookkeeping ---------------------------------------------------------------------------------

#: Version of the bookkeeping schema this release writes; kept as the comment on ingest_history, so a
#: command can see that the schema is current without DDL (DDL would lock the table).
META_VERSION = 5

#: Objects of the bookkeeping schema that a current schema does not have: an older release's loader (a
#: rolling upgrade) may create them again without touching the version, so their absence is checked too.
LEGACY_META_OBJECTS = ("ingest_history_loaded_once", "ingest_history_loaded_once_v2")


def meta_version_comment() -> str:
    return f"filedrop bookkeeping schema version {META_VERSION}: one row per attempt to load one object version"


def meta_ddl(meta: str, server_version_num: int) -> list[str]:
    """Idempotent DDL of the bookkeeping schema: history, rejected rows, the input check function.

    Run only when the schema is missing or older than :data:`META_VERSION` (its last statement records
    the version)."""
    m = ident(meta)
    statements = [
        f"CREATE SCHEMA IF NOT EXISTS {m}",
        f"""CREATE TABLE IF NOT EXISTS {m}.ingest_history (
            load_id text PRIMARY KEY,
            bucket text NOT NULL,
            key text NOT NULL,
            etag text NOT NULL,
            version_id text,
            sequencer text,
            last_modified timestamptz,
            size_bytes bigint,
            route text NOT NULL,
            target_table text NOT NULL,
            mode text NOT NULL,
            engine text NOT NULL,
            status text NOT NULL CHECK (status IN
                ('running', 'loaded', 'skipped_duplicate', 'skipped_superseded', 'failed')),
            rows_parsed bigint,
            rows_loaded bigint,
            rows_rejected bigint,
            first_error text,
            first_error_line bigint,
            message text,
            attempt integer NOT NULL DEFAULT 1,
            retryable boolean NOT NULL DEFAULT false,
            filedrop text,
            replay text NOT NULL DEFAULT '',
            previous_load_id text,
            started_at timestamptz NOT NULL DEFAULT now(),
            finished_at timestamptz
        )""",
        # Columns added after the first release of the table (and indexes of earlier releases dropped).
        f"ALTER TABLE {m}.ingest_history ADD COLUMN IF NOT EXISTS retryable boolean NOT NULL DEFAULT false",
        f"ALTER TABLE {m}.ingest_history ADD COLUMN IF NOT EXISTS replay text NOT NULL DEFAULT ''",
        f"ALTER TABLE {m}.ingest_history ADD COLUMN IF NOT EXISTS previous_load_id text",
        f"DROP INDEX IF EXISTS {m}.ingest_history_loaded_once",
        f"DROP INDEX IF EXISTS {m}.ingest_history_loaded_once_v2",
        # The hard guarantee behind "exactly once": a version is applied once on top of a given state of
        # its (bucket, key) — the latest load before it (previous_load_id). The same bytes may load again
        # later on top of another state: that is a rollback, a new version (DESIGN §3).
        f"""CREATE UNIQUE INDEX IF NOT EXISTS ingest_history_loaded_once_v3
            ON {m}.ingest_history (bucket, key, etag, replay, coalesce(previous_load_id, ''))
            WHERE status = 'loaded'""",
        f"CREATE INDEX IF NOT EXISTS ingest_history_filedrop ON {m}.ingest_history (filedrop, started_at)",
        f"CREATE INDEX IF NOT EXISTS ingest_history_object ON {m}.ingest_history (bucket, key)",
        f"CREATE INDEX IF NOT EXISTS ingest_history_running ON {m}.ingest_history (status) WHERE status = 'running'",
        f"""CREATE TABLE IF NOT EXISTS {m}.rejected_rows (
            load_id text NOT NULL,
            line_number bigint,
            raw_line text,
            error text NOT NULL,
            column_name text,
            rejected_at timestamptz NOT NULL DEFAULT now()
        )""",
        f"CREATE INDEX IF NOT EXISTS rejected_rows_load ON {m}.rejected_rows (load_id, line_number)",
    ]
    # input_error(value, type): NULL when the text is valid input for the type, else PostgreSQL's
    # own message. PostgreSQL 16 has pg_input_error_info (no subtransaction per value); 15 needs one.
    if server_version_num >= 160000:
        statements.append(
            f"""CREATE OR REPLACE FUNCTION {m}.input_error(v text, t text) RETURNS text
                LANGUAGE sql STABLE PARALLEL SAFE AS
                $$ SELECT (pg_input_error_info(v, t)).message $$"""
        )
    else:
        statements.append(
            f"""CREATE OR REPLACE FUNCTION {m}.input_error(v text, t text) RETURNS text
                LANGUAGE plpgsql STABLE AS $$
                BEGIN
                    IF v IS NULL THEN RETURN NULL; END IF;
                    EXECUTE format('SELECT %L::%s', v, t);
                    RETURN NULL;
                EXCEPTION WHEN data_exception THEN
                    RETURN SQLERRM;
                END $$"""
        )
    # format_error(value, type, template): NULL when the value is written exactly in the column's declared
    # format (it reads back identically through to_char), else why not. to_date alone is lenient: it
    # ignores trailing text and reads "03/04/22" with YYYY as the year 22.
    statements.append(
        f"""CREATE OR REPLACE FUNCTION {m}.format_error(v text, t text, f text) RETURNS text
            LANGUAGE plpgsql STABLE AS $$
            DECLARE back text;
            BEGIN
                IF v IS NULL THEN RETURN NULL; END IF;
                IF t = 'date' THEN back := to_char(to_date(v, f), f);
                ELSE back := to_char(to_timestamp(v, f), f);
                END IF;
                IF back IS DISTINCT FROM v THEN
                    RETURN format('%L is not written as %L (it reads as %L)', v, f, back);
                END IF;
                RETURN NULL;
            EXCEPTION WHEN data_exception THEN
                RETURN SQLERRM;
            END $$"""
    )
    # datestyle_error(value, type): NULL unless PostgreSQL reads the value as a valid date/time under the
    # pinned DateStyle (ISO, YMD) and as another one under DMY or MDY: then why it is refused. Values
    # that start with 3+ digits (ISO dates) cannot be ambiguous and skip the three readings.
    statements.append(
        f"""CREATE OR REPLACE FUNCTION {m}.datestyle_error(v text, t text) RETURNS text
            LANGUAGE plpgsql VOLATILE AS $$
            DECLARE
                saved text := current_setting('DateStyle');
                readings text[] := '{{}}';
                style text;
                r text;
            BEGIN
                IF v IS NULL OR v ~ {literal(UNAMBIGUOUS_DATE_SQL)} THEN RETURN NULL; END IF;
                FOREACH style IN ARRAY ARRAY['ISO, YMD', 'ISO, DMY', 'ISO, MDY'] LOOP
                    BEGIN
                        PERFORM set_config('DateStyle', style, true);
                        EXECUTE format('SELECT (%L::%s)::text', v, t) INTO r;
                    EXCEPTION WHEN data_exception THEN
                        r := NULL;
                    END;
                    readings := readings || r;
                END LOOP;
                PERFORM set_config('DateStyle', saved, true);
                IF readings[1] IS NULL THEN RETURN NULL; END IF;
                IF readings[2] IS DISTINCT FROM readings[1] AND readings[2] IS NOT NULL
                   OR readings[3] IS DISTINCT FROM readings[1] AND readings[3] IS NOT NULL THEN
                    RETURN format('ambiguous date %L: %s under DateStyle YMD, %s under DMY, %s under MDY; '
                                  'write dates as YYYY-MM-DD or declare the column''s format',
                                  v, readings[1], coalesce(readings[2], 'invalid'), coalesce(readings[3], 'invalid'));
                END IF;
                RETURN NULL;
            END $$"""
    )
    statements.append(f"COMMENT ON TABLE {m}.ingest_history IS {literal(meta_version_comment())}")
    return statements


# --- staging -------------------------------------------------------------------------------------

LINEAGE_DDL = (
    ('"_source_bucket"', "text NOT NULL"),
    ('"_source_key"', "text NOT NULL"),
    ('"_source_etag"', "text NOT NULL"),
    ('"_load_id"', "text NOT NULL"),
    ('"_row_number"', "bigint NOT NULL"),
    ('"_loaded_at"', "timestamp with time zone NOT NULL"),
)


def staging_columns(route: FileRoute) -> list[tuple[str, str, bool]]:
    """(name, PostgreSQL type, nullable) of a staging table, route columns then lineage."""
    cols = [(c.name, PG_TYPES[c.type], c.nullable and c.name not in route.spec.primary_key)
            for c in route.spec.columns]
    cols += [(n.strip('"'), t.removesuffix(" NOT NULL"), False) for n, t in LINEAGE_DDL]
    return cols


def staging_ddl(schema: str, route: FileRoute) -> list[str]:
    """Idempotent DDL of a route's staging table (primary key for upsert, index for replace_source)."""
    s = route.spec
    table = qualified(schema, s.table)
    cols = [f"{ident(c.name)} {PG_TYPES[c.type]}{'' if c.nullable and c.name not in s.primary_key else ' NOT NULL'}"
            for c in s.columns]
    cols += [f"{n} {t}" for n, t in LINEAGE_DDL]
    if s.primary_key:
        cols.append(f"PRIMARY KEY ({', '.join(ident(k) for k in s.primary_key)})")
    out = [f"CREATE SCHEMA IF NOT EXISTS {ident(schema)}", f"CREATE TABLE IF NOT EXISTS {table} ({', '.join(cols)})"]
    if s.mode == "replace_source":
        [name] = staging_index_names(route)
        out.append(f'CREATE INDEX IF NOT EXISTS {ident(name)} ON {table} ("_source_key", "_source_bucket")')
    return out


def staging_index_names(route: FileRoute) -> list[str]:
    """Secondary indexes a route's staging table needs: (key, bucket) for ``replace_source``'s delete."""
    return [route.spec.table[:47] + "_source_object"] if route.spec.mode == "replace_source" else []


def staging_bucket_migration(schema: str, meta: str, table: str) -> list[str]:
    """Add ``_source_bucket`` to a staging table made before it existed, filled from the history rows
    of the loads that wrote each row.

    The column stays nullable there: rows whose load is no longer in the history (pruned), and rows an
    older loader still writes during a rolling upgrade, have no bucket; ``replace_source`` treats such
    rows as the old release did (by key)."""
    target = qualified(schema, table)
    return [
        f'ALTER TABLE {target} ADD COLUMN IF NOT EXISTS "_source_bucket" text',
        f"""UPDATE {target} t SET "_source_bucket" = h.bucket FROM {ident(meta)}.ingest_history h
            WHERE h.load_id = t."_load_id" AND t."_source_bucket" IS NULL""",
    ]


