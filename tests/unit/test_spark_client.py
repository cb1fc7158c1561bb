"""Starting Spark without a stack: what a learner sees when Java is missing.

(Moved from ``tests/integration/test_speed.py``: it starts no service.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_spark_without_java_says_what_to_install(tmp_path: Path) -> None:
    """No Java on the PATH: the error names the fix, not pyspark's "gateway exited"."""
    env = {
        **os.environ,
        "PATH": str(Path(sys.executable).parent),
        "LAMBDA_DEMO_HOME": str(tmp_path),
    }
    code = "from lambda_demo.clients.spark import get_spark; get_spark()"
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode != 0
    assert "JavaMissingError: no `java` on the PATH (Java 17+ is needed" in done.stderr
    assert "Install OpenJDK 17" in done.stderr
