"""SQL generation: identifiers always validated and quoted; statements per mode."""

from __future__ import annotations

import pytest

from filedrop.routes import parse_routes_yaml
from filedrop.warehouse import ddl, sql
from tests.unit.test_routes import route_yaml

ROUTE = parse_routes_yaml(route_yaml(columns="[{name: id, type: integer, nullable: false}, {name: v, type: text}]",
                                     mode="upsert", extra="\n  primaryKey: [id]"))[0]
LOAD = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize("bad", ['x"; DROP TABLE y; --', "Upper", "a b", "", "1abc", "x" * 64])
def test_ident_refuses_anything_but_validated_names(bad: str) -> None:
    with pytest.raises(ValueError, match="refusing"):
        sql.ident(bad)


def test_ident_quotes() -> None:
    assert sql.ident("orders") == '"orders"'
    assert sql.qualified("staging", "orders") == '"staging"."orders"'
    assert sql.literal("it's") == "'it''s'"


def test_load_id_is_checked() -> None:
    with pytest.raises(ValueError, match="bad load id"):
        sql.load_table_name("../../etc")


def test_staging_ddl_has_lineage_and_primary_key() -> None:
    create = ddl.staging_ddl("staging", ROUTE)[1]
    assert create.startswith('CREATE TABLE IF NOT EXISTS "staging"."things" ("id" integer NOT NULL, "v" text, ')
    assert '"_source_bucket" text NOT NULL, "_source_key" text NOT NULL' in create
    assert '"_row_number" bigint NOT NULL' in create
    assert create.endswith('PRIMARY KEY ("id"))')


def test_copy_uses_file_column_order_and_format() -> None:
    stmt = sql.copy_csv("filedrop", LOAD, ROUTE, ["v", "id"])
    assert stmt == (f'COPY "filedrop"."_load_{LOAD}" ("v", "id") FROM STDIN '
                    "(FORMAT csv, DELIMITER ',', QUOTE '\"', NULL '', ENCODING 'UTF8')")


def test_upsert_skips_unchanged_rows_and_dedups_when_asked() -> None:
    [fast] = sql.apply_statements("staging", "filedrop", LOAD, ROUTE, dedup=False)
    [dedup] = sql.apply_statements("staging", "filedrop", LOAD, ROUTE)
    assert "DISTINCT ON" not in fast
    assert 'DISTINCT ON (l."id")' in dedup and 'ORDER BY l."id", l."_row_number" DESC' in dedup
    for stmt in (fast, dedup):
        assert 'ON CONFLICT ("id") DO UPDATE SET "v" = EXCLUDED."v"' in stmt
        assert stmt.endswith('WHERE (t."v") IS DISTINCT FROM (EXCLUDED."v")')


@pytest.mark.parametrize("mode,first", [
    ("append", "INSERT INTO"), ("replace_source",
     'DELETE FROM "staging"."things" WHERE "_source_key" = %(key)s '
     'AND ("_source_bucket" = %(bucket)s OR "_source_bucket" IS NULL)'),
    ("replace_table", 'TRUNCATE "staging"."things"'),
])
def test_other_modes(mode: str, first: str) -> None:
    route = parse_routes_yaml(route_yaml(mode=mode))[0]
    stmts = sql.apply_statements("staging", "filedrop", LOAD, route)
    assert stmts[0].startswith(first)
    assert stmts[-1].startswith('INSERT INTO "staging"."things"')


def test_encodings() -> None:
    assert sql.pg_encoding("utf-8") == "UTF8" and sql.pg_encoding("latin-1") == "LATIN1"
    with pytest.raises(ValueError, match="no PostgreSQL equivalent"):
        sql.pg_encoding("utf-16")
