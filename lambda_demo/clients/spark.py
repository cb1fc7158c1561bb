"""One function that returns a local SparkSession wired to Kafka.

The Kafka source is not part of pyspark: it is the ``spark-sql-kafka-0-10`` connector on
Maven Central, fetched by Spark's own Ivy resolver (``spark.jars.packages``) into a cache,
at exactly the version of the installed pyspark. A mismatched connector is the most common
"ClassNotFoundException" in Spark + Kafka tutorials.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from lambda_demo.errors import SparkStartError
from lambda_demo.settings import Settings, get_settings
from lambda_demo.stack.jvm import CACHE_DIR, IVY_SETTINGS, java_version

if TYPE_CHECKING:
    from pyspark.sql import SparkSession

logger = logging.getLogger(__name__)


def kafka_connector() -> str:
    import pyspark

    return f"org.apache.spark:spark-sql-kafka-0-10_2.13:{pyspark.__version__}"


def get_spark(settings: Settings | None = None, *, app_name: str = "lambda-demo") -> SparkSession:
    """A SparkSession for 2 cores with the Kafka connector (reused if one is running).

    The JVM's own console output goes to ``$LAMBDA_DEMO_HOME/logs/spark.log``.
    """
    from pyspark.sql import SparkSession

    settings = settings or get_settings()
    builder = (
        SparkSession.builder.appName(app_name)
        .master(settings.spark_master)
        .config("spark.jars.packages", kafka_connector())
        .config("spark.jars.ivy", str(CACHE_DIR / "ivy"))
        .config("spark.jars.ivySettings", str(IVY_SETTINGS))
        .config("spark.driver.memory", settings.spark_driver_memory)
        .config("spark.sql.session.timeZone", "UTC")
        # Few cores, small data: 200 shuffle partitions would be 200 tiny tasks per batch.
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.default.parallelism", "2")
        .config(
            "spark.sql.streaming.stateStore.providerClass",
            "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        )
        .config("spark.ui.enabled", "false" if os.environ.get("CI") else "true")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
    )
    # The web UI binds to SPARK_LOCAL_IP, or to every interface without it (the driver's own
    # ports follow spark.driver.bindAddress above): the UI has no login, so loopback only.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    if settings.spark_master.startswith("local"):
        # Python workers must run this interpreter, which has lambda_demo installed
        # (pyspark reads PYSPARK_PYTHON, defaulting to whatever `python3` is on the PATH).
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
