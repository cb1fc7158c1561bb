"""``lambda-demo sql``: every statement the pipeline issues, in PostgreSQL or Redshift.

The statements are read from where the pipeline issues them (each module names its own),
rendered as text without a warehouse (`lambda_demo.clients.dialect.render`), and grouped by
what issues them, in the order the data flows. Bind parameters stay as psycopg2 writes them
(``%s``, ``%(name)s``): their values are never part of the SQL text. A statement that writes
many rows at once (``VALUES %s``) is shown with one row's values.

Usage::

    lambda-demo sql                       # in the settings' dialect
    lambda-demo sql --dialect redshift    # what would run on Redshift
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from psycopg2 import sql

from lambda_demo import status as status_sql
from lambda_demo import view
from lambda_demo.batch import loader, recompute
from lambda_demo.batch.staging import Staged
from lambda_demo.clients import warehouse
from lambda_demo.clients.dialect import WORDS, Dialect, render
from lambda_demo.serving import reads
from lambda_demo.settings import Settings, get_settings
from lambda_demo.speed import sink

# The role Redshift's COPY names when the settings name none: `lambda-demo sql` needs no AWS
# account to show what the statement looks like.
EXAMPLE_IAM_ROLE = "arn:aws:iam::123456789012:role/lambda-demo-copy"


@dataclass(frozen=True)
class Statement:
    what: str
    """What the statement does, in words."""
    text: str


@dataclass(frozen=True)
class Section:
    heading: str
    statements: list[Statement]


def _rows(statements: list[str], template: str) -> list[str]:
    """``VALUES %s`` (psycopg2's ``execute_values``) shown with one row's placeholders."""
    # In these statements, ``VALUES %s`` holds the first parameter.
    return [s.replace("%s", template, 1) if "VALUES %s" in s else s for s in statements]


class _Recorder:
    """Stands in for a cursor: keeps the statements the loader issues."""

    def __init__(self, dialect: Dialect) -> None:
        self.connection = SimpleNamespace(dialect=dialect)  # what `warehouse.dialect_of` reads
        self.seen: list[str] = []

    def execute(self, query: Any, params: Any = None) -> None:
        self.seen.append(render(query))

    def copy_expert(self, query: Any, file: Any, size: int = 8192) -> None:
        self.seen.append(render(query))


def _copy(settings: Settings) -> str:
    """The loader's COPY of one object's rows, from the loader's own code path."""
    recorder = _Recorder(settings.warehouse_dialect)
    staged = Staged(rows_key="example", rows_body=gzip.compress(b""), manifest={"rows": 1})
    loader._copy_rows(recorder, staged, settings=settings)
    (statement,) = recorder.seen
    return statement


def sections(dialect: Dialect, settings: Settings | None = None) -> list[Section]:
    """Every statement of the pipeline in ``dialect``, grouped in the order the data flows."""
    settings = (settings or get_settings()).model_copy(update={"warehouse_dialect": dialect})
    if dialect == "redshift" and not settings.redshift_iam_role:
        settings = settings.model_copy(update={"redshift_iam_role": EXAMPLE_IAM_ROLE})
    words = WORDS[dialect]
    schema = settings.warehouse_schema
    quarantine = _rows(
        warehouse.quarantine_insert_sql(dialect), warehouse.quarantine_template(dialect)
    )
    example_column = sql.SQL(warehouse.ADD_COLUMN[dialect]).format(
        sql.Identifier("speed_view"), sql.Identifier("new_measure"), sql.SQL("BIGINT")
    )
    if dialect == "postgres":
        session_lock = [
            Statement("try the lock (held by the session)", warehouse.ADVISORY_TRY_LOCK)
        ]
    else:
        session_lock = [
            Statement(
                "every lease statement runs after this, in its transaction", warehouse.LOCK_LEASES
            ),
            Statement("is the lease held, and not expired?", warehouse.LEASE_HOLDER),
            *(Statement("take the lease", s) for s in warehouse.LEASE_TAKE),
            Statement("heartbeat", warehouse.LEASE_RENEW),
            Statement("release", warehouse.LEASE_RELEASE),
        ]
    work_mem = (
        [Statement("sort memory for this transaction", recompute.SET_WORK_MEM)]
        if dialect == "postgres"
        else []
    )
    return [
        Section(
            "Schema (warehouse.ensure_schema, at every batch run and speed start)",
            [
                Statement("is there a schema fingerprint?", warehouse.SCHEMA_VERSION_EXISTS),
                Statement("the fingerprint", warehouse.READ_FINGERPRINT),
                *(
                    Statement("serialise schema changes", render(s))
                    for s in warehouse.ddl_lock(dialect, schema)
                ),
                Statement("the schema", render(warehouse.create_schema_sql(schema))),
                Statement("a speed view older than deployments?", warehouse.OLD_SPEED_VIEW),
                Statement(
                    "if so, drop it (it is rebuilt from Kafka)", warehouse.DROP_OLD_SPEED_VIEW
                ),
                Statement("the tables", warehouse.tables_ddl(dialect)),
                Statement("the columns the tables have", warehouse.COLUMNS_PRESENT),
                Statement("does raw_tweets hold rows?", warehouse.RAW_HAS_ROWS),
                Statement("raw_tweets lacks a field: reload it", warehouse.EMPTY_RAW[dialect]),
                Statement("a column a new measure needs (example)", render(example_column)),
                Statement("the serving views", warehouse.views_ddl(dialect)),
                *(Statement("record the fingerprint", s) for s in warehouse.RECORD_FINGERPRINT),
            ],
        ),
        Section(
            "Locks",
            [
                Statement(
                    "the writers of speed_view, until the transaction ends", words.lock_speed_view
                ),
                *(
                    Statement(f"one batch run / one speed writer: {s.what}", s.text)
                    for s in session_lock
                ),
            ],
        ),
        Section(
            # Besides these, the loader reads and marks ``loaded_objects`` with a plain SELECT and
            # INSERT that both dialects speak as written (``lambda_demo.batch.loader.load``).
            "Load (batch layer: S3 master dataset -> raw_tweets)",
            [
                Statement("one object's valid rows", _copy(settings)),
                *(Statement("its rejected records", s) for s in quarantine),
            ],
        ),
        Section(
            "Recompute (batch layer: raw_tweets -> batch_view, published with its cutoff)",
            [
                *work_mem,
                Statement("the new run's batch view", recompute.batch_view_sql()),
                Statement("from here to the commit, no speed writes", words.lock_speed_view),
                Statement("the cutoff published so far", recompute.READ_CUTOFF),
                *(Statement("publish the run", s) for s in recompute.REPLACE_META),
                Statement("drop the previous runs", recompute.DELETE_OLD_RUNS),
                Statement(
                    "the speed layer forgets the absorbed days",
                    recompute._DELETE_ABSORBED_SPEED_DAYS,
                ),
                Statement("what the run holds", recompute.COUNT_RUN),
            ],
        ),
        Section(
            "Speed layer (one micro-batch, in one transaction)",
            [
                Statement("serialise the writers of speed_view", words.lock_speed_view),
                Statement("the deployment's last micro-batch", sink.READ_DEPLOYMENT),
                Statement("a new deployment", sink.REGISTER_DEPLOYMENT),
                Statement(
                    "no row counted before a measure existed", sink.rows_without_a_measure_sql()
                ),
                Statement("the cutoff: days before it are the batch layer's", sink.READ_CUTOFF),
                *(
                    Statement("the micro-batch's new tweets added to their groups", s)
                    for s in _rows(
                        warehouse.speed_upsert_sql(dialect), warehouse.speed_row_template()
                    )
                ),
                Statement("the micro-batch is committed", sink.COMMIT_BATCH[dialect]),
                *(Statement("records that broke the contract", s) for s in quarantine),
            ],
        ),
        Section(
            "Speed layer progress, and a new deployment taking over",
            [
                Statement("serialise the writers of speed_view", words.lock_speed_view),
                Statement("where the deployment is", sink.READ_PROGRESS),
                Statement("its progress report", sink.RECORD_PROGRESS),
                Statement("caught up: the older deployments retire", sink.RETIRE_OLDER[dialect]),
                Statement("it serves", sink.SERVE),
                Statement("the retired deployments' rows go", sink.DELETE_RETIRED_ROWS),
            ],
        ),
        Section(
            "Serving (reads)",
            [
                Statement("the serving view", render(reads.serving_view_sql())),
                Statement("the top N by a measure", render(reads.top_sql(view.MEASURE_NAMES[0]))),
                Statement("one location", render(reads.location_sql())),
                Statement("the batch part and the speed part", reads.totals_sql()),
                Statement("the batch cutoff", reads.BATCH_CUTOFF),
            ],
        ),
        Section(
            "Status (lambda-demo status)",
            [
                Statement("warehouse rows", status_sql.WAREHOUSE_ROWS),
                Statement("the batch part", status_sql.BATCH_FIGURES),
                Statement("the serving view", status_sql.SERVING_FIGURES),
                Statement("the serving speed deployment and its days", status_sql.SPEED_FIGURES),
                Statement("its offsets and the cutoff", status_sql.SERVING_PROGRESS),
            ],
        ),
    ]


def render_sections(found: list[Section]) -> str:
    """The sections as one SQL script: headings and descriptions are comments."""
    lines: list[str] = []
    for section in found:
        lines += ["", f"-- ==== {section.heading} ===="]
        for statement in section.statements:
            text = "\n".join(line.rstrip() for line in statement.text.strip().splitlines())
            lines += [f"-- {statement.what}", text if text.endswith(";") else text + ";"]
    return "\n".join(lines).lstrip("\n") + "\n"
