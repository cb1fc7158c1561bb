"""Connections to the warehouse: PostgreSQL here, Redshift in the aws profile.

Redshift speaks the PostgreSQL wire protocol, so psycopg2 serves both.
"""

from __future__ import annotations

import psycopg2
from psycopg2.extensions import connection

from lambda_demo.settings import Settings, get_settings


def connect(settings: Settings | None = None, *, autocommit: bool = False) -> connection:
    settings = settings or get_settings()
    ends = settings.endpoints()
    conn = psycopg2.connect(
        host=ends.warehouse_host,
        port=ends.warehouse_port,
        user=settings.warehouse_user,
        password=ends.warehouse_password,
        dbname=settings.warehouse_db,
        connect_timeout=10,
        application_name="lambda-demo",
    )
    conn.autocommit = autocommit
    return conn
