"""Raw limit for the S3 side: a plain multipart upload of local bytes with boto3 to one of the
bench's S3 servers (moto or s3s-fs), reporting the part-upload time and the complete step
separately (moto is single-core Python and its CompleteMultipartUpload dominates large uploads).

usage: moto_multipart.py ENDPOINT BUCKET FILE [PART_MIB]
prints one JSON line: {"bytes", "parts_s", "complete_s", "total_s", "mb_per_s"}
"""
import json
import sys
import time

import boto3
from botocore.config import Config

endpoint, bucket, path = sys.argv[1], sys.argv[2], sys.argv[3]
part_size = int(sys.argv[4] if len(sys.argv) > 4 else 8) * 1024 * 1024
s3 = boto3.client(
    "s3",
    endpoint_url=endpoint,
    region_name="us-east-1",
    aws_access_key_id="bench",
    aws_secret_access_key="bench",
    config=Config(s3={"addressing_style": "path"}),
)
key = "raw/" + path.rsplit("/", 1)[-1]
started = time.monotonic()
upload = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
parts = []
size = 0
with open(path, "rb") as f:
    number = 1
    while True:
        chunk = f.read(part_size)
        if not chunk:
            break
        etag = s3.upload_part(Bucket=bucket, Key=key, UploadId=upload, PartNumber=number, Body=chunk)["ETag"]
        parts.append({"PartNumber": number, "ETag": etag})
        size += len(chunk)
        number += 1
parts_done = time.monotonic()
s3.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})
done = time.monotonic()
print(json.dumps({
    "bytes": size,
    "parts_s": round(parts_done - started, 3),
    "complete_s": round(done - parts_done, 3),
    "total_s": round(done - started, 3),
    "mb_per_s": round(size / 1e6 / (done - started), 1),
}))
