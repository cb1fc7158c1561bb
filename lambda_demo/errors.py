"""One root exception for the project, and small subclasses per area.

Every message says what went wrong *and what to do*, because the reader is often a learner
at a workshop who has never seen a Kafka stack trace before.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lambda_demo.settings import Settings


class LambdaDemoError(Exception):
    """Root of every error this package raises on purpose."""


class SettingsError(LambdaDemoError):
    """A setting is missing or inconsistent for the chosen profile."""


class StackError(LambdaDemoError):
    """The embedded stack cannot start, or a service in it is not answering."""


class JavaMissingError(StackError):
    """No Java 17+ on the PATH (Kafka, S3Proxy and Spark all run on the JVM)."""


class SparkStartError(LambdaDemoError):
    """Spark's JVM did not start; its own output (in logs/spark.log) says why."""


class XApiError(LambdaDemoError):
    """The X API, or its local stand-in (``lambda-demo xapi serve``), refused or failed."""


class ServiceDownError(StackError):
    """Kafka, S3 or PostgreSQL refused, dropped or rejected the connection."""


class SparkQueryError(LambdaDemoError):
    """A Spark job or streaming query failed; the message is its root cause in one line."""


class UsageError(LambdaDemoError):
    """A path or value given on the command line cannot be used."""


# --- Known third-party failures, in words -----------------------------------------------------
#
# Library code lets psycopg2, kafka-python, botocore and pyspark raise their own exceptions: a
# notebook reader learns those names, and a caller can tell them apart. The command line turns
# them into one sentence at its boundary, with `explain`: which service, at which address, and
# what to do. The traceback goes to the log file (and to the console with ``-v``).

_TITLES = {"kafka": "Kafka", "s3": "S3", "postgres": "PostgreSQL"}

# libpq's words for a refused, unreachable or dropped connection.
_PG_DOWN = (
    "connection refused",
    "could not connect",
    "timeout expired",
    "is the server running",
    "could not translate host name",
    "server closed the connection unexpectedly",
    "terminating connection due to administrator command",
    "the database system is starting up",
    "the database system is shutting down",
    "connection already closed",
    "no connection to the server",
)


def explain(exc: BaseException, settings: Settings | None = None) -> LambdaDemoError | None:
    """The `LambdaDemoError` that ``exc`` stands for, or None if it is unexpected (a bug).

    ``settings`` (default: the process's) give the addresses and the profile the message
    names.

    Only the libraries already imported are consulted: an exception of a library that was
    never imported cannot have been raised, and importing pyspark to find out takes seconds.
    """
    if isinstance(exc, LambdaDemoError):
        return exc
    settings = settings or _settings()
    for module, translate in _TRANSLATORS:
        if module in sys.modules and (error := translate(exc, settings)) is not None:
            return error
    path_errors = (
        FileNotFoundError,
        FileExistsError,
        PermissionError,
        IsADirectoryError,
        NotADirectoryError,
    )
    if isinstance(exc, path_errors) and exc.filename is not None:
        return UsageError(f"Cannot use {exc.filename}: {exc.strerror}. Check the path.")
    return None


def service_down(service: str, settings: Settings | None = None) -> ServiceDownError:
    """``PostgreSQL at 127.0.0.1:5432 is not answering: start the stack with ...``."""
    settings = settings or _settings()
    return ServiceDownError(
        f"{_TITLES[service]}{_at(settings, service)} is not answering: "
        f"{_start_hint(settings, service)}."
    )


def _settings() -> Settings | None:
    """The process's settings, or None if they cannot be read (that is reported elsewhere)."""
    try:
        from lambda_demo.settings import get_settings

        return get_settings()
    except Exception:
        return None


def _at(settings: Settings | None, service: str) -> str:
    """`` at <address>`` of ``service`` as configured, or nothing if the settings cannot say."""
    try:
        ends = settings.endpoints()  # type: ignore[union-attr]
    except Exception:
        return ""
    address = {
        "kafka": ends.kafka_bootstrap,
        "s3": ends.s3_endpoint or "AWS",
        "postgres": f"{ends.warehouse_host}:{ends.warehouse_port}",
    }[service]
    return f" at {address}"


def _start_hint(settings: Settings | None, service: str) -> str:
    """What to do about a service that does not answer, for the active profile."""
    from lambda_demo.settings import STACK_PROFILES  # settings imports this module

    profile = settings.profile if settings is not None else "embedded"
    if profile in STACK_PROFILES:
        return "start the stack with `lambda-demo stack up`"
    if profile == "docker":
        return "start it with `docker compose -f docker/compose.yml --env-file docker/.env up -d`"
    variable = {
        "kafka": "LAMBDA_DEMO_KAFKA_BOOTSTRAP",
        "s3": "LAMBDA_DEMO_S3_ENDPOINT",
        "postgres": "LAMBDA_DEMO_WAREHOUSE_HOST",
    }[service]
    return f"check that it runs and that {variable} points at it"


def _first_line(exc: BaseException | str) -> str:
    return next((line.strip() for line in str(exc).splitlines() if line.strip()), "")


def _postgres(exc: BaseException, settings: Settings | None) -> LambdaDemoError | None:
    import psycopg2
    from psycopg2 import errors

    if isinstance(exc, psycopg2.OperationalError | psycopg2.InterfaceError):
        text = _first_line(exc)
        if any(phrase in str(exc).lower() for phrase in _PG_DOWN):
            return service_down("postgres", settings)
        if "authentication failed" in text or "no password supplied" in text:
            return ServiceDownError(
                f"PostgreSQL{_at(settings, 'postgres')} refused the login ({text}): "
                "set the password it expects (LAMBDA_DEMO_WAREHOUSE_PASSWORD)."
            )
        return ServiceDownError(
            f"PostgreSQL{_at(settings, 'postgres')} failed: {text}. "
            "`lambda-demo stack status` shows whether it is healthy."
        )
    if isinstance(exc, errors.UndefinedTable | errors.InvalidSchemaName):
        return LambdaDemoError(
            f"The warehouse is not set up yet ({_first_line(exc)}): run `lambda-demo batch` "
            "or `lambda-demo speed` first; each creates the tables."
        )
    return None


def _kafka(exc: BaseException, settings: Settings | None) -> LambdaDemoError | None:
    from kafka import errors

    refused = (errors.KafkaConnectionError, getattr(errors, "NoBrokersAvailable", ()))  # 2.x
    down = isinstance(exc, refused) or (
        isinstance(exc, errors.KafkaTimeoutError) and "bootstrap" in str(exc).lower()
    )
    if down:
        return service_down("kafka", settings)
    if isinstance(exc, errors.KafkaError):
        return ServiceDownError(
            f"Kafka{_at(settings, 'kafka')} failed: {type(exc).__name__}: {_first_line(exc)}. "
            "`lambda-demo stack status` shows whether it is healthy."
        )
    return None


def _s3(exc: BaseException, settings: Settings | None) -> LambdaDemoError | None:
    from botocore import exceptions

    unreachable = (
        exceptions.EndpointConnectionError,
        exceptions.ConnectTimeoutError,
        exceptions.ConnectionClosedError,
        exceptions.ReadTimeoutError,
    )
    if isinstance(exc, unreachable):
        return service_down("s3", settings)
    if isinstance(exc, exceptions.NoCredentialsError):
        return SettingsError(
            "No S3 credentials: set LAMBDA_DEMO_S3_ACCESS_KEY and LAMBDA_DEMO_S3_SECRET_KEY."
        )
    if isinstance(exc, exceptions.ClientError):
        error = exc.response.get("Error", {})
        code = error.get("Code", "?")
        message = error.get("Message") or _first_line(exc)
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403"):
            return ServiceDownError(
                f"S3{_at(settings, 's3')} rejected the credentials ({code}): check "
                "LAMBDA_DEMO_S3_ACCESS_KEY and LAMBDA_DEMO_S3_SECRET_KEY."
            )
        if code in ("NoSuchBucket", "404"):
            return ServiceDownError(
                f"S3{_at(settings, 's3')} has no such bucket ({message}): "
                "`lambda-demo stack up` creates it."
            )
        return ServiceDownError(f"S3{_at(settings, 's3')} answered {code}: {message}.")
    return None


def _spark(exc: BaseException, settings: Settings | None) -> LambdaDemoError | None:
    from py4j.protocol import Py4JError, Py4JNetworkError

    log = settings.log_file("spark") if settings is not None else "logs/spark.log"
    if isinstance(exc, Py4JNetworkError):
        return SparkQueryError(
            f"Spark's JVM stopped answering ({_first_line(exc)}): its last words are in {log}."
        )
    spark_errors: tuple[type[BaseException], ...] = (Py4JError,)
    if "pyspark.errors" in sys.modules:
        from pyspark.errors import PySparkException

        spark_errors += (PySparkException,)
    if isinstance(exc, spark_errors):
        return SparkQueryError(f"The Spark query failed: {spark_cause(_spark_text(exc))}")
    return None


def _spark_text(exc: BaseException) -> str:
    """The failure's message and causes, as Java wrote them, without asking for JVM frames."""
    parts = []
    current: object = exc
    while current is not None and len(parts) < 10:
        desc = getattr(current, "_desc", None)  # pyspark's CapturedException: Java's message
        if desc is None and (java := getattr(current, "java_exception", None)) is not None:
            try:  # py4j's Py4JJavaError: ask the JVM for the message, not the stack trace
                desc = str(java.toString())
            except Exception:
                desc = None
        parts.append(str(current) if desc is None else desc)
        current = getattr(current, "_cause", None)
    return "\nCaused by: ".join(parts)


_FRAME = re.compile(r"^\s*(at |\.\.\. \d+ more|File \"|JVM stacktrace:)")
_EXCEPTION = re.compile(r"^(?:Caused by:\s*)?([\w$]+(?:\.[\w$]+)+|[A-Z]\w*(?:Error|Exception)): ")


def spark_cause(text: str) -> str:
    """The telling line of a Spark failure: its root cause, without frames or tracebacks.

    A streaming query's error nests, for instance ``[STREAM_FAILED] Query ... terminated
    with exception: ... Caused by: org.apache.spark.api.python.PythonException: Traceback
    (most recent call last): File ... psycopg2.OperationalError: connection ... refused``.
    The reader needs the last link: the final exception line (an embedded Python traceback
    ends with one; a Java cause chain lists them in order), else the first line of the text.
    """
    text = text.split("\nJVM stacktrace:")[0]
    lines = [line for line in text.splitlines() if line.strip() and not _FRAME.match(line)]
    exceptions = [
        line.strip()
        for line in lines
        if _EXCEPTION.match(line.strip()) and "Traceback (most recent call last)" not in line
    ]
    best = exceptions[-1] if exceptions else (lines[0].strip() if lines else text.strip())
    best = re.sub(r"^Caused by:\s*", "", best)
    best = re.sub(r"\s*SQLSTATE: \w+\s*$", "", best)
    return best if len(best) <= 400 else best[:399] + "…"


def _pydantic(exc: BaseException, settings: Settings | None) -> LambdaDemoError | None:
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return None
    problems = "; ".join(
        f"LAMBDA_DEMO_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
    )
    return SettingsError(f"Invalid setting ({problems}): fix it in the environment or .env.")


_TRANSLATORS: list[
    tuple[str, Callable[[BaseException, Settings | None], LambdaDemoError | None]]
] = [
    ("psycopg2", _postgres),
    ("kafka", _kafka),
    ("botocore", _s3),
    ("py4j", _spark),
    ("pydantic", _pydantic),
]
