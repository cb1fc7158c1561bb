"""The embedded stack: real Kafka, an S3 server and PostgreSQL as local processes."""

from lambda_demo.stack.manager import down, reset, status, status_json, up

__all__ = ["down", "reset", "status", "status_json", "up"]
