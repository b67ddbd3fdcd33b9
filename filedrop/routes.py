"""FileRoute: which files go to which staging table, and how (DESIGN §2).

Pure layer: the model, YAML loading (the same documents ``kubectl apply`` takes), validation with
messages a user can act on, and matching of object keys. No database or network access here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

API_VERSION: Final = "filedrop.dev/v1alpha1"
KIND: Final = "FileRoute"

#: Unquoted-identifier rule we accept for schema, table and column names: lower-case start, then
#: lower-case letters, digits and underscores, at most 63 bytes (PostgreSQL's NAMEDATALEN - 1).
#: Names are still always quoted in SQL; the rule keeps them portable to dbt and Spark.
IDENTIFIER = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")

#: Lineage columns every staging row carries (DESIGN §3); route columns may not use these names.
LINEAGE_COLUMNS = ("_source_bucket", "_source_key", "_source_etag", "_load_id", "_row_number", "_loaded_at")

ColumnType = Literal[
    "integer", "bigint", "smallint", "numeric", "text", "date", "timestamp", "timestamptz", "boolean"
]
Mode = Literal["append", "replace_source", "replace_table", "upsert"]
Engine = Literal["auto", "direct", "spark"]


class RouteError(ValueError):
    """A FileRoute manifest is invalid; the message says which document and what to change."""


def check_identifier(name: str, what: str) -> str:
    if not IDENTIFIER.match(name):
        raise ValueError(
            f"{what} {name!r} is not a valid identifier: use lower-case letters, digits and "
            f"underscores, starting with a letter or underscore, at most 63 characters"
        )
    return name


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class Match(_Spec):
    bucket: str | None = None
    prefix: str | None = None
    pattern: str = Field(description="regular expression matched against the key's base name")

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"pattern {value!r} is not a valid regular expression: {exc}") from None
        return value


#: Python codec names (as routes spell them) to PostgreSQL client encodings.
PG_ENCODINGS: dict[str, str] = {
    "utf-8": "UTF8", "utf8": "UTF8", "latin-1": "LATIN1", "latin1": "LATIN1", "iso-8859-1": "LATIN1",
    "iso8859-1": "LATIN1", "cp1252": "WIN1252", "windows-1252": "WIN1252", "iso-8859-15": "LATIN9",
    "ascii": "SQL_ASCII",
}


class Format(_Spec):
    delimiter: str = ","
    header: bool = True
    quote: str = '"'
    null_value: str = Field("", alias="nullValue")
    encoding: str = "utf-8"
    compression: Literal["auto", "gzip", "none"] = "auto"

    @field_validator("delimiter", "quote")
    @classmethod
    def _single_char(cls, value: str) -> str:
        if len(value) != 1 or value in "\r\n":
            raise ValueError(f"must be exactly one character other than a line break, got {value!r}")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        import codecs

        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r}") from None
        if value.lower() not in PG_ENCODINGS:
            raise ValueError(f"encoding {value!r} has no PostgreSQL equivalent here; use one of "
                             f"{', '.join(sorted(PG_ENCODINGS))}")
        return value

    @model_validator(mode="after")
    def _readable(self) -> Format:
        """Refuse formats no file could be read with, when the routes are read (not per file later)."""
        if self.delimiter == self.quote:
            raise ValueError(f"delimiter and quote must differ (both {self.delimiter!r})")
        for ch, what in ((self.delimiter, "delimiter"), (self.quote, "quote")):
            if ch in self.null_value:
                raise ValueError(f"nullValue must not contain the {what} ({ch!r}): no unquoted field can equal it")
        if "\r" in self.null_value or "\n" in self.null_value:
            raise ValueError("nullValue must not contain a line break")
        return self


#: Column types whose text is a date or time: PostgreSQL reads them by DateStyle unless a format is given.
DATE_TYPES = ("date", "timestamp", "timestamptz")


class Column(_Spec):
    name: str
    type: ColumnType
    nullable: bool = True
    #: for date and time columns: the exact PostgreSQL ``to_date``/``to_timestamp`` template the values
    #: are written in (e.g. ``DD/MM/YYYY``); a value that does not read back identically is rejected
    format: str | None = Field(None, min_length=1, max_length=100)

    @model_validator(mode="after")
    def _format_for_dates(self) -> Column:
        if self.format is not None and self.type not in DATE_TYPES:
            raise ValueError(f"column {self.name}: format applies to {', '.join(DATE_TYPES)} columns only")
        return self

    @field_validator("name")
    @classmethod
    def _identifier(cls, value: str) -> str:
        check_identifier(value, "column name")
        if value in LINEAGE_COLUMNS:
            raise ValueError(f"column name {value!r} is reserved for lineage ({', '.join(LINEAGE_COLUMNS)})")
        return value


class RouteSpec(_Spec):
    match: Match
    table: str
    format: Format = Format()
    columns: tuple[Column, ...] = Field(min_length=1)
    mode: Mode = "append"
    primary_key: tuple[str, ...] = Field((), alias="primaryKey")
    on_error: Literal["abort", "continue"] = Field("abort", alias="onError")
    max_bad_rows_percent: float = Field(0.0, alias="maxBadRowsPercent", ge=0, le=100)
    engine: Engine = "auto"

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return check_identifier(value, "table name")

    @model_validator(mode="after")
    def _consistent(self) -> RouteSpec:
        names = [c.name for c in self.columns]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate column name(s): {', '.join(dupes)}")
        if self.mode == "upsert" and not self.primary_key:
            raise ValueError("mode 'upsert' needs primaryKey: the column(s) that identify a row")
        unknown = [k for k in self.primary_key if k not in names]
        if unknown:
            raise ValueError(f"primaryKey column(s) not in columns: {', '.join(unknown)}")
        formatted = [c.name for c in self.columns if c.format and c.name in self.primary_key]
        if formatted:
            raise ValueError(f"primaryKey column(s) with a format: {', '.join(formatted)} (write keys as ISO dates)")
        return self


class Metadata(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str

    @field_validator("name")
    @classmethod
    def _dns_name(cls, value: str) -> str:
        if not re.match(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$", value):
            raise ValueError(
                f"metadata.name {value!r} must be a Kubernetes name: lower-case letters, digits and '-'"
            )
        return value


class FileRoute(BaseModel):
    """One FileRoute document. ``route.name`` is ``metadata.name``."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)
    api_version: Literal["filedrop.dev/v1alpha1"] = Field(API_VERSION, alias="apiVersion")
    kind: Literal["FileRoute"] = KIND
    metadata: Metadata
    spec: RouteSpec

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.spec.columns)

    def matches(self, bucket: str | None, key: str) -> bool:
        """True when an object (``bucket`` may be None for local files) belongs to this route.

        ``bucket`` and ``prefix`` filter S3 objects only; ``pattern`` is searched in the base name.
        """
        m = self.spec.match
        if m.bucket is not None and bucket is not None and m.bucket != bucket:
            return False
        if m.prefix is not None and bucket is not None and not key.startswith(m.prefix):
            return False
        return re.search(_whole_name(m.pattern), key.rsplit("/", 1)[-1]) is not None


def _top_level_alternation(regex: str) -> bool:
    """A ``|`` outside every group: ``^a|b$`` is ``(^a)|(b$)``, which stripping the anchors would change."""
    depth, i = 0, 0
    while i < len(regex):
        c = regex[i]
        if c == "\\":
            i += 2
            continue
        depth += (c == "(") - (c == ")")
        if c == "|" and depth == 0:
            return True
        i += 1
    return False


@functools.lru_cache(maxsize=256)
def _base_names(pattern: str) -> Any:
    """The base names ``pattern`` matches (``re.search``), as a greenery FSM; None when that cannot be told
    faithfully: look-arounds, flags, back-references, anchors inside an alternation, Unicode-wide classes
    (Python's ``\\w``, ``\\d``, ``\\s``, ``\\b`` are Unicode, greenery's ASCII), or too long to check cheaply."""
    from greenery import parse

    body = pattern
    start = body.startswith("^")
    end = body.endswith("$") and not body.endswith("\\$")
    body = body[1 if start else 0:len(body) - 1 if end else len(body)]
    outside_classes = re.sub(r"\[\^?(?:\\.|[^\]\\])*\]", "", body)  # a ^ inside [^...] is a negation
    if (len(body) > 200 or (_top_level_alternation(outside_classes) and (start or end)) or "^" in outside_classes
            or re.search(r"(?<!\\)\$", body) or re.search(r"\\[wWdDsSbB]", body)):
        return None
    regex = f"{'' if start else '.*'}({body}){'' if end else '.*'}"
    try:
        return parse(regex).to_fsm() & parse("[^/]*").to_fsm()
    except Exception:  # noqa: BLE001 - greenery's own errors for syntax it does not support
        return None


def overlap(a: FileRoute, b: FileRoute) -> bool | None:
    """True when some S3 object can match both routes, False when none can, None when that cannot be told
    (a pattern beyond what is checked: then nothing is claimed)."""
    ma, mb = a.spec.match, b.spec.match
    return _overlap((ma.bucket, ma.prefix, ma.pattern), (mb.bucket, mb.prefix, mb.pattern))


@functools.lru_cache(maxsize=4096)
def _overlap(a: tuple[str | None, str | None, str], b: tuple[str | None, str | None, str]) -> bool | None:
    (bucket_a, prefix_a, pattern_a), (bucket_b, prefix_b, pattern_b) = a, b
    if bucket_a and bucket_b and bucket_a != bucket_b:
        return False
    if prefix_a and prefix_b and not (prefix_a.startswith(prefix_b) or prefix_b.startswith(prefix_a)):
        return False
    fa, fb = _base_names(pattern_a), _base_names(pattern_b)
    if fa is None or fb is None:
        return None
    return not (fa & fb).empty()


def _whole_name(pattern: str) -> str:
    """A pattern ending in ``$`` anchors at the very end of the name: Python's ``$`` also matches
    before a final newline, so ``^items\\.csv$`` would take a key named ``items.csv`` + newline."""
    if pattern.endswith("$") and not pattern.endswith("\\$"):
        return pattern[:-1] + r"\Z"
    return pattern


def _format_validation_error(origin: str, exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"  {loc}: {msg}")
    return f"{origin}: invalid FileRoute\n" + "\n".join(lines)


def parse_route(doc: Any, origin: str = "<manifest>") -> FileRoute:
    """Validate one decoded YAML document as a FileRoute; raise RouteError naming ``origin``."""
    if not isinstance(doc, dict):
        raise RouteError(f"{origin}: expected a mapping with apiVersion, kind, metadata and spec")
    if doc.get("kind") != KIND:
        raise RouteError(f"{origin}: kind is {doc.get('kind')!r}, expected {KIND!r}")
    if doc.get("apiVersion") != API_VERSION:
        raise RouteError(f"{origin}: apiVersion is {doc.get('apiVersion')!r}, expected {API_VERSION!r}")
    name = (doc.get("metadata") or {}).get("name", "?")
    try:
        return FileRoute.model_validate(doc)
    except ValidationError as exc:
        raise RouteError(_format_validation_error(f"{origin} (FileRoute {name})", exc)) from None


def parse_routes_yaml(text: str, origin: str = "<manifest>") -> list[FileRoute]:
    """All FileRoute documents in a multi-document YAML text (a ``kind: List`` is unpacked)."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise RouteError(f"{origin}: not valid YAML: {exc}") from None
    routes: list[FileRoute] = []
    for i, doc in enumerate(docs, 1):
        items = doc.get("items", []) if isinstance(doc, dict) and doc.get("kind") == "List" else [doc]
        for item in items:
            routes.append(parse_route(item, f"{origin} document {i}"))
    return routes


def load_routes(paths: Sequence[Path] | None = None) -> list[FileRoute]:
    """Load FileRoutes from files or directories of ``*.yaml``/``*.yml``; default: the d2b routes.

    Route names and target tables must be unique across everything loaded.
    """
    routes: list[FileRoute] = []
    if not paths:
        text = resources.files("filedrop").joinpath("defaults/d2b-routes.yaml").read_text("utf-8")
        routes = parse_routes_yaml(text, "default d2b routes")
    else:
        for path in paths:
            files = (
                sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml"))
                if path.is_dir()
                else [path]
            )
            if not files or not path.exists():
                raise RouteError(f"{path}: no FileRoute manifests found (expected .yaml files)")
            for f in files:
                routes.extend(parse_routes_yaml(f.read_text("utf-8"), str(f)))
    _check_unique(routes)
    return routes


def _check_unique(routes: Iterable[FileRoute]) -> None:
    names: dict[str, int] = {}
    tables: dict[str, str] = {}
    for r in routes:
        names[r.name] = names.get(r.name, 0) + 1
        if r.spec.table in tables and tables[r.spec.table] != r.name:
            raise RouteError(
                f"FileRoutes {tables[r.spec.table]!r} and {r.name!r} both target table {r.spec.table!r}; "
                "one table has one route"
            )
        tables[r.spec.table] = r.name
    dupes = sorted(n for n, c in names.items() if c > 1)
    if dupes:
        raise RouteError(f"FileRoute name(s) defined more than once: {', '.join(dupes)}")


def route_for(routes: Iterable[FileRoute], bucket: str | None, key: str) -> FileRoute | None:
    """The single route matching an object, None when none does; several matches is an error."""
    found = [r for r in routes if r.matches(bucket, key)]
    if len(found) > 1:
        raise RouteError(f"{key!r} matches several FileRoutes: {', '.join(r.name for r in found)}")
    return found[0] if found else None


def route_named(routes: Iterable[FileRoute], name: str) -> FileRoute:
    for r in routes:
        if r.name == name:
            return r
    raise RouteError(f"no FileRoute named {name!r} (known: {', '.join(r.name for r in routes) or 'none'})")
