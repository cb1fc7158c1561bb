"""One function that returns a SparkSession wired to Kafka (and to S3, for checkpoints there).

The Kafka source is not part of pyspark: it is the ``spark-sql-kafka-0-10`` connector on
Maven Central, fetched by Spark's own Ivy resolver (``spark.jars.packages``) into a cache,
at exactly the version of the installed pyspark. A mismatched connector is the most common
"ClassNotFoundException" in Spark + Kafka tutorials.

Checkpoints in S3 (``s3a://``, the cluster profile's) need Hadoop's S3A file system, which
pyspark does not bundle either: ``hadoop-aws`` at the Hadoop version pyspark bundles, resolved
and cached the same way. It depends on the AWS SDK v2 ``bundle``, one 686 MB jar; we exclude
it and depend on the SDK modules S3A uses instead (``s3`` and ``s3-transfer-manager`` with
what they need), 36 jars and 12.9 MB in all, minus what pyspark already ships (Netty, the
Apache HTTP client, SLF4J). Sessions whose checkpoints are local never load any of it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lambda_demo.contract import INGEST_DAY_ZONE
from lambda_demo.errors import SparkStartError
from lambda_demo.settings import Settings, get_settings
from lambda_demo.stack.jvm import CACHE_DIR, IVY_SETTINGS, java_version

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)

SESSION_TIME_ZONE = INGEST_DAY_ZONE.tzname(None)
"""Spark SQL's session time zone: ``contract.INGEST_DAY_ZONE``'s name ("UTC")."""


def kafka_connector() -> str:
    import pyspark

    return f"org.apache.spark:spark-sql-kafka-0-10_2.13:{pyspark.__version__}"


AWS_SDK_FOR_HADOOP = {"3.5.0": "2.35.4"}
"""The AWS SDK v2 version each ``hadoop-aws`` release is built against (its pom's ``bundle``)."""

S3A_EXCLUDES = [
    "software.amazon.awssdk:bundle",  # 686 MB: every AWS service; S3A needs S3 alone
    # Already in pyspark's jars/ (a second copy at another version would shadow Spark's own).
    *(
        f"io.netty:netty-{name}"
        for name in (
            "buffer",
            "codec",
            "codec-http",
            "codec-http2",
            "common",
            "handler",
            "resolver",
            "transport",
            "transport-classes-epoll",
            "transport-native-unix-common",
        )
    ),
    "org.slf4j:slf4j-api",
    "commons-codec:commons-codec",
    "commons-logging:commons-logging",
    "org.apache.httpcomponents:httpclient",
    "org.apache.httpcomponents:httpcore",
]


def hadoop_version() -> str:
    """The Hadoop version pyspark bundles (``jars/hadoop-client-api-<version>.jar``)."""
    import pyspark

    jars = sorted((Path(pyspark.__file__).parent / "jars").glob("hadoop-client-api-*.jar"))
    if not jars:
        raise SparkStartError("pyspark's jars/hadoop-client-api-*.jar is missing: reinstall it.")
    return jars[-1].name.removeprefix("hadoop-client-api-").removesuffix(".jar")


def s3a_packages() -> list[str]:
    """``hadoop-aws`` at pyspark's Hadoop version, and the AWS SDK modules it needs."""
    hadoop = hadoop_version()
    sdk = AWS_SDK_FOR_HADOOP.get(hadoop)
    if sdk is None:
        raise SparkStartError(
            f"pyspark bundles Hadoop {hadoop}, whose AWS SDK version this tutorial does not "
            f"know: add it to AWS_SDK_FOR_HADOOP in {__name__} (hadoop-aws {hadoop}'s pom "
            "names it), or install the pyspark version of pyproject.toml."
        )
    return [
        f"org.apache.hadoop:hadoop-aws:{hadoop}",
        f"software.amazon.awssdk:s3:{sdk}",
        f"software.amazon.awssdk:s3-transfer-manager:{sdk}",
    ]


def on_s3(location: str) -> bool:
    """True for an ``s3a://`` location: Spark needs the S3A jars and options to use it."""
    return location.startswith("s3a://")


def s3a_options(settings: Settings) -> dict[str, str]:
    """Spark options that point S3A at the profile's S3 endpoint with its credentials.

    S3Proxy and MinIO answer on one host with the bucket in the path; AWS S3 needs neither
    an endpoint nor path-style access, and without keys S3A uses AWS's credential chain.
    """
    ends = settings.endpoints()
    options = {"fs.s3a.endpoint.region": settings.s3_region}
    if ends.s3_endpoint:
        options |= {
            "fs.s3a.endpoint": ends.s3_endpoint,
            "fs.s3a.path.style.access": "true",
            "fs.s3a.connection.ssl.enabled": str(ends.s3_endpoint.startswith("https")).lower(),
        }
    if ends.s3_access_key and ends.s3_secret_key:
        options |= {
            "fs.s3a.aws.credentials.provider": (
                "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
            ),
            "fs.s3a.access.key": ends.s3_access_key,
            "fs.s3a.secret.key": ends.s3_secret_key,
        }
    # Spark's default checkpoint manager (FileContext) refuses to create a file unless its
    # parent "directory" exists; on an object store that is a marker object, which S3Proxy's
    # filesystem backend does not list. The FileSystem-based manager writes without asking
    # (and renames by copying, as every manager does on an object store).
    return {f"spark.hadoop.{key}": value for key, value in options.items()} | {
        "spark.sql.streaming.checkpointFileManagerClass": (
            "org.apache.spark.sql.execution.streaming.checkpointing."
            "FileSystemBasedCheckpointFileManager"
        )
    }


def get_spark(
    settings: Settings | None = None, *, app_name: str = "lambda-demo", prefetch: bool = False
) -> SparkSession:
    """A SparkSession for 2 cores with the Kafka connector (reused if one is running).

    Its master is the profile's (``local[2]``, or the cluster profile's ``spark://`` master);
    checkpoints in S3 add the S3A jars and options. ``prefetch`` starts a local session that
    resolves the same jars without needing a running stack (nor its S3 credentials).
    The JVM's own console output goes to ``$LAMBDA_DEMO_HOME/logs/spark.log``.
    """
    from pyspark.sql import SparkSession

    settings = settings or get_settings()
    master = settings.spark_master if prefetch else settings.spark_url()
    s3a = on_s3(settings.checkpoints)
    packages = [kafka_connector(), *(s3a_packages() if s3a else [])]
    builder = (
        SparkSession.builder.appName(app_name)
        .master(master)
        .config("spark.jars.packages", ",".join(packages))
        .config("spark.jars.ivy", str(CACHE_DIR / "ivy"))
        .config("spark.jars.ivySettings", str(IVY_SETTINGS))
        .config("spark.driver.memory", settings.spark_driver_memory)
        # A record's day is its ingest time's day in this zone: to_date and day windows.
        .config("spark.sql.session.timeZone", SESSION_TIME_ZONE)
        # Few cores, small data: 200 shuffle partitions would be 200 tiny tasks per batch, and
        # each stateful one loads and commits a state store. One per core: one wave of tasks.
        # (A checkpoint keeps the number it started with.)
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.default.parallelism", "2")
        .config(
            "spark.sql.streaming.stateStore.providerClass",
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        )
        # A micro-batch's state commit writes the changes made, not a copy of the whole store.
        .config("spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled", "true")
        .config("spark.ui.enabled", "false" if os.environ.get("CI") else "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
    )
    if s3a:
        builder = builder.config("spark.jars.excludes", ",".join(S3A_EXCLUDES))
    if s3a and not prefetch:
        for key, value in s3a_options(settings).items():
            builder = builder.config(key, value)
    # The web UI binds to SPARK_LOCAL_IP, or to every interface without it (the driver's own
    # ports follow spark.driver.bindAddress above): the UI has no login, so loopback only.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if master.startswith("local") or settings.profile == "cluster":
        # Python workers must run this interpreter, which has lambda_demo installed
        # (pyspark reads PYSPARK_PYTHON, defaulting to whatever `python3` is on the PATH);
        # the cluster profile's executors run on this machine too.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    log = settings.log_file("spark")
    start = log.stat().st_size if log.exists() else 0
    try:
        with _console_to(log):
            spark = builder.getOrCreate()
    except Exception as exc:  # the reason (Ivy, Java) is in what the JVM wrote, not in exc
        java_version()  # no or an old Java: say what to install (checked only on failure)
        with log.open("rb") as handle:
            handle.seek(start)
            written = handle.read().decode("utf-8", "replace").splitlines()
        tail = [line for line in written if not line.startswith("\tat ")][-8:]  # no frames
        raise SparkStartError(
            f"Spark did not start ({type(exc).__name__}: {exc}). The JVM's last words, from "
            f"{log}:\n" + "\n".join(tail)
        ) from exc
    spark.sparkContext.setLogLevel("WARN")
    return spark


@contextlib.contextmanager
def _console_to(path: Path) -> Iterator[None]:
    """Point this process's stdout and stderr at ``path`` while a JVM may start.

    Spark's JVM writes its start-up chatter (Ivy resolution, log4j warnings, local paths)
    and later its WARN lines straight to the file descriptors it inherits, which the CLI
    prints and Jupyter shows under a cell. The JVM keeps the descriptors it was started with,
    so redirecting them for the start alone sends everything it writes afterwards to the log
    as well; errors still reach Python as exceptions.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with path.open("ab") as log:
        try:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            yield
        finally:
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
