"""``spark-submit`` main file of the Spark engine: load one object version with the whole load protocol.

    spark-submit filedrop/spark/job.py s3://bucket/key --route orders [--etag E --size N ...]

The driver runs :func:`filedrop.load.session.load_object` with ``engine="spark"``: history check, Spark parse
into the per-load table, the one short apply, the history row. With ``--etag``/``--size`` (what a FileDrop
records) the object is not looked up again. Warehouse: ``--warehouse`` or ``FILEDROP_WAREHOUSE_URL``
(password from ``PGPASSWORD``). Prints the result as JSON; exit status 0 loaded or skipped, 1 failed
(permanent: do not retry), 75 failed (transient: retry).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from datetime import datetime
from pathlib import Path

from filedrop.config import Settings
from filedrop.exitcodes import ExitCode
from filedrop.load.session import load_object
from filedrop.load.sources import Location, describe_uri
from filedrop.objects import SourceObject
from filedrop.routes import load_routes, parse_route, route_named
from filedrop.warehouse import prepare_meta


def _object(args: argparse.Namespace) -> SourceObject:
    if args.etag is None:
        return describe_uri(args.uri)
    loc = Location.parse(args.uri) if not args.uri.startswith(("s3://", "s3a://")) else None
    if loc is not None:  # a local file: bucket is its directory, key its name
        bucket, key, uri, is_s3 = loc.bucket, loc.prefix, str(Path(loc.bucket) / loc.prefix), False
    else:
        bucket, _, key = args.uri.split("://", 1)[1].partition("/")
        uri, is_s3 = f"s3://{bucket}/{key}", True
    modified = datetime.fromisoformat(args.last_modified) if args.last_modified else None
    return SourceObject(bucket=bucket, key=key, etag=args.etag, size=args.size or 0, last_modified=modified,
                        version_id=args.version_id, sequencer=args.sequencer, uri=uri, is_s3=is_s3)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="filedrop-spark-job", description=__doc__.split("\n\n")[0])
    p.add_argument("uri", help="s3://bucket/key (read as s3a://) or a local file")
    p.add_argument("--route", required=True)
    p.add_argument("--routes", type=Path, action="append", help="FileRoute manifests (default: the d2b routes)")
    p.add_argument("--warehouse", help="PostgreSQL URL (default $FILEDROP_WAREHOUSE_URL)")
    p.add_argument("--etag")
    p.add_argument("--size", type=int)
    p.add_argument("--version-id")
    p.add_argument("--sequencer")
    p.add_argument("--last-modified")
    p.add_argument("--filedrop", help="name of the FileDrop this load is for")
    p.add_argument("--route-json", help="the FileRoute as JSON (how the operator passes it) instead of --routes")
    p.add_argument("--replay", default="", help="replay token: load again even if loaded before")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("py4j").setLevel(logging.WARNING)
    settings = Settings()
    url = args.warehouse or settings.warehouse_url
    if not url:
        p.error("give --warehouse or set FILEDROP_WAREHOUSE_URL")
    if args.route_json:
        route = parse_route(json.loads(args.route_json), "--route-json")
    else:
        route = route_named(load_routes(args.routes), args.route)
    obj = _object(args)
    prepare_meta(url, settings)
    result = load_object(url, settings, route, obj, engine="spark", filedrop=args.filedrop, replay=args.replay)
    print(json.dumps({
        "status": result.status, "load_id": result.load_id, "engine": result.engine, "rows_parsed": result.rows_parsed,
        "rows_loaded": result.rows_loaded, "rows_rejected": result.rows_rejected, "first_error": result.first_error,
        "first_error_line": result.first_error_line, "message": result.message, "retryable": result.retryable,
    }))
    if result.status != "failed":
        return ExitCode.OK
    return ExitCode.TEMPFAIL if result.retryable else ExitCode.FAILED


if __name__ == "__main__":
    sys.exit(main())
