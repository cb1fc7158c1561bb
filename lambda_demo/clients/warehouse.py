"""The warehouse: connections and every table's definition, in one place.

PostgreSQL stands in for Redshift; both speak the same wire protocol, so psycopg2 serves
both. All tables live in ``settings.warehouse_schema`` (``search_path`` is set on connect).

Tables:

* ``raw_tweets``      - the batch layer's copy of the master dataset, one row per delivery
* ``loaded_objects``  - which S3 objects are in ``raw_tweets`` (written with their rows)
* ``quarantine``      - records that broke the contract, with the reason and the raw bytes
* ``batch_view``      - the batch view of every run; ``batch_meta`` points at the current one
* ``batch_meta``      - the current batch run: its id and its cutoff day D
* ``speed_view``      - per (speed deployment, ingest day, location), absolute totals; only
  days >= D: the batch run that publishes D deletes the older days in the same transaction
* ``speed_deployments`` - one row per speed query (checkpoint): its last micro-batch, its
  progress, and which one serving reads (see ``lambda_demo.speed``)
* ``batch_serving``   - a SQL view: the batch rows serving reads (the current run's; a run
  holds only days < D)
* ``speed_serving``   - a SQL view: the speed rows serving reads (the serving deployment's,
  days >= D)
* ``serving_view``    - a SQL view: ``batch_serving`` + ``speed_serving``, in one snapshot

The split at the cutoff D is ``contract.served_by_batch``, rendered into SQL here and by the
batch recompute; every reader of "the batch part" or "the speed part" reads
``batch_serving`` or ``speed_serving`` rather than restating it.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import threading
from typing import TYPE_CHECKING

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection, cursor

if TYPE_CHECKING:
    import pandas as pd

from lambda_demo import view
from lambda_demo.contract import sql_speed_days
from lambda_demo.settings import Settings, get_settings

logger = logging.getLogger(__name__)


def raw_tweets_columns() -> dict[str, str]:
    """``raw_tweets``' columns and their SQL types, in the order the loader copies them.

    A delivery's coordinates and the contract fields kept for exploration, plus one
    ``BIGINT`` per field a measure of the view reads: a new measure's field gets its column
    (and `ensure_schema` adds it to an existing table).
    """
    return {
        "tweet_id": "TEXT NOT NULL",  # identity is the digit string: "07" and "7" are two tweets
        "ingest_ts": "TIMESTAMPTZ NOT NULL",
        "ingest_day": "DATE NOT NULL",
        "kafka_partition": "INT NOT NULL",
        "kafka_offset": "BIGINT NOT NULL",
        "created_at": "TEXT NOT NULL",
        "author_id": "TEXT",
        view.KEY: "TEXT NOT NULL",
        **{field: "BIGINT NOT NULL" for field in view.FIELDS_READ},
        "lang": "TEXT",
        "object_key": "TEXT NOT NULL",
    }


def _column_list(columns: dict[str, str]) -> str:
    return ",\n    ".join(f"{name} {sql_type}" for name, sql_type in columns.items())


def tables_ddl() -> str:
    """Every table, created if missing; the columns that depend on the view come from it."""
    measures = _column_list({name: "BIGINT NOT NULL" for name in view.MEASURE_NAMES})
    return f"""
CREATE TABLE IF NOT EXISTS raw_tweets (
    {_column_list(raw_tweets_columns())}
);
CREATE TABLE IF NOT EXISTS loaded_objects (
    object_key TEXT PRIMARY KEY,
    row_count INT NOT NULL,
    quarantined INT NOT NULL,
    loaded_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS quarantine (
    layer TEXT NOT NULL,
    kafka_partition INT NOT NULL,
    kafka_offset BIGINT NOT NULL,
    ingest_ts TIMESTAMPTZ,
    reason TEXT NOT NULL,
    raw_value BYTEA,
    noted_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (layer, kafka_partition, kafka_offset)
);
CREATE TABLE IF NOT EXISTS batch_view (
    run_id TEXT NOT NULL,
    location TEXT NOT NULL,
    {measures},
    PRIMARY KEY (run_id, location)
);
CREATE TABLE IF NOT EXISTS schema_version (
    fingerprint TEXT NOT NULL  -- of the DDL that made this schema: ensure_schema's fast path
);
CREATE TABLE IF NOT EXISTS batch_meta (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (singleton),
    run_id TEXT NOT NULL,
    cutoff_day DATE NOT NULL,
    computed_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS speed_view (
    deployment TEXT NOT NULL,
    ingest_day DATE NOT NULL,
    location TEXT NOT NULL,
    {measures},
    updated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (deployment, ingest_day, location)
);
CREATE TABLE IF NOT EXISTS speed_deployments (
    deployment TEXT PRIMARY KEY,  -- the streaming query's id, kept in its checkpoint
    checkpoint TEXT NOT NULL,
    batch_id BIGINT NOT NULL DEFAULT -1,  -- the last micro-batch written to speed_view
    serving BOOLEAN NOT NULL DEFAULT FALSE,  -- at most one row: the rows serving reads
    retired_at TIMESTAMPTZ,  -- replaced by a newer deployment: its sink refuses to write
    progress_batch_id BIGINT NOT NULL DEFAULT -1,  -- the last progress report recorded
    end_offsets TEXT,  -- JSON {{partition: next offset}} processed so far
    state_rows BIGINT,  -- Spark state rows after the last micro-batch
    late_rows BIGINT NOT NULL DEFAULT 0,  -- rows Spark dropped as later than the watermark
    watermark TIMESTAMPTZ,
    started_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    committed_at TIMESTAMPTZ
);
CREATE UNIQUE INDEX IF NOT EXISTS speed_deployments_one_serving
    ON speed_deployments (serving) WHERE serving;
"""


def views_ddl() -> str:
    """The SQL views serving reads, created or replaced with the view's current measures.

    ``CREATE OR REPLACE VIEW`` keeps the existing columns and appends new ones, so a measure
    added at the end of ``view.MEASURES`` (where it belongs) replaces the views in place.
    """
    measures = ", ".join(view.MEASURE_NAMES)
    return f"""
CREATE OR REPLACE VIEW batch_serving AS
SELECT b.*
FROM batch_view b JOIN batch_meta m ON m.run_id = b.run_id;
CREATE OR REPLACE VIEW speed_serving AS
SELECT v.*
FROM speed_view v JOIN speed_deployments d ON d.deployment = v.deployment AND d.serving
WHERE {sql_speed_days("v.ingest_day", "(SELECT cutoff_day FROM batch_meta)")};
CREATE OR REPLACE VIEW serving_view AS
WITH merged AS (
    SELECT location, {measures} FROM batch_serving
    UNION ALL
    SELECT location, {measures} FROM speed_serving
)
SELECT location, {view.sql_sum_of_measures()}
FROM merged
GROUP BY location;
"""


def _connect_args(settings: Settings) -> dict[str, object]:
    ends = settings.endpoints()
    return {
        "host": ends.warehouse_host,
        "port": ends.warehouse_port,
        "user": settings.warehouse_user,
        "password": ends.warehouse_password,
        "dbname": settings.warehouse_db,
        "connect_timeout": 10,
        "application_name": "lambda-demo",
        "options": f"-c search_path={settings.warehouse_schema}",
    }


def connect(settings: Settings | None = None, *, autocommit: bool = False) -> connection:
    """A connection whose ``search_path`` is the tutorial's schema."""
    conn = psycopg2.connect(**_connect_args(settings or get_settings()))
    conn.autocommit = autocommit
    return conn


# One autocommit connection per target, reused by every read (``fetch_frame``). Opening a
# connection costs a TCP handshake, SCRAM authentication and a backend fork - far more than
# a serving query over a few thousand rows. Autocommit: each SELECT is its own transaction,
# so an idle reader holds no snapshot and no lock between queries. Only the few most recent
# targets keep theirs (tests and notebooks switch schemas often; each schema is a target).
_MAX_READERS = 4
_readers: dict[tuple, connection] = {}
_readers_lock = threading.Lock()


def _reader(args: dict[str, object]) -> connection:
    key = tuple(sorted(args.items()))
    conn = _readers.pop(key, None)
    if conn is None or conn.closed:
        conn = psycopg2.connect(**args)
        conn.autocommit = True
    _readers[key] = conn  # most recently used last
    while len(_readers) > _MAX_READERS:
        _readers.pop(next(iter(_readers))).close()
    return conn


def close_readers() -> None:
    """Close every pooled reader connection (at exit, and before ``stack down``)."""
    with _readers_lock:
        while _readers:
            _readers.popitem()[1].close()


atexit.register(close_readers)


def _read(args: dict[str, object], query: sql.Composable | str, params: object) -> tuple:
    # A psycopg2 connection runs one statement at a time: readers in threads take turns.
    with _readers_lock:
        conn = _reader(args)
        try:
            with conn.cursor() as cur:
                cur.execute(query, params)
                return cur.fetchall(), [d.name for d in cur.description]
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            conn.close()  # closed connections are replaced by the next ``_reader`` call
            raise


def fetch_frame(
    query: sql.Composable | str,
    params: tuple | dict | None = None,
    *,
    settings: Settings | None = None,
) -> pd.DataFrame:
    """Run one read-only query on a reused connection; return its rows as a DataFrame.

    A reused connection may have died since its last query (the server restarted, the stack
    was reset): then it is replaced once and the query runs again - a read is safe to repeat.
    """
    import pandas as pd

    args = _connect_args(settings or get_settings())
    try:
        rows, columns = _read(args, query, params)
    except (psycopg2.OperationalError, psycopg2.InterfaceError):
        rows, columns = _read(args, query, params)
    return pd.DataFrame(rows, columns=columns)


# A speed view from before speed deployments existed. The speed layer is disposable by
# design, so an old one is dropped and rebuilt from Kafka rather than migrated.
_OLD_SPEED_VIEW = """
SELECT 1 FROM information_schema.tables t
WHERE t.table_schema = current_schema() AND t.table_name = 'speed_view'
  AND NOT EXISTS (SELECT 1 FROM information_schema.columns c
                  WHERE c.table_schema = t.table_schema AND c.table_name = 'speed_view'
                    AND c.column_name = 'deployment')
"""


def ensure_schema(settings: Settings | None = None) -> None:
    """Create the schema, tables and views if missing, and add the columns a new measure
    needs (see `_add_missing_columns`); safe to call often.

    Often is the point: every batch run and speed start calls it. Replacing a view takes an
    exclusive lock on it, which blocks every serving read for the moment and, taken in another
    order than a reader takes them, can deadlock with one. So the DDL runs only when it changed
    (a new measure, a new version of this module): the schema records the fingerprint of the
    DDL that made it, and a schema that already has it is left alone.
    """
    settings = settings or get_settings()
    fingerprint = hashlib.sha256((tables_ddl() + views_ddl()).encode()).hexdigest()
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            if _schema_fingerprint(cur) == fingerprint:
                return
            cur.execute("SELECT pg_advisory_xact_lock(hashtext('lambda_demo.ddl'))")
            if _schema_fingerprint(cur) == fingerprint:  # done meanwhile by another process
                return
            cur.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                    sql.Identifier(settings.warehouse_schema)
                )
            )
            cur.execute(_OLD_SPEED_VIEW)
            if cur.fetchone():
                cur.execute("DROP TABLE IF EXISTS speed_view, speed_commits CASCADE")
            cur.execute(tables_ddl())
            _add_missing_columns(cur)
            cur.execute(views_ddl())
            cur.execute("DELETE FROM schema_version")
            cur.execute("INSERT INTO schema_version (fingerprint) VALUES (%s)", (fingerprint,))
    finally:
        conn.close()


def _schema_fingerprint(cur: cursor) -> str | None:
    """The fingerprint recorded in the connection's schema, or None (no schema, or older)."""
    cur.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    if not cur.fetchone()[0]:
        return None
    cur.execute("SELECT fingerprint FROM schema_version")
    row = cur.fetchone()
    return row[0] if row else None


def _add_missing_columns(cur: cursor) -> None:
    """Give tables created before a measure was added the columns that measure needs.

    ``CREATE TABLE IF NOT EXISTS`` leaves an existing table as it is, so the columns the view
    now defines and a table lacks are added here, each with ``ADD COLUMN IF NOT EXISTS``:

    * ``raw_tweets``, a new field: rows loaded before have no value for it, and summing
      them as NULL would under-count for good, since the loader never reads an object twice.
      So the loaded copy is discarded (``raw_tweets`` and ``loaded_objects`` together) and
      the next batch run reloads the master dataset from S3, the field included. That leaves
      the table empty, so the column is ``NOT NULL`` as in a new warehouse. Serving does not
      notice: the batch view stays until that run replaces it.
    * ``batch_view`` and ``speed_view``, a new measure: rows computed before it hold NULL,
      "not computed" (a default of 0 would pass for a count). The next batch run replaces
      the batch rows, and the speed layer's new deployment (the changed query needs a new
      checkpoint) replaces the speed rows. Until both did, serving sums the new measure over
      the rows that have it, ``check`` reports the difference, and where no row has it
      `lambda_demo.serving.reads` refuses to return a number.
    """
    wanted = {
        "raw_tweets": raw_tweets_columns(),
        "batch_view": {name: "BIGINT" for name in view.MEASURE_NAMES},
        "speed_view": {name: "BIGINT" for name in view.MEASURE_NAMES},
    }
    cur.execute(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ANY(%s)",
        (list(wanted),),
    )
    present = set(cur.fetchall())
    missing = {
        table: {
            name: sql_type for name, sql_type in columns.items() if (table, name) not in present
        }
        for table, columns in wanted.items()
    }
    if missing["raw_tweets"]:
        cur.execute("SELECT EXISTS (SELECT 1 FROM raw_tweets)")
        if cur.fetchone()[0]:
            logger.warning(
                "raw_tweets lacks %s: emptied, the next batch run reloads it from S3",
                ", ".join(missing["raw_tweets"]),
            )
            cur.execute("TRUNCATE raw_tweets, loaded_objects")
    for table, columns in missing.items():
        for name, sql_type in columns.items():
            cur.execute(
                sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}").format(
                    sql.Identifier(table), sql.Identifier(name), sql.SQL(sql_type)
                )
            )


def lock_speed_view(cur: cursor) -> None:
    """Serialise the writers of ``speed_view`` until the transaction ends; readers never wait.

    Three kinds of transaction change which speed rows serving reads: a speed micro-batch,
    a batch run publishing its cutoff, and a new deployment taking over. Each takes this
    lock first, so each sees the others' results committed: a micro-batch cannot write a day
    that a batch run just absorbed, nor a retired deployment write at all.
    """
    cur.execute("LOCK TABLE speed_view IN EXCLUSIVE MODE")
