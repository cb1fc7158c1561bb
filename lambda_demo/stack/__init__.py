"""The embedded stack: real Kafka, an S3 server and PostgreSQL as local processes.

`manager` starts and stops them (`process` knows each one by pid and start time, `services`
how to launch it, `jvm` where its jars come from), `prefetch` downloads everything once, and
`doctor` holds the health rules (Java, free disk, who holds a port) that both
``lambda-demo doctor`` and ``stack status`` apply to say in words what is missing or wrong.
"""

from lambda_demo.stack.manager import (
    down,
    kill_service,
    reset,
    status,
    status_json,
    stop_service,
    up,
)

__all__ = ["down", "kill_service", "reset", "status", "status_json", "stop_service", "up"]
