"""Clients of the four services, each configured from `lambda_demo.settings` alone.

`kafka_io` (kafka-python), `storage` (S3 through boto3), `warehouse` (PostgreSQL or Redshift
through psycopg2, with the schema) and `spark` (a local or remote Spark session). Pointing
the settings at a cluster, AWS S3 or Redshift changes where they connect, not the code.
"""
