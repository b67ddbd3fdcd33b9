"""Benchmark (not a test): S3 put → rows queryable, local runtime reading S3 notifications from SQS.

    .venv/bin/python bench/latency.py [--files 20] [--size-mb 1]

Starts moto's S3/SQS server and an embedded PostgreSQL in a temporary directory, points the bucket's
ObjectCreated notifications at a queue, runs `filedrop run --watch --queue URL --no-transform` as a
subprocess, then puts N files of about SIZE MB one after another and measures, for each, the time from the
put returning to its rows being visible in staging (polled every 10 ms). Prints p50, p95 and max.
DESIGN §8's target: p50 ≤ 2 s for a file ≤ 1 MB.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3
import psycopg

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from filedrop.warehouse import EmbeddedPostgres  # noqa: E402
from tests.support.servers import start_moto  # noqa: E402  (the same moto server the tests use)


def orders_file(n_rows: int, start: int) -> bytes:
    lines = ["order_id,customer_id,order_date,product_id,unit_price,quantity,total_price"]
    lines += [f"{i},{i % 997},2022-0{1 + i % 9}-1{i % 10},{i % 30},"
              f"{10 + i % 90},{1 + i % 9},{(10 + i % 90) * (1 + i % 9)}"
              for i in range(start, start + n_rows)]
    return ("\n".join(lines) + "\n").encode()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=20)
    ap.add_argument("--size-mb", type=float, default=1.0)
    args = ap.parse_args()
    home = Path(tempfile.mkdtemp(prefix="filedrop-latency-"))
    endpoint, stop_moto = start_moto()
    warehouse = EmbeddedPostgres(home)
    url = warehouse.start()
    os.environ.update(AWS_ENDPOINT_URL=endpoint, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                      AWS_DEFAULT_REGION="us-east-1")
    s3, sqs = boto3.client("s3"), boto3.client("sqs")
    queue = sqs.create_queue(QueueName="latency")["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    s3.create_bucket(Bucket="latency-bench")
    s3.put_bucket_notification_configuration(Bucket="latency-bench", NotificationConfiguration={
        "QueueConfigurations": [{"QueueArn": arn, "Events": ["s3:ObjectCreated:*"]}]})
    log = open(home / "run.log", "wb")
    runner = subprocess.Popen([sys.executable, "-m", "filedrop", "run", "--queue", queue, "--watch", "--interval", "20",
                               "--warehouse", url, "--no-transform"], env={**os.environ, "FILEDROP_HOME": str(home)},
                              stdout=log, stderr=subprocess.STDOUT)
    rows_per_file = max(1, int(args.size_mb * 1e6 / 36))  # about 36 bytes a row
    latencies: list[float] = []
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for n in range(args.files):
                body = orders_file(rows_per_file, n * rows_per_file + 1)
                key = f"orders_data/orders_{n:04d}.csv"
                s3.put_object(Bucket="latency-bench", Key=key, Body=body)
                t0 = time.monotonic()
                deadline = t0 + 120
                while True:
                    try:
                        row = conn.execute("SELECT 1 FROM filedrop.ingest_history WHERE key = %s AND status = 'loaded'",
                                           (key,)).fetchone()
                    except psycopg.errors.UndefinedTable:
                        row = None
                    if row:
                        break
                    if time.monotonic() > deadline or runner.poll() is not None:
                        raise SystemExit(f"{key} not loaded in time:\n{(home / 'run.log').read_text()[-3000:]}")
                    time.sleep(0.01)  # poll interval of the measurement
                latencies.append(time.monotonic() - t0)
                print(f"{key}: {len(body) / 1e6:.2f} MB, {latencies[-1]:.3f} s", flush=True)
    finally:
        runner.terminate()
        runner.wait(30)
        warehouse.stop()
        stop_moto()
        log.close()
        shutil.rmtree(home, ignore_errors=True)
    q = statistics.quantiles(latencies, n=20, method="inclusive")  # stays within the measured range
    print(f"\n{args.files} files of ~{args.size_mb} MB: p50 {statistics.median(latencies):.2f} s, "
          f"p95 {q[18]:.2f} s, max {max(latencies):.2f} s (target p50 <= 2 s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
