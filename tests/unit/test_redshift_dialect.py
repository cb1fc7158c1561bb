"""The Redshift dialect: every statement the pipeline issues parses as Redshift SQL and uses
nothing Redshift lacks.

No warehouse is needed: the statements are the ones ``lambda-demo sql`` prints
(`lambda_demo.statements`), read from where the pipeline issues them. Each is parsed with
sqlglot's Redshift dialect and searched for PostgreSQL-only features, both in the parsed tree
and in the text (sqlglot reads some PostgreSQL features under ``read="redshift"`` without
complaint, and spells ``BYTEA`` and ``VARBYTE`` as the same type). The same checker run on the
PostgreSQL statements finds each feature it looks for: it can fail.
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sqlglot
from psycopg2 import sql
from sqlglot import exp
from sqlglot.errors import ErrorLevel

from lambda_demo.clients import dialect, warehouse
from lambda_demo.settings import Settings
from lambda_demo.statements import sections

REPO = Path(__file__).resolve().parents[2]

# What Redshift lacks, as text: (name, pattern). Each says why in its name.
POSTGRES_ONLY_TEXT: list[tuple[str, re.Pattern[str]]] = [
    ("ON CONFLICT (no upsert clause)", re.compile(r"\bON\s+CONFLICT\b", re.I)),
    ("pg_* functions (advisory locks, ...)", re.compile(r"\bpg_\w+\s*\(", re.I)),
    ("hashtext (PostgreSQL's hash)", re.compile(r"\bhashtext", re.I)),
    ("BYTEA (Redshift has VARBYTE)", re.compile(r"\bBYTEA\b", re.I)),
    ("FOR UPDATE / FOR SHARE (no row locks)", re.compile(r"\bFOR\s+(UPDATE|SHARE)\b", re.I)),
    ("ARRAY constructors (no arrays)", re.compile(r"\bARRAY\s*[\[(]", re.I)),
    ("lock modes (LOCK takes none)", re.compile(r"\bIN\s+\w+(\s+\w+)?\s+MODE\b", re.I)),
    ("TEXT (Redshift truncates it to VARCHAR(256))", re.compile(r"\bTEXT\b(?!')")),
    ("now() (leader node only)", re.compile(r"\bnow\s*\(", re.I)),
    ("CURRENT_TIMESTAMP (leader node only)", re.compile(r"\bCURRENT_TIMESTAMP\b", re.I)),
    ("TRUNCATE (commits at once on Redshift)", re.compile(r"\bTRUNCATE\b", re.I)),
    ("CHECK constraints (not supported)", re.compile(r"\bCHECK\s*\(", re.I)),
    ("indexes (Redshift has none)", re.compile(r"\bCREATE\s+(UNIQUE\s+)?INDEX\b", re.I)),
    ("ADD COLUMN IF NOT EXISTS", re.compile(r"\bADD\s+COLUMN\s+IF\b", re.I)),
    ("DISTINCT ON", re.compile(r"\bDISTINCT\s+ON\b", re.I)),
    ("RETURNING", re.compile(r"\bRETURNING\b", re.I)),
    ("to_regclass", re.compile(r"\bto_regclass\b", re.I)),
    ("set_config / SET work_mem", re.compile(r"\bset_config\b|\bwork_mem\b", re.I)),
    ("= ANY(array)", re.compile(r"\bANY\s*\(", re.I)),
    ("decode(.., 'hex') (Redshift's DECODE is CASE)", re.compile(r"\bdecode\s*\(", re.I)),
]
# What Redshift lacks, as parsed by sqlglot (which reads GETDATE() as CURRENT_TIMESTAMP, so
# the leader-node-only time functions are checked in the text above).
POSTGRES_ONLY_NODES: dict[type[exp.Expression], str] = {
    exp.OnConflict: "ON CONFLICT",
    exp.Lock: "FOR UPDATE / FOR SHARE",
    exp.Array: "an ARRAY constructor",
    exp.ArrayAgg: "array_agg",
    exp.Unnest: "unnest",
    exp.Returning: "RETURNING",
}

_PARAMETER = re.compile(r"%(?:\(\w+\))?s")


def _all_statements(name: dialect.Dialect) -> list[str]:
    return [s.text for section in sections(name, Settings()) for s in section.statements]


def _bindable(text: str) -> str:
    """The statement with each bind parameter replaced by a value a parser accepts."""
    return _PARAMETER.sub("NULL", text.replace("IN %s", "IN (NULL)"))


def _without_comments(text: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in text.splitlines())


def redshift_problems(text: str) -> list[str]:
    """What in ``text`` Redshift lacks or parses otherwise; empty if nothing."""
    problems: list[str] = []
    code = _without_comments(text)
    for name, pattern in POSTGRES_ONLY_TEXT:
        if pattern.search(code):
            problems.append(name)
    trees = sqlglot.parse(_bindable(text), read="redshift", error_level=ErrorLevel.RAISE)
    for tree in trees:
        if tree is None:
            continue
        if isinstance(tree, exp.Command):
            # sqlglot does not model Redshift's LOCK; it is the only statement it may keep as
            # text, and then only in Redshift's form: LOCK and table names.
            if not re.fullmatch(r"LOCK\s+\w+(\s*,\s*\w+)*\s*;?", tree.sql("redshift").strip()):
                problems.append(f"unparsed: {tree.sql('redshift')[:60]}")
            continue
        for node_type, name in POSTGRES_ONLY_NODES.items():
            if tree.find(node_type) is not None:
                problems.append(name)
        for function in tree.find_all(exp.Anonymous):
            if function.name.lower().startswith(("pg_", "hashtext", "to_regclass", "set_config")):
                problems.append(f"function {function.name}")
    return problems


@pytest.fixture(scope="module")
def redshift_statements() -> list[str]:
    return _all_statements("redshift")


def test_every_redshift_statement_parses_and_uses_nothing_redshift_lacks(
    redshift_statements: list[str],
) -> None:
    found = {text[:80]: redshift_problems(text) for text in redshift_statements}
    assert {text: problems for text, problems in found.items() if problems} == {}
    assert len(redshift_statements) >= 50  # the whole pipeline, not a sample


def test_the_checker_finds_what_the_postgres_statements_use() -> None:
    """Planted PostgreSQL-only statements are caught: the PostgreSQL forms use each of them."""
    found = {p for text in _all_statements("postgres") for p in redshift_problems(text)}
    assert {
        "ON CONFLICT",
        "ON CONFLICT (no upsert clause)",
        "function pg_advisory_xact_lock",
        "function pg_try_advisory_lock",
        "BYTEA (Redshift has VARBYTE)",
        "lock modes (LOCK takes none)",
        "unparsed: LOCK TABLE speed_view IN EXCLUSIVE MODE",
        "TEXT (Redshift truncates it to VARCHAR(256))",
        "now() (leader node only)",
        "TRUNCATE (commits at once on Redshift)",
        "CHECK constraints (not supported)",
        "indexes (Redshift has none)",
        "ADD COLUMN IF NOT EXISTS",
        "set_config / SET work_mem",
    } <= found


@pytest.mark.parametrize(
    "statement",
    [
        "SELECT deployment FROM speed_deployments WHERE serving FOR UPDATE",
        "SELECT ARRAY(SELECT DISTINCT ingest_day FROM speed_serving)",
        "SELECT pg_try_advisory_lock(hashtextextended(%s, 0))",
        "CREATE TABLE q (raw_value BYTEA)",
        "INSERT INTO t (a) VALUES %s ON CONFLICT DO NOTHING",
        "LOCK TABLE speed_view IN EXCLUSIVE MODE",
        "UPDATE t SET at = now()",
        "SELECT 1 FROM t WHERE a = ANY(%s)",
    ],
)
def test_each_planted_postgres_feature_is_reported(statement: str) -> None:
    assert redshift_problems(statement), statement


def test_redshift_keeps_rows_unique_without_keys(redshift_statements: list[str]) -> None:
    """Redshift enforces no key: each upsert deletes the rows it replaces first, under a
    lock, and the ``batch_meta`` row is replaced whole."""
    upsert = warehouse.speed_upsert_sql("redshift")
    assert any(s.startswith("DELETE FROM speed_view USING speed_rows") for s in upsert)
    assert upsert.index(next(s for s in upsert if s.startswith("DELETE"))) < upsert.index(
        next(s for s in upsert if s.startswith("INSERT INTO speed_view"))
    )
    quarantine = warehouse.quarantine_insert_sql("redshift")
    assert any(s.startswith("DELETE FROM quarantine_rows USING quarantine") for s in quarantine)
    assert "LOCK speed_view" in redshift_statements
    assert "DELETE FROM batch_meta" in redshift_statements


def test_postgres_keeps_its_own_statements() -> None:
    """Only the generated form differs: PostgreSQL keeps its upsert and advisory locks."""
    postgres = "\n".join(_all_statements("postgres"))
    assert "ON CONFLICT (deployment, ingest_day, location) DO UPDATE" in postgres
    assert warehouse.ADVISORY_TRY_LOCK in postgres
    assert "LOCK TABLE speed_view IN EXCLUSIVE MODE" in postgres
    assert "CREATE UNIQUE INDEX IF NOT EXISTS speed_deployments_one_serving" in postgres


def test_column_types_are_spelled_per_dialect() -> None:
    redshift = dialect.WORDS["redshift"]
    assert redshift.column_type("TEXT NOT NULL") == "VARCHAR(MAX) NOT NULL"
    assert redshift.column_type("BYTEA") == "VARBYTE(1024000)"
    assert redshift.column_type("BIGINT NOT NULL") == "BIGINT NOT NULL"
    assert dialect.WORDS["postgres"].column_type("TEXT NOT NULL") == "TEXT NOT NULL"
    assert dialect.per_dialect("SET a = {now}") == {
        "postgres": "SET a = now()",
        "redshift": "SET a = GETDATE()",
    }


def test_render_writes_identifiers_quoted_and_refuses_values() -> None:
    statement = sql.SQL("SELECT {} FROM {} WHERE a = {}").format(
        sql.Identifier('we"ird'), sql.Identifier("s", "t"), sql.Placeholder("a")
    )
    assert dialect.render(statement) == 'SELECT "we""ird" FROM "s"."t" WHERE a = %(a)s'
    with pytest.raises(TypeError, match="without a connection"):
        dialect.render(sql.Literal("a value"))


def test_a_plain_connection_is_postgres() -> None:
    class Cursor:
        connection = object()

    assert warehouse.dialect_of(Cursor()) == "postgres"  # type: ignore[arg-type]


# Modules whose statements ``lambda-demo sql`` prints because each names them (the loader's
# two ``loaded_objects`` statements are inline and said so in its section).
_NAMED = ["clients/warehouse.py", "speed/sink.py", "speed/run.py", "batch/recompute.py",
          "batch/run.py", "status.py", "serving/reads.py"]  # fmt: skip


@pytest.mark.parametrize("path", _NAMED)
def test_no_statement_is_written_inline_where_the_catalogue_cannot_see_it(path: str) -> None:
    """A literal passed to ``execute``/``fetch_frame`` would be missing from ``lambda-demo
    sql``: each statement is a named constant or function instead."""
    tree = ast.parse((REPO / "lambda_demo" / path).read_text())
    inline = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in {"execute", "fetch_frame"}
        and node.args
        and isinstance(node.args[0], (ast.Constant, ast.JoinedStr))
    ]
    assert inline == [], f"{path}: inline SQL at lines {inline}"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "PYTHONPATH": str(REPO), "LAMBDA_DEMO_PROFILE": "embedded"}
    environment.pop("LAMBDA_DEMO_WAREHOUSE_DIALECT", None)
    return subprocess.run(
        [sys.executable, "-m", "lambda_demo.cli", "sql", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_sql_command_prints_no_postgres_only_statement_for_redshift() -> None:
    done = _cli("--dialect", "redshift")
    assert done.returncode == 0, done.stderr
    for heading in ["Schema", "Locks", "Load", "Recompute", "Speed layer", "Serving", "Status"]:
        assert f"-- ==== {heading}" in done.stdout
    assert 'COPY "raw_tweets"' in done.stdout and "IAM_ROLE" in done.stdout
    code = _without_comments(done.stdout)
    for forbidden in ["ON CONFLICT", "pg_advisory", "BYTEA", "FOR UPDATE"]:
        assert forbidden not in code


def test_sql_command_defaults_to_the_settings_dialect() -> None:
    done = _cli()
    assert done.returncode == 0, done.stderr
    assert "pg_advisory_xact_lock" in done.stdout  # postgres, the default
    assert "FROM STDIN WITH (FORMAT csv)" in done.stdout
    assert _cli("--dialect", "oracle").returncode == 2
