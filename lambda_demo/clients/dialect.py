"""The two SQL dialects the warehouse speaks: PostgreSQL (the stand-in) and Amazon Redshift.

Both speak PostgreSQL's wire protocol, so psycopg2 serves both, but Redshift's SQL is an old,
distributed relative of PostgreSQL's. Every statement the pipeline issues is written once,
with the few words that differ left as names (``{now}``, ``{text}``...); `WORDS` says what
each name is in each dialect. What differs beyond a word (an upsert, a lock) is one function
that takes the dialect, next to the table it writes (``lambda_demo.clients.warehouse``).

What Redshift lacks, and what the Redshift form does instead:

================================  ===============================================================
PostgreSQL                        Redshift
================================  ===============================================================
``TEXT``                          ``VARCHAR(MAX)`` (Redshift's ``TEXT`` is ``VARCHAR(256)``)
``BYTEA``                         ``VARBYTE``, written with ``FROM_HEX``
``now()``                         ``GETDATE()`` (``now()`` runs on the leader node only)
``INSERT ... ON CONFLICT``        delete + insert from a staging table, in one transaction,
                                  under a lock
``LOCK TABLE t IN EXCLUSIVE       ``LOCK t`` (exclusive until the transaction ends; readers
MODE``                            wait too)
``pg_advisory_xact_lock``         ``LOCK schema_version``
``pg_try_advisory_lock``          a lease row in ``leases`` (holder, expiry, heartbeat)
``CHECK``, unique indexes,        nothing: Redshift enforces no key or check; each table's
enforced primary keys             single writer under a lock keeps the rows unique
``TRUNCATE`` (transactional)      ``DELETE`` (Redshift's ``TRUNCATE`` commits at once)
``ARRAY(SELECT ...)``             one row per element
================================  ===============================================================
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal, get_args

from psycopg2 import sql

Dialect = Literal["postgres", "redshift"]
DIALECTS: tuple[Dialect, ...] = get_args(Dialect)


@dataclass(frozen=True)
class Words:
    """The words of one dialect that a statement's template names in braces."""

    text: str
    """A string of any length."""
    bytes: str
    """Raw bytes (a quarantined record's value)."""
    now: str
    """The current transaction's time."""
    from_hex: str
    """Turns a bind parameter holding hex digits into ``bytes``."""
    lock_speed_view: str
    """Serialises the writers of ``speed_view`` until the transaction ends."""
    check_singleton: str
    """``batch_meta``'s one-row constraint (Redshift enforces no CHECK)."""
    one_serving_index: str
    """At most one serving speed deployment (Redshift has no indexes)."""

    def column_type(self, sql_type: str) -> str:
        """A column type spelled for PostgreSQL (``TEXT NOT NULL``) in this dialect."""
        base, _, rest = sql_type.partition(" ")
        spelled = {"TEXT": self.text, "BYTEA": self.bytes}.get(base, base)
        return f"{spelled} {rest}".strip()


WORDS: dict[Dialect, Words] = {
    "postgres": Words(
        text="TEXT",
        bytes="BYTEA",
        now="now()",
        from_hex="decode(%s, 'hex')",
        # EXCLUSIVE lets readers through: serving never waits for a writer.
        lock_speed_view="LOCK TABLE speed_view IN EXCLUSIVE MODE",
        check_singleton=" CHECK (singleton)",
        one_serving_index="CREATE UNIQUE INDEX IF NOT EXISTS speed_deployments_one_serving\n"
        "    ON speed_deployments (serving) WHERE serving;",
    ),
    "redshift": Words(
        text="VARCHAR(MAX)",
        # Kafka's default largest message; a longer value is cut by the ingestion handler.
        bytes="VARBYTE(1024000)",
        now="GETDATE()",
        from_hex="FROM_HEX(%s)",
        lock_speed_view="LOCK speed_view",
        check_singleton="",
        # Kept by the writers instead: `serving` changes only under lock_speed_view.
        one_serving_index="",
    ),
}


def per_dialect(template: str) -> dict[Dialect, str]:
    """``template`` in every dialect: each ``{word}`` replaced by that dialect's `Words`."""
    return {name: template.format_map(asdict(words)) for name, words in WORDS.items()}


def render(statement: sql.Composable | str) -> str:
    """The text of a statement, without a connection.

    ``psycopg2.sql`` objects render through a connection (``as_string``), which a learner
    reading the statements (``lambda-demo sql``) has no need of. The statements of this
    package compose only `sql.SQL` text and `sql.Identifier` names, rendered here as
    PostgreSQL and Redshift both quote them; anything else is refused rather than guessed.
    """
    if isinstance(statement, str):
        return statement
    if isinstance(statement, sql.Composed):
        return "".join(render(part) for part in statement.seq)
    if isinstance(statement, sql.SQL):
        return statement.string
    if isinstance(statement, sql.Placeholder):
        return "%s" if statement.name is None else f"%({statement.name})s"
    if isinstance(statement, sql.Identifier):
        return ".".join('"' + name.replace('"', '""') + '"' for name in statement.strings)
    raise TypeError(f"cannot render {statement!r} without a connection")
