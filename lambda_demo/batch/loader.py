"""S3 -> warehouse: load each new master-dataset object into ``raw_tweets``, exactly once.

Each object is loaded in **one transaction** together with its row in ``loaded_objects``:
either the rows and the mark are both there, or neither is. So a crash mid-load is repaired
by simply running the loader again, and a second run skips what is already in.

The loader is where the contract is enforced for the batch layer: each archived record goes
through `lambda_demo.contract.parse_record`, the same function the speed layer uses. Valid
records become ``raw_tweets`` rows; the rest go to ``quarantine`` with the machine-readable
reason and the raw bytes, so nothing is silently dropped and nothing crashes the load.

Rows go in with ``COPY``, the bulk path of both PostgreSQL and Redshift, rather than
``INSERT``: one round trip per object instead of one per row. PostgreSQL reads CSV from the
client (``FROM STDIN``); Redshift cannot, it reads files from S3, so in the ``redshift``
dialect the validated rows are first staged as a gzipped JSON-lines object under
``staging/raw_tweets/`` (one key per column, named like the column) and ``COPY ... FROM
's3://...' FORMAT AS JSON 'auto'`` loads that. Validation stays in one place, Python,
whichever warehouse is behind it.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import re
from dataclasses import dataclass
from datetime import date, datetime

from botocore.client import BaseClient
from psycopg2 import sql
from psycopg2.extensions import cursor
from tqdm import tqdm

from lambda_demo.batch import archiver
from lambda_demo.batch.archiver import ArchivedObject, decode_bytes, list_archived
from lambda_demo.clients import storage, warehouse
from lambda_demo.contract import Rejected, ingest_day_of, ingest_time, parse_record
from lambda_demo.errors import SettingsError
from lambda_demo.ingestion.clock import from_millis, to_millis
from lambda_demo.settings import Settings, get_settings

logger = logging.getLogger(__name__)

STAGING_PREFIX = "staging/raw_tweets/"

Row = tuple[object, ...]
"""One ``raw_tweets`` row, values in `raw_columns` order."""

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IAM_ROLE = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}")
_OBJECT_KEY = re.compile(r"[A-Za-z0-9!_.*()/=-]{1,1024}")  # S3's "safe characters"


def raw_columns() -> tuple[str, ...]:
    """The columns of ``raw_tweets`` the loader fills: all of them, as the warehouse defines
    them, so a field a new measure reads is loaded without a change here."""
    return tuple(warehouse.raw_tweets_columns())


@dataclass(frozen=True)
class LoadResult:
    objects_loaded: int
    rows_loaded: int
    quarantined: int


@dataclass(frozen=True)
class Quarantined:
    """A record that broke the contract: where it was, why, and its bytes."""

    partition: int
    offset: int
    ingest_ts: datetime | None  # None: a timestamp no tweet can have
    reason: str
    raw_value: bytes | None


def load(settings: Settings | None = None, *, progress: bool = True) -> LoadResult:
    """Load every archive object not yet in ``loaded_objects``, in key order."""
    settings = settings or get_settings()
    s3 = storage.s3_client(settings)
    conn = warehouse.connect(settings)
    objects = rows_total = rejected_total = 0
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT object_key FROM loaded_objects")
            done = {key for (key,) in cur.fetchall()}
        todo = [obj for obj in list_archived(settings, client=s3) if obj.key not in done]
        for obj in tqdm(todo, desc="load", unit="obj", disable=not progress):
            rows, rejected = read_object(_lines(settings, s3, obj), object_key=obj.key)
            with conn, conn.cursor() as cur:  # commits rows, quarantine and mark together
                _copy_rows(cur, rows, settings=settings, s3=s3, object_key=obj.key)
                _quarantine(cur, rejected)
                cur.execute(
                    "INSERT INTO loaded_objects (object_key, row_count, quarantined) "
                    "VALUES (%s, %s, %s)",
                    (obj.key, len(rows), len(rejected)),
                )
            objects += 1
            rows_total += len(rows)
            rejected_total += len(rejected)
    finally:
        conn.close()
    logger.info("loaded %d objects: %d rows, %d quarantined", objects, rows_total, rejected_total)
    return LoadResult(objects_loaded=objects, rows_loaded=rows_total, quarantined=rejected_total)


def _lines(settings: Settings, s3: BaseClient, obj: ArchivedObject) -> bytes:
    """The object's verified lines; a damaged or missing one is rebuilt from Kafka first."""
    try:
        response = s3.get_object(Bucket=settings.s3_bucket, Key=obj.key)
        return archiver.verified_lines(obj, response["Body"].read(), response.get("Metadata", {}))
    except s3.exceptions.NoSuchKey:
        return archiver.heal(settings, s3, obj, f"{obj.key} is missing")
    except archiver.DamagedObject as damaged:
        return archiver.heal(settings, s3, obj, str(damaged))


def read_object(data: bytes, *, object_key: str) -> tuple[list[Row], list[Quarantined]]:
    """Split one decompressed archive object into valid rows and quarantined records.

    Lines are split on ``\\n`` bytes only: ``str.splitlines`` would also split on U+2028 or
    U+0085, which JSON leaves unescaped inside a location.
    """
    columns = raw_columns()
    rows: list[Row] = []
    rejected: list[Quarantined] = []
    for raw_line in data.split(b"\n"):
        if not raw_line:
            continue
        line = json.loads(raw_line)
        ms = line["timestamp_ms"]
        value = decode_bytes(line, "value")
        flat = parse_record(value, ms)
        if isinstance(flat, Rejected):
            rejected.append(
                Quarantined(line["partition"], line["offset"], ingest_time(ms), flat.reason, value)
            )
            continue
        ingest_ts = from_millis(ms)
        coordinates = {
            "ingest_ts": ingest_ts,
            "ingest_day": ingest_day_of(ingest_ts),
            "kafka_partition": line["partition"],
            "kafka_offset": line["offset"],
            "object_key": object_key,
        }
        # Every other column is the contract field of the same name.
        rows.append(
            tuple(coordinates[c] if c in coordinates else getattr(flat, c) for c in columns)
        )
    return rows, rejected


def csv_rows(rows: list[Row]) -> str:
    """Rows as PostgreSQL CSV: every string quoted, so ``""`` is an empty string, not NULL.

    Python's ``csv`` module cannot tell None from "" (both come out the same), so the few
    rules are written out here: NULL is an unquoted empty field; a quoted field may hold
    commas, quotes (doubled), newlines, ``\\.`` and emoji, all taken literally.
    """
    out = io.StringIO()
    for row in rows:
        out.write(",".join(_csv_field(value) for value in row))
        out.write("\n")
    return out.getvalue()


def _csv_field(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, int):
        return str(value)
    if isinstance(value, date):  # datetime is a date too
        return value.isoformat()
    return '"' + str(value).replace('"', '""') + '"'


def redshift_staging_lines(rows: list[Row]) -> bytes:
    """Rows as JSON lines keyed by column name, the layout Redshift's ``JSON 'auto'`` reads."""
    columns = raw_columns()
    out = io.BytesIO()
    for row in rows:
        record = {
            name: _redshift_json_value(value) for name, value in zip(columns, row, strict=True)
        }
        out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
        out.write(b"\n")
    return out.getvalue()


def _redshift_json_value(value: object) -> object:
    if isinstance(value, datetime):
        return to_millis(value)  # read back with TIMEFORMAT 'epochmillisecs'
    if isinstance(value, date):
        return value.isoformat()
    return value


def redshift_copy_sql(
    *, table: str, columns: tuple[str, ...], bucket: str, key: str, iam_role: str | None
) -> str:
    """The ``COPY`` that loads one staged JSON-lines object into a Redshift table.

    Redshift's COPY takes no bind parameters, so every name and literal is checked against a
    strict pattern and then quoted; anything else is refused rather than escaped.
    """
    if not iam_role:
        raise SettingsError(
            "The redshift dialect loads with COPY FROM S3, which needs an IAM role: set "
            "LAMBDA_DEMO_REDSHIFT_IAM_ROLE to the role's ARN."
        )
    column_list = ", ".join(_identifier(name) for name in columns)
    source = _literal(
        f"s3://{_checked(bucket, _BUCKET, 'S3 bucket')}/{_checked(key, _OBJECT_KEY, 'S3 key')}"
    )
    role = _literal(_checked(iam_role, _IAM_ROLE, "LAMBDA_DEMO_REDSHIFT_IAM_ROLE"))
    return (
        f"COPY {_identifier(table)} ({column_list}) FROM {source} IAM_ROLE {role} "
        "FORMAT AS JSON 'auto' GZIP TIMEFORMAT 'epochmillisecs' DATEFORMAT 'YYYY-MM-DD'"
    )


def _checked(value: str, pattern: re.Pattern[str], what: str) -> str:
    if pattern.fullmatch(value) is None:
        raise SettingsError(f"{what} {value!r} is not valid here (expected {pattern.pattern}).")
    return value


def _identifier(name: str) -> str:
    return '"' + _checked(name, _IDENTIFIER, "SQL identifier") + '"'


def _literal(value: str) -> str:
    return "'" + value + "'"  # the patterns above admit no quote, backslash or control char


def _copy_rows(
    cur: cursor, rows: list[Row], *, settings: Settings, s3: BaseClient, object_key: str
) -> None:
    if not rows:
        return
    if settings.warehouse_dialect == "redshift":
        staged = STAGING_PREFIX + object_key
        body = gzip.compress(redshift_staging_lines(rows), mtime=0)
        s3.put_object(Bucket=settings.s3_bucket, Key=staged, Body=body)
        cur.execute(
            redshift_copy_sql(
                table="raw_tweets",
                columns=raw_columns(),
                bucket=settings.s3_bucket,
                key=staged,
                iam_role=settings.redshift_iam_role,
            )
        )
        return
    copy = sql.SQL("COPY raw_tweets ({}) FROM STDIN WITH (FORMAT csv)").format(
        sql.SQL(", ").join(sql.Identifier(name) for name in raw_columns())
    )
    cur.copy_expert(copy, io.StringIO(csv_rows(rows)))


def _quarantine(cur: cursor, rejected: list[Quarantined]) -> None:
    if not rejected:
        return
    rows = [(q.partition, q.offset, q.ingest_ts, q.reason, q.raw_value) for q in rejected]
    warehouse.insert_quarantine(cur, "batch", rows)
