"""The object store holding the master dataset: a boto3 S3 client from settings."""

from __future__ import annotations

from botocore.client import BaseClient
from botocore.config import Config
from botocore.exceptions import ClientError

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
