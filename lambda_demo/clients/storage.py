"""The object store holding the master dataset (and, on a cluster, the speed checkpoints)."""

from __future__ import annotations

import shutil
from urllib.parse import urlsplit

from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

from lambda_demo.errors import SettingsError
from lambda_demo.settings import Settings, get_settings


def s3_client(settings: Settings | None = None) -> BaseClient:
    """boto3 reaches S3Proxy, MinIO or AWS S3 alike; only ``endpoint_url`` differs."""
    import boto3

    settings = settings or get_settings()
    ends = settings.endpoints()
    return boto3.client(
        "s3",
        endpoint_url=ends.s3_endpoint,
        aws_access_key_id=ends.s3_access_key,
        aws_secret_access_key=ends.s3_secret_key,
        region_name=settings.s3_region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5},
            # boto3 >= 1.36 adds CRC checksum headers to every upload by default; S3Proxy and
            # older S3-compatible servers reject them, AWS S3 does not need them.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        ),
    )


def ensure_bucket(settings: Settings | None = None) -> None:
    settings = settings or get_settings()
    client = s3_client(settings)
    try:
        client.head_bucket(Bucket=settings.s3_bucket)
    except ClientError:
        client.create_bucket(Bucket=settings.s3_bucket)


def delete_checkpoints(location: str, settings: Settings | None = None) -> None:
    """Delete a checkpoint location and everything under it: a local path or an S3 URI.

    A checkpoint is a folder on a laptop and a key prefix in S3 (``s3a://bucket/prefix``,
    the cluster profile's): there, the objects under the prefix go, through the same S3
    endpoint Spark's S3A writes them to. A location that does not exist is not an error.
    """
    parsed = urlsplit(location)
    if parsed.scheme in ("", "file"):
        shutil.rmtree(parsed.path if parsed.scheme else location, ignore_errors=True)
        return
    if parsed.scheme not in ("s3a", "s3"):
        raise SettingsError(
            f"Cannot delete the checkpoints at {location}: use a local path or an s3a:// URI."
        )
    client = s3_client(settings)
    prefix = parsed.path.strip("/") + "/"
    try:
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=parsed.netloc, Prefix=prefix
        )
        keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
    except client.exceptions.NoSuchBucket:
        return
    # One DELETE per object: S3Proxy refuses the checksum header that boto3 puts on a batch
    # delete (DeleteObjects), and a checkpoint holds tens to hundreds of objects. Deepest
    # first: S3Proxy keeps "directory" objects (``state/0/``) as folders and does not answer
    # a DELETE of one that still holds files. The prefix's own goes last: S3Proxy does not
    # list it, and S3 ignores the DELETE of an absent key.
    for key in [*sorted(keys, reverse=True), prefix]:
        client.delete_object(Bucket=parsed.netloc, Key=key)
