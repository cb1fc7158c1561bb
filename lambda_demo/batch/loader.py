"""S3 -> warehouse: load each new master-dataset object into ``raw_tweets``, exactly once.

Each object is loaded in **one transaction** together with its row in ``loaded_objects``:
either the rows and the mark are both there, or neither is. So a crash mid-load is repaired
by simply running the loader again, and a second run skips what is already in.

The contract is enforced for the batch layer with `lambda_demo.contract.parse_record`, the
same function the speed layer uses. Valid records become ``raw_tweets`` rows; the rest go to
``quarantine`` with the machine-readable reason and the raw bytes, so nothing is silently
dropped and nothing crashes the load. The judging happens once per record, when the archiver
writes the object's **staged copy** (`lambda_demo.batch.staging`): the rows already in the
warehouse's ``COPY`` format and the quarantined records. The loader checks that the staged
copy was built from the very bytes of the raw object in S3 (which proves the raw object
intact too), then streams its bytes into ``COPY``; a missing, damaged or stale staged copy is
rebuilt from the raw object (`read_object`), and a damaged raw object from Kafka first.

Rows go in with ``COPY``, the bulk path of both PostgreSQL and Redshift, rather than
``INSERT``: one round trip per object instead of one per row. PostgreSQL reads CSV from the
client (``FROM STDIN``); Redshift cannot, it reads files from S3, so in the ``redshift``
dialect the staged rows are a gzipped JSON-lines object under ``staging/raw_tweets/`` (one key
per column, named like the column) and ``COPY ... FROM 's3://...' FORMAT AS JSON 'auto'``
loads that. Validation stays in one place, Python, whichever warehouse is behind it.

Objects are independent, so `LOADERS` threads load them side by side, each with its own
connection (the ``COPY`` work is PostgreSQL's, one backend per connection).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from botocore.client import BaseClient
from psycopg2 import sql
from psycopg2.extensions import cursor
from tqdm import tqdm

from lambda_demo.batch import archiver, staging
from lambda_demo.batch.archiver import ArchivedObject, decode_bytes, list_archived
from lambda_demo.batch.staging import (
    OutdatedStaging,
    Quarantined,
    Row,
    Staged,
    StaleStaging,
    csv_rows,
    raw_columns,
    redshift_staging_lines,
)
from lambda_demo.clients import storage, warehouse
from lambda_demo.errors import SettingsError
from lambda_demo.settings import Settings, get_settings

__all__ = [
    "LoadResult",
    "Quarantined",
    "Row",
    "csv_rows",
    "load",
    "raw_columns",
    "read_object",
    "redshift_copy_sql",
    "redshift_staging_lines",
    "staged_copy",
]

logger = logging.getLogger(__name__)

STAGING_PREFIX = staging.ROWS_PREFIX
LOADERS = 2
"""Objects loaded side by side (one connection each): this machine's two cores."""
_COPY_CHUNK = 1 << 20  # bytes psycopg2 hands PostgreSQL per call (its default is 8 KiB)

_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]*")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IAM_ROLE = re.compile(r"arn:aws[a-z-]*:iam::[0-9]{12}:role/[A-Za-z0-9+=,.@_/-]{1,512}")
_OBJECT_KEY = re.compile(r"[A-Za-z0-9!_.*()/=-]{1,1024}")  # S3's "safe characters"


@dataclass(frozen=True)
class LoadResult:
    objects_loaded: int
    rows_loaded: int
    quarantined: int


def load(settings: Settings | None = None, *, progress: bool = True) -> LoadResult:
    """Load every archive object not yet in ``loaded_objects``, `LOADERS` at a time."""
    settings = settings or get_settings()
    conn = warehouse.connect(settings)
    try:
        with conn, conn.cursor() as cur:
            cur.execute("SELECT object_key FROM loaded_objects")
            done = {key for (key,) in cur.fetchall()}
    finally:
        conn.close()
    s3 = storage.s3_client(settings)
    todo = [obj for obj in list_archived(settings, client=s3) if obj.key not in done]
    shares = max(1, min(LOADERS, len(todo)))
    with (
        tqdm(total=len(todo), desc="load", unit="obj", disable=not progress) as bar,
        ThreadPoolExecutor(shares, thread_name_prefix="loader") as pool,
    ):
        counts = list(
            pool.map(lambda share: _load_share(settings, todo[share::shares], bar), range(shares))
        )
    objects, rows_total, rejected_total = (sum(c[i] for c in counts) for i in range(3))
    logger.info("loaded %d objects: %d rows, %d quarantined", objects, rows_total, rejected_total)
    return LoadResult(objects_loaded=objects, rows_loaded=rows_total, quarantined=rejected_total)


def _load_share(
    settings: Settings, objects: list[ArchivedObject], bar: tqdm
) -> tuple[int, int, int]:
    """Load ``objects`` one transaction each, on a connection and S3 client of their own."""
    s3 = storage.s3_client(settings)
    conn = warehouse.connect(settings)
    loaded = rows = rejected = 0
    try:
        for obj in objects:
            staged = staged_copy(settings, s3, obj)
            quarantined = staged.quarantined()
            with conn, conn.cursor() as cur:  # commits rows, quarantine and mark together
                _copy_rows(cur, staged, settings=settings)
                _quarantine(cur, quarantined)
                cur.execute(
                    "INSERT INTO loaded_objects (object_key, row_count, quarantined) "
                    "VALUES (%s, %s, %s)",
                    (obj.key, staged.row_count, len(quarantined)),
                )
            loaded += 1
            rows += staged.row_count
            rejected += len(quarantined)
            bar.update(1)
    finally:
        conn.close()
    return loaded, rows, rejected


def staged_copy(settings: Settings, s3: BaseClient, obj: ArchivedObject) -> Staged:
    """The staged copy of ``obj``, checked against the raw object now in S3.

    A missing raw object, or a damaged one, is rebuilt from Kafka first (`archiver.heal`,
    which writes its staged copy too); a staged copy that is missing, damaged or stale is
    rebuilt from the verified raw object and written back.
    """
    bucket = settings.s3_bucket
    try:
        response = s3.get_object(Bucket=bucket, Key=obj.key)
    except s3.exceptions.NoSuchKey:
        archiver.heal(settings, s3, obj, f"{obj.key} is missing")
        response = s3.get_object(Bucket=bucket, Key=obj.key)
    body = response["Body"].read()
    raw_sha256 = hashlib.sha256(body).hexdigest()
    try:
        return _read_staged(s3, bucket, obj.key, raw_sha256, settings.warehouse_dialect)
    except StaleStaging as stale:
        problem = str(stale)
        expected = isinstance(stale, OutdatedStaging)
    try:
        lines = archiver.verified_lines(obj, body, response.get("Metadata", {}))
    except archiver.DamagedObject as damaged:
        # Rebuilt from Kafka with its staged copy (the same bytes as a first archive).
        archiver.heal(settings, s3, obj, str(damaged))
        response = s3.get_object(Bucket=bucket, Key=obj.key)
        body = response["Body"].read()
        lines = archiver.verified_lines(obj, body, response.get("Metadata", {}))
        raw_sha256 = hashlib.sha256(body).hexdigest()
    log = logger.info if expected else logger.warning
    log("%s: staging it again from the master dataset", problem)
    staged = staging.build(
        _deliveries(lines),
        raw_key=obj.key,
        raw_sha256=raw_sha256,
        dialect=settings.warehouse_dialect,
    )
    archiver.put_staged(s3, bucket, staged)
    return staged


def _read_staged(
    s3: BaseClient, bucket: str, raw_key: str, raw_sha256: str, dialect: str
) -> Staged:
    """The staged copy as S3 holds it, or `StaleStaging` saying why it cannot be used."""
    try:
        manifest_body = s3.get_object(Bucket=bucket, Key=staging.manifest_key(raw_key))
        manifest = staging.read_manifest(
            raw_key, manifest_body["Body"].read(), raw_sha256=raw_sha256, dialect=dialect
        )
        rows = s3.get_object(Bucket=bucket, Key=str(manifest["rows_key"]))["Body"].read()
    except s3.exceptions.NoSuchKey as exc:
        raise StaleStaging(f"the staged copy of {raw_key} is missing") from exc
    return staging.check_rows(manifest, rows)


def _deliveries(data: bytes) -> list[staging.Delivery]:
    """The records of a decompressed archive object, as `staging.judge` reads them.

    Lines are split on ``\n`` bytes only: ``str.splitlines`` would also split on U+2028 or
    U+0085, which JSON leaves unescaped inside a location.
    """
    found: list[staging.Delivery] = []
    for raw_line in data.split(b"\n"):
        if not raw_line:
            continue
        line = json.loads(raw_line)
        value = decode_bytes(line, "value")
        found.append((line["partition"], line["offset"], line["timestamp_ms"], value))
    return found


def read_object(data: bytes, *, object_key: str) -> tuple[list[Row], list[Quarantined]]:
    """Split one decompressed archive object into valid rows and quarantined records."""
    return staging.judge(_deliveries(data), object_key=object_key)


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


def _copy_rows(cur: cursor, staged: Staged, *, settings: Settings) -> None:
    if not staged.row_count:
        return
    if settings.warehouse_dialect == "redshift":
        cur.execute(
            redshift_copy_sql(
                table="raw_tweets",
                columns=raw_columns(),
                bucket=settings.s3_bucket,
                key=staged.rows_key,
                iam_role=settings.redshift_iam_role,
            )
        )
        return
    copy = sql.SQL("COPY raw_tweets ({}) FROM STDIN WITH (FORMAT csv)").format(
        sql.SQL(", ").join(sql.Identifier(name) for name in raw_columns())
    )
    cur.copy_expert(copy, io.BytesIO(gzip.decompress(staged.rows_body)), size=_COPY_CHUNK)


def _quarantine(cur: cursor, rejected: list[Quarantined]) -> None:
    if not rejected:
        return
    rows = [(q.partition, q.offset, q.ingest_ts, q.reason, q.raw_value) for q in rejected]
    warehouse.insert_quarantine(cur, "batch", rows)
