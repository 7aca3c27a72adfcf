"""The reference for `bench_view_sync`: what a plain script does for the same view sync, with
requests and boto3 (and psycopg for the PostgreSQL sink). It reads the whole view (no
streaming); per chunk of CHUNK records it writes one JSON Lines object to S3, or upserts the rows
into PostgreSQL, then writes the watermark object to S3. No lease, no compare-and-swap.

usage: view_sync_reference.py VIEW_URL USER PASSWORD ON_BEHALF_OF S3_ENDPOINT BUCKET CHUNK [PG_DSN]
prints one JSON line: {"records", "seconds"}
"""
import json
import sys
import time

import boto3
import requests
from botocore.config import Config

url, user, password, on_behalf_of, endpoint, bucket, chunk = sys.argv[1:8]
pg_dsn = sys.argv[8] if len(sys.argv) > 8 else None
chunk = int(chunk)
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="bench",
    aws_secret_access_key="bench",
    config=Config(s3={"addressing_style": "path"}),
)
db = None
if pg_dsn:
    import psycopg

    db = psycopg.connect(pg_dsn, autocommit=True)
    db.execute(
        """CREATE TABLE IF NOT EXISTS reference_rows (
             record_id text PRIMARY KEY, last_submission_id numeric NOT NULL, record jsonb NOT NULL)"""
    )


def field(record, name):
    # Field casing varies between records: match names case-insensitively.
    return next(v for k, v in record.items() if k.lower() == name)


started = time.monotonic()
response = requests.get(
    url,
    params={"onbehalfof": on_behalf_of, "previouslastsubmissionid": ""},
    auth=(user, password),
    timeout=300,
)
response.raise_for_status()
records = response.json()
watermark = None
for i in range(0, len(records), chunk):
    part = records[i : i + chunk]
    if db is None:
        body = "".join(json.dumps(r) + "\n" for r in part)
        key = f"reference/after-{watermark or 'start'}.jsonl"
        s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
    else:
        with db.transaction(), db.cursor() as cur:
            cur.executemany(
                """INSERT INTO reference_rows AS t (record_id, last_submission_id, record)
                   VALUES (%s, %s, %s::jsonb)
                   ON CONFLICT (record_id) DO UPDATE
                   SET last_submission_id = EXCLUDED.last_submission_id, record = EXCLUDED.record
                   WHERE t.last_submission_id < EXCLUDED.last_submission_id""",
                [
                    (str(field(r, "recordid")), int(field(r, "lastsubmissionid")), json.dumps(r))
                    for r in part
                ],
            )
    watermark = max(int(field(r, "lastsubmissionid")) for r in part)
    s3.put_object(Bucket=bucket, Key="reference/watermark.json", Body=json.dumps({"value": watermark}).encode())
print(json.dumps({"records": len(records), "seconds": round(time.monotonic() - started, 3)}))
