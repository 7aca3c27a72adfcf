"""The reference for `bench_view_sync`: what a plain script does for the same view -> S3 JSONL
sync, with requests and boto3. It reads the whole view (no streaming), writes one JSON Lines
object per chunk of CHUNK records, then the watermark object. No lease, no compare-and-swap.

usage: view_sync_reference.py VIEW_URL USER PASSWORD ON_BEHALF_OF S3_ENDPOINT BUCKET CHUNK
prints one JSON line: {"records", "seconds"}
"""
import json
import sys
import time

import boto3
import requests
from botocore.config import Config

url, user, password, on_behalf_of, endpoint, bucket, chunk = sys.argv[1:8]
chunk = int(chunk)
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="bench",
    aws_secret_access_key="bench",
    config=Config(s3={"addressing_style": "path"}),
)
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
    body = "".join(json.dumps(r) + "\n" for r in part)
    key = f"reference/after-{watermark or 'start'}.jsonl"
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
    # Field casing varies between records: match the cursor's name case-insensitively.
    watermark = max(int(next(v for k, v in r.items() if k.lower() == "lastsubmissionid")) for r in part)
    s3.put_object(Bucket=bucket, Key="reference/watermark.json", Body=json.dumps({"value": watermark}).encode())
print(json.dumps({"records": len(records), "seconds": round(time.monotonic() - started, 3)}))
