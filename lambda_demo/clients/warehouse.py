"""The warehouse: connections and every table's definition, in one place.

PostgreSQL stands in for Redshift; both speak the same wire protocol, so psycopg2 serves
both. All tables live in ``settings.warehouse_schema`` (``search_path`` is set on connect).

Tables:

* ``raw_tweets``      - the batch layer's copy of the master dataset, one row per delivery
* ``loaded_objects``  - which S3 objects are in ``raw_tweets`` (written with their rows)
* ``quarantine``      - records that broke the contract, with the reason and the raw bytes
* ``batch_view``      - the batch view of every run; ``batch_meta`` points at the current one
* ``batch_meta``      - the current batch run: its id and its cutoff day D
* ``speed_view``      - per (speed deployment, ingest day, location), the sums so far; only
  days >= D: the batch run that publishes D deletes the older days in the same transaction
* ``speed_deployments`` - one row per speed query (checkpoint): its last micro-batch, its
  progress, and which one serving reads (see ``lambda_demo.speed``)
* ``batch_serving``   - a SQL view: the batch rows serving reads (the current run's; a run
  holds only days < D)
* ``speed_serving``   - a SQL view: the speed rows serving reads (the serving deployment's,
  days >= D)
* ``serving_view``    - a SQL view: ``batch_serving`` + ``speed_serving``, in one snapshot
* ``leases``          - Redshift's session locks (see `try_session_lock`); unused on PostgreSQL

The split at the cutoff D is ``contract.served_by_batch``, rendered into SQL here and by the
batch recompute; every reader of "the batch part" or "the speed part" reads
``batch_serving`` or ``speed_serving`` rather than restating it.

**Redshift.** Every statement here is written once for both dialects
(``lambda_demo.clients.dialect``; ``lambda-demo sql --dialect redshift`` prints them all).
Redshift enforces no primary key, unique index or check, so uniqueness is kept by the
writers, never by a constraint: each table has one writer at a time, which deletes before it
inserts under a lock, in one transaction (`upsert_speed_rows`, `insert_quarantine`), or
replaces a single row (``batch_meta``: DELETE + INSERT under `lock_speed_view`); the loader
marks an object in ``loaded_objects`` in the transaction that copies its rows, under the
batch run's lock; a speed micro-batch claims its id in ``speed_deployments`` under
`lock_speed_view`, so a replayed micro-batch writes nothing twice. Redshift's isolation
(SERIALIZABLE or SNAPSHOT) ends one of two conflicting writers with an error rather than
letting it wait, and each writer here is safe to run again.
"""

from __future__ import annotations

import atexit
import hashlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import connection, cursor
from psycopg2.extras import execute_values

if TYPE_CHECKING:
    import pandas as pd

from lambda_demo import view
from lambda_demo.clients.dialect import DIALECTS, WORDS, Dialect, Words
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


def _column_list(columns: dict[str, str], words: Words) -> str:
    return ",\n    ".join(
        f"{name} {words.column_type(sql_type)}" for name, sql_type in columns.items()
    )


# The fingerprint of the DDL that made the schema (``ensure_schema``'s fast path). Created
# on its own too: on Redshift, ``ensure_schema`` locks this table before the others exist.
SCHEMA_VERSION_DDL = {
    name: f"CREATE TABLE IF NOT EXISTS schema_version (fingerprint {WORDS[name].text} NOT NULL);"
    for name in DIALECTS
}


def tables_ddl(dialect: Dialect = "postgres") -> str:
    """Every table, created if missing; the columns that depend on the view come from it.

    Primary keys document each table's identity; Redshift does not enforce them (see the
    module docstring for what does).
    """
    words = WORDS[dialect]
    measures = _column_list({name: "BIGINT NOT NULL" for name in view.MEASURE_NAMES}, words)
    schema_version = SCHEMA_VERSION_DDL[dialect]
    return f"""
CREATE TABLE IF NOT EXISTS raw_tweets (
    {_column_list(raw_tweets_columns(), words)}
);
CREATE TABLE IF NOT EXISTS loaded_objects (
    object_key {words.text} PRIMARY KEY,
    row_count INT NOT NULL,
    quarantined INT NOT NULL,
    loaded_at TIMESTAMPTZ NOT NULL DEFAULT {words.now}
);
CREATE TABLE IF NOT EXISTS quarantine (
    layer {words.text} NOT NULL,
    kafka_partition INT NOT NULL,
    kafka_offset BIGINT NOT NULL,
    ingest_ts TIMESTAMPTZ,
    reason {words.text} NOT NULL,
    raw_value {words.bytes},
    noted_at TIMESTAMPTZ NOT NULL DEFAULT {words.now},
    PRIMARY KEY (layer, kafka_partition, kafka_offset)
);
CREATE TABLE IF NOT EXISTS batch_view (
    run_id {words.text} NOT NULL,
    location {words.text} NOT NULL,
    {measures},
    PRIMARY KEY (run_id, location)
);
{schema_version}
CREATE TABLE IF NOT EXISTS batch_meta (
    singleton BOOLEAN PRIMARY KEY DEFAULT TRUE{words.check_singleton},
    run_id {words.text} NOT NULL,
    cutoff_day DATE NOT NULL,
    computed_at TIMESTAMPTZ NOT NULL DEFAULT {words.now}
);
CREATE TABLE IF NOT EXISTS speed_view (
    deployment {words.text} NOT NULL,
    ingest_day DATE NOT NULL,
    location {words.text} NOT NULL,
    {measures},
    updated_at TIMESTAMPTZ NOT NULL DEFAULT {words.now},
    PRIMARY KEY (deployment, ingest_day, location)
);
CREATE TABLE IF NOT EXISTS speed_deployments (
    deployment {words.text} PRIMARY KEY,  -- the streaming query's id, kept in its checkpoint
    checkpoint {words.text} NOT NULL,
    batch_id BIGINT NOT NULL DEFAULT -1,  -- the last micro-batch written to speed_view
    serving BOOLEAN NOT NULL DEFAULT FALSE,  -- at most one row: the rows serving reads
    retired_at TIMESTAMPTZ,  -- replaced by a newer deployment: its sink refuses to write
    progress_batch_id BIGINT NOT NULL DEFAULT -1,  -- the last progress report recorded
    end_offsets {words.text},  -- JSON {{partition: next offset}} processed so far
    state_rows BIGINT,  -- Spark state rows after the last micro-batch
    late_rows BIGINT NOT NULL DEFAULT 0,  -- rows Spark dropped as later than the watermark
    watermark TIMESTAMPTZ,
    started_at TIMESTAMPTZ NOT NULL DEFAULT {words.now},
    committed_at TIMESTAMPTZ
);
{words.one_serving_index}
CREATE TABLE IF NOT EXISTS leases (  -- Redshift's session locks: see try_session_lock
    name {words.text} PRIMARY KEY,
    holder {words.text} NOT NULL,
    expires_at TIMESTAMPTZ NOT NULL
);
"""


# PostgreSQL replaces a view in place; Redshift replaces one only by an identical set of
# columns, so a new measure's column needs the views dropped and created again (in the
# transaction of ``ensure_schema``: readers see the old views or the new ones).
_REPLACE_VIEWS: dict[Dialect, str] = {
    "postgres": "",
    "redshift": "DROP VIEW IF EXISTS serving_view, speed_serving, batch_serving;",
}
_CREATE_VIEW: dict[Dialect, str] = {
    "postgres": "CREATE OR REPLACE VIEW",
    "redshift": "CREATE VIEW",
}


def views_ddl(dialect: Dialect = "postgres") -> str:
    """The SQL views serving reads, created or replaced with the view's current measures.

    ``CREATE OR REPLACE VIEW`` keeps the existing columns and appends new ones, so a measure
    added at the end of ``view.MEASURES`` (where it belongs) replaces the views in place.
    ``batch_meta`` has one row at most, so ``batch_serving`` compares with its run id rather
    than joining it: a join made PostgreSQL sort the whole batch view on every serving query.
    """
    measures = ", ".join(view.MEASURE_NAMES)
    create = _CREATE_VIEW[dialect]
    return f"""{_REPLACE_VIEWS[dialect]}
{create} batch_serving AS
SELECT b.*
FROM batch_view b
WHERE b.run_id = (SELECT run_id FROM batch_meta);
{create} speed_serving AS
SELECT v.*
FROM speed_view v JOIN speed_deployments d ON d.deployment = v.deployment AND d.serving
WHERE {sql_speed_days("v.ingest_day", "(SELECT cutoff_day FROM batch_meta)")};
{create} serving_view AS
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


class WarehouseConnection(connection):
    """A psycopg2 connection that knows its SQL dialect, so that code holding only a cursor
    (a sink, a lock) issues the statements the warehouse understands."""

    dialect: Dialect = "postgres"


def connect(settings: Settings | None = None, *, autocommit: bool = False) -> connection:
    """A connection whose ``search_path`` is the tutorial's schema."""
    settings = settings or get_settings()
    conn = psycopg2.connect(**_connect_args(settings), connection_factory=WarehouseConnection)
    conn.dialect = settings.warehouse_dialect
    conn.autocommit = autocommit
    return conn


def dialect_of(cur: cursor) -> Dialect:
    """The dialect of the warehouse ``cur`` talks to (PostgreSQL for a plain connection)."""
    return getattr(cur.connection, "dialect", "postgres")


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


def create_schema_sql(schema: str) -> sql.Composed:
    return sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))


# Serialise concurrent ``ensure_schema`` calls until the transaction ends. On PostgreSQL an
# advisory lock, which needs no table; Redshift has none, so it creates the schema and the
# ``schema_version`` table if missing (each statement is safe to repeat) and locks that table.
def ddl_lock(dialect: Dialect, schema: str) -> list[sql.Composable]:
    """The statements that take ``ensure_schema``'s lock, in order."""
    if dialect == "postgres":
        return [sql.SQL("SELECT pg_advisory_xact_lock(hashtext('lambda_demo.ddl'))")]
    return [
        create_schema_sql(schema),
        sql.SQL(SCHEMA_VERSION_DDL[dialect]),
        sql.SQL("LOCK schema_version"),
    ]


# Whether the connection's schema has the fingerprint table (information_schema, which
# both dialects have, rather than PostgreSQL's to_regclass).
SCHEMA_VERSION_EXISTS = """
SELECT COUNT(*) FROM information_schema.tables
WHERE table_schema = current_schema() AND table_name = 'schema_version'
"""

# A speed view from before speed deployments existed. The speed layer is disposable by
# design, so an old one is dropped and rebuilt from Kafka rather than migrated.
OLD_SPEED_VIEW = """
SELECT 1 FROM information_schema.tables t
WHERE t.table_schema = current_schema() AND t.table_name = 'speed_view'
  AND NOT EXISTS (SELECT 1 FROM information_schema.columns c
                  WHERE c.table_schema = t.table_schema AND c.table_name = 'speed_view'
                    AND c.column_name = 'deployment')
"""
DROP_OLD_SPEED_VIEW = "DROP TABLE IF EXISTS speed_view, speed_commits CASCADE"
READ_FINGERPRINT = "SELECT fingerprint FROM schema_version"
RECORD_FINGERPRINT = (
    "DELETE FROM schema_version",
    "INSERT INTO schema_version (fingerprint) VALUES (%(fingerprint)s)",
)


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
    dialect = settings.warehouse_dialect
    fingerprint = hashlib.sha256((tables_ddl(dialect) + views_ddl(dialect)).encode()).hexdigest()
    conn = connect(settings)
    try:
        with conn, conn.cursor() as cur:
            if _schema_fingerprint(cur) == fingerprint:
                return
            for statement in ddl_lock(dialect, settings.warehouse_schema):
                cur.execute(statement)
            if _schema_fingerprint(cur) == fingerprint:  # done meanwhile by another process
                return
            cur.execute(create_schema_sql(settings.warehouse_schema))
            cur.execute(OLD_SPEED_VIEW)
            if cur.fetchone():
                cur.execute(DROP_OLD_SPEED_VIEW)
            cur.execute(tables_ddl(dialect))
            _add_missing_columns(cur)
            cur.execute(views_ddl(dialect))
            for statement in RECORD_FINGERPRINT:
                cur.execute(statement, {"fingerprint": fingerprint})
    finally:
        conn.close()


def _schema_fingerprint(cur: cursor) -> str | None:
    """The fingerprint recorded in the connection's schema, or None (no schema, or older)."""
    cur.execute(SCHEMA_VERSION_EXISTS)
    if not cur.fetchone()[0]:
        return None
    cur.execute(READ_FINGERPRINT)
    row = cur.fetchone()
    return row[0] if row else None


# Empties the loaded copy (see `_add_missing_columns`). Redshift's TRUNCATE commits the
# transaction it runs in, so Redshift deletes instead.
EMPTY_RAW: dict[Dialect, str] = {
    "postgres": "TRUNCATE raw_tweets, loaded_objects",
    "redshift": "DELETE FROM raw_tweets; DELETE FROM loaded_objects",
}
# Adds a missing column; the columns missing were read under the DDL lock, so Redshift's
# plain ADD COLUMN (it has no IF NOT EXISTS there) meets no column of the same name.
ADD_COLUMN: dict[Dialect, str] = {
    "postgres": "ALTER TABLE {} ADD COLUMN IF NOT EXISTS {} {}",
    "redshift": "ALTER TABLE {} ADD COLUMN {} {}",
}
RAW_HAS_ROWS = "SELECT COUNT(*) FROM (SELECT 1 FROM raw_tweets LIMIT 1) AS one_row"
COLUMNS_PRESENT = (
    "SELECT table_name, column_name FROM information_schema.columns "
    "WHERE table_schema = current_schema() AND table_name IN %s"
)


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
    dialect = dialect_of(cur)
    words = WORDS[dialect]
    cur.execute(COLUMNS_PRESENT, (tuple(wanted),))
    present = set(cur.fetchall())
    missing = {
        table: {
            name: sql_type for name, sql_type in columns.items() if (table, name) not in present
        }
        for table, columns in wanted.items()
    }
    if missing["raw_tweets"]:
        cur.execute(RAW_HAS_ROWS)
        if cur.fetchone()[0]:
            logger.warning(
                "raw_tweets lacks %s: emptied, the next batch run reloads it from S3",
                ", ".join(missing["raw_tweets"]),
            )
            cur.execute(EMPTY_RAW[dialect])
    for table, columns in missing.items():
        for name, sql_type in columns.items():
            cur.execute(
                sql.SQL(ADD_COLUMN[dialect]).format(
                    sql.Identifier(table),
                    sql.Identifier(name),
                    sql.SQL(words.column_type(sql_type)),
                )
            )


def lock_speed_view(cur: cursor) -> None:
    """Serialise the writers of ``speed_view`` until the transaction ends; readers never wait.

    Three kinds of transaction change which speed rows serving reads: a speed micro-batch,
    a batch run publishing its cutoff, and a new deployment taking over. Each takes this
    lock first, so each sees the others' results committed: a micro-batch cannot write a day
    that a batch run just absorbed, nor a retired deployment write at all.

    On Redshift ``LOCK speed_view`` is the only mode there is, and readers wait for it too,
    for as long as the holder's transaction: a micro-batch's few statements, or the end of a
    batch run's publication (it locks after computing its view). Redshift gives each
    transaction one snapshot, taken at its first statement, where PostgreSQL takes one per
    statement: a micro-batch that commits between a batch run's first statement and its lock
    is not seen by that run, so a speed row of a day the run absorbs may stay behind. It is
    never served (``speed_serving`` reads only the days from the published cutoff on), and the
    next batch run deletes it.
    """
    cur.execute(WORDS[dialect_of(cur)].lock_speed_view)


def _run(cur: cursor, statements: Sequence[str], rows: list[tuple], template: str) -> None:
    """Run ``statements`` in order; the one with ``VALUES %s`` gets ``rows``, many per page."""
    for statement in statements:
        if "VALUES %s" in statement:
            execute_values(cur, statement, rows, template=template)
        else:
            cur.execute(statement)


_SPEED_KEY = ("deployment", "ingest_day", view.KEY)


def speed_upsert_sql(dialect: Dialect) -> list[str]:
    """The statements that add a micro-batch's sums to ``speed_view``.

    Rows are ``(deployment, ingest_day, *view.COLUMNS)``; a row's measures are added to the
    row with the same key, or it becomes that row. PostgreSQL does it in one statement,
    ``ON CONFLICT ... DO UPDATE``. Redshift, which has no ON CONFLICT and enforces no key,
    stages the rows, adds the measures of the rows they update, deletes those and inserts the
    staged ones, in the caller's transaction and under `lock_speed_view`: no other writer
    runs in between, so each key keeps exactly one row.
    """
    words = WORDS[dialect]
    columns = ", ".join((*_SPEED_KEY[:2], *view.COLUMNS))
    if dialect == "postgres":
        key = ", ".join(_SPEED_KEY)
        updates = ", ".join(f"{m} = speed_view.{m} + EXCLUDED.{m}" for m in view.MEASURE_NAMES)
        return [
            f"INSERT INTO speed_view ({columns}) VALUES %s "
            f"ON CONFLICT ({key}) DO UPDATE SET {updates}, updated_at = {words.now}"
        ]
    same_key = " AND ".join(f"speed_view.{c} = s.{c}" for c in _SPEED_KEY)
    staged_key = " AND ".join(f"speed_rows.{c} = speed_view.{c}" for c in _SPEED_KEY)
    added = ", ".join(f"{m} = speed_rows.{m} + speed_view.{m}" for m in view.MEASURE_NAMES)
    return [
        "CREATE TEMP TABLE speed_rows (LIKE speed_view INCLUDING DEFAULTS)",
        f"INSERT INTO speed_rows ({columns}) VALUES %s",
        f"UPDATE speed_rows SET {added} FROM speed_view WHERE {staged_key}",
        f"DELETE FROM speed_view USING speed_rows s WHERE {same_key}",
        f"INSERT INTO speed_view ({columns}, updated_at) "
        f"SELECT {columns}, {words.now} FROM speed_rows",
        "DROP TABLE speed_rows",
    ]


def speed_row_template() -> str:
    """One speed row's values: deployment, ingest day and the view's columns."""
    return "(" + ", ".join(["%s"] * (2 + len(view.COLUMNS))) + ")"


def upsert_speed_rows(cur: cursor, rows: list[tuple]) -> None:
    """Write ``rows`` (see `speed_upsert_sql`) in the cursor's transaction."""
    _run(cur, speed_upsert_sql(dialect_of(cur)), rows, speed_row_template())


_QUARANTINE_COLUMNS = "layer, kafka_partition, kafka_offset, ingest_ts, reason, raw_value"
_QUARANTINE_KEY = ("layer", "kafka_partition", "kafka_offset")


def quarantine_insert_sql(dialect: Dialect) -> list[str]:
    """The statements that record rejected records; one already recorded is left as it is.

    The raw bytes travel as hex digits (``Words.from_hex``): psycopg2 would send Python bytes
    as a PostgreSQL ``bytea`` literal, which Redshift does not know. PostgreSQL skips a
    record already there with ``ON CONFLICT DO NOTHING``; Redshift locks the table, stages the
    rows, drops the ones already recorded and inserts the rest, in one transaction. The lock
    matters: the speed layer's Spark workers write the records they reject as they validate
    them, and two of them (a task run again, an old and a new deployment) may hold the same.
    """
    if dialect == "postgres":
        return [f"INSERT INTO quarantine ({_QUARANTINE_COLUMNS}) VALUES %s ON CONFLICT DO NOTHING"]
    same_key = " AND ".join(f"quarantine_rows.{c} = q.{c}" for c in _QUARANTINE_KEY)
    return [
        "LOCK quarantine",
        "CREATE TEMP TABLE quarantine_rows (LIKE quarantine INCLUDING DEFAULTS)",
        f"INSERT INTO quarantine_rows ({_QUARANTINE_COLUMNS}) VALUES %s",
        f"DELETE FROM quarantine_rows USING quarantine q WHERE {same_key}",
        f"INSERT INTO quarantine ({_QUARANTINE_COLUMNS}) "
        f"SELECT {_QUARANTINE_COLUMNS} FROM quarantine_rows",
        "DROP TABLE quarantine_rows",
    ]


def quarantine_template(dialect: Dialect) -> str:
    """One quarantined record's values: layer, partition, offset, ingest time, reason, bytes."""
    return f"(%s, %s, %s, %s, %s, {WORDS[dialect].from_hex})"


def insert_quarantine(cur: cursor, layer: str, rows: Sequence[tuple]) -> None:
    """Record ``rows`` of ``(partition, offset, ingest_ts, reason, raw bytes or None)``."""
    if not rows:
        return
    dialect = dialect_of(cur)
    values = [
        (layer, partition, offset, ingest_ts, reason, None if raw is None else bytes(raw).hex())
        for partition, offset, ingest_ts, reason, raw in rows
    ]
    _run(cur, quarantine_insert_sql(dialect), values, quarantine_template(dialect))


class SessionLock(Protocol):
    """A named lock held until `close` (or until its process dies)."""

    def close(self) -> None: ...


# PostgreSQL: a session-level advisory lock, released when its connection closes, which
# also happens when the process dies.
ADVISORY_TRY_LOCK = "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))"
ADVISORY_UNLOCK_ALL = "SELECT pg_advisory_unlock_all()"

LEASE_SECONDS = 60
"""How long a Redshift lease outlives its holder's last heartbeat (one every third of it)."""

# Redshift: a row in ``leases``, each statement in a transaction that first locks the table.
LOCK_LEASES = "LOCK leases"
LEASE_HOLDER = "SELECT holder FROM leases WHERE name = %(name)s AND expires_at >= GETDATE()"
LEASE_TAKE = (
    "DELETE FROM leases WHERE name = %(name)s",
    "INSERT INTO leases (name, holder, expires_at) "
    "VALUES (%(name)s, %(holder)s, DATEADD(second, %(seconds)s, GETDATE()))",
)
LEASE_RENEW = (
    "UPDATE leases SET expires_at = DATEADD(second, %(seconds)s, GETDATE()) "
    "WHERE name = %(name)s AND holder = %(holder)s"
)
LEASE_RELEASE = "DELETE FROM leases WHERE name = %(name)s AND holder = %(holder)s"


class _AdvisoryLock:
    def __init__(self, conn: connection) -> None:
        self.conn = conn

    def close(self) -> None:
        """Release, then disconnect. Closing alone releases only once the server's backend
        has exited, after ``close`` returns: a claim made right after could find it held."""
        try:
            with self.conn.cursor() as cur:
                cur.execute(ADVISORY_UNLOCK_ALL)
        except psycopg2.Error:
            pass  # the session is gone already, and its locks with it
        finally:
            self.conn.close()


class _Lease:
    """A Redshift lease: ``leases`` holds (name, holder, expiry); a thread renews it.

    Redshift has no advisory lock and releases nothing when a session dies, so the lock is
    a row that says who holds it and until when. Whoever finds no live row (none, or one
    past its expiry) takes it; the holder's heartbeat pushes the expiry forward every
    ``LEASE_SECONDS / 3``; `close` deletes the row. Each of these runs under ``LOCK leases``,
    so two claimants cannot both find the row free. A process that dies keeps the lease
    until it expires: a restart within ``LEASE_SECONDS`` is refused as busy. A holder frozen
    for longer than that (a suspended laptop) can lose its lease to another; the heartbeat
    then logs an error. What a lease guards is a second *start*: the writes themselves stay
    exact under `lock_speed_view` and the micro-batch claim even with two writers.
    """

    def __init__(self, settings: Settings, name: str) -> None:
        self.conn = connect(settings)
        self.params = {
            "name": name,
            "holder": f"{socket.gethostname()} pid {os.getpid()} {uuid.uuid4().hex[:8]}",
            "seconds": LEASE_SECONDS,
        }
        self._stop = threading.Event()
        self._heartbeat = threading.Thread(target=self._renew, name=f"lease {name}", daemon=True)

    def take(self) -> bool:
        with self.conn, self.conn.cursor() as cur:
            cur.execute(LOCK_LEASES)
            cur.execute(LEASE_HOLDER, self.params)
            if cur.fetchone() is not None:
                return False
            for statement in LEASE_TAKE:
                cur.execute(statement, self.params)
        self._heartbeat.start()
        return True

    def _renew(self) -> None:
        while not self._stop.wait(LEASE_SECONDS / 3):
            try:
                with self.conn, self.conn.cursor() as cur:
                    cur.execute(LOCK_LEASES)
                    cur.execute(LEASE_RENEW, self.params)
                    if cur.rowcount == 0:
                        logger.error("lost the lease %s to another process", self.params["name"])
                        return
            except psycopg2.Error:
                logger.warning("could not renew the lease %s", self.params["name"], exc_info=True)

    def close(self) -> None:
        self._stop.set()
        if self._heartbeat.is_alive():
            self._heartbeat.join()
        try:
            if not self.conn.closed:
                with self.conn, self.conn.cursor() as cur:
                    cur.execute(LOCK_LEASES)
                    cur.execute(LEASE_RELEASE, self.params)
        finally:
            self.conn.close()


def try_session_lock(settings: Settings, name: str) -> SessionLock | None:
    """Take the lock ``name`` of this warehouse for as long as the caller holds it, or None
    if another session holds it. `SessionLock.close` releases it.

    PostgreSQL: an advisory lock on a dedicated connection (closing it releases the lock, and
    so does the process's death). Redshift: a lease (see `_Lease`).
    """
    if settings.warehouse_dialect == "postgres":
        conn = connect(settings, autocommit=True)
        with conn.cursor() as cur:
            cur.execute(ADVISORY_TRY_LOCK, (name,))
            if cur.fetchone()[0]:
                return _AdvisoryLock(conn)
        conn.close()
        return None
    lease = _Lease(settings, name)
    try:
        if lease.take():
            return lease
    except BaseException:
        lease.conn.close()
        raise
    lease.conn.close()
    return None
