"""One root exception for the project, and small subclasses per area.

Every message says what went wrong *and what to do*, because the reader is often a learner
at a workshop who has never seen a Kafka stack trace before.
"""


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
