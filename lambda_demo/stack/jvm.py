"""Java checks and JVM artifacts resolved from Maven Central with the Ivy that pyspark ships.

The Kafka broker and S3Proxy are ordinary Maven Central artifacts. Rather than downloading
release tarballs, or asking learners to install Maven, we let Apache Ivy (the resolver Spark
itself uses for ``spark.jars.packages``, shipped inside pyspark as ``jars/ivy-*.jar``) resolve
each one with its dependencies. One resolver and one cache, ``~/.cache/lambda-demo/ivy``,
serve every JVM artifact of the tutorial, Spark's Kafka connector included; the classpath of
each runtime is recorded under ``~/.cache/lambda-demo/jvm``, so the second start needs no
network at all.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
from pathlib import Path

from lambda_demo.errors import JavaMissingError, StackError

logger = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
S3PROXY_VERSION = "2.6.0"

ARTIFACTS: dict[str, list[str]] = {
    # kafka-tools carries ProducerPerformance, used by the benchmarks as the broker's own baseline.
    "kafka": [
        f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}",
        f"org.apache.kafka:kafka-tools:{KAFKA_VERSION}",
        # Kafka logs through SLF4J 2; pin the API so resolution does not pick a 1.7 jar from a
        # transitive dependency, and bind it to Log4j 2 (configured by stack/log4j2.properties).
        "org.slf4j:slf4j-api:2.0.17",
        "org.apache.logging.log4j:log4j-slf4j2-impl:2.24.3",
        "org.apache.logging.log4j:log4j-core:2.24.3",
    ],
    "s3proxy": [f"org.gaul:s3proxy:{S3PROXY_VERSION}"],
}

CACHE_DIR = Path(os.environ.get("LAMBDA_DEMO_CACHE", Path.home() / ".cache" / "lambda-demo"))

IVY_SETTINGS = Path(__file__).resolve().parent / "ivysettings.xml"

_IVY_MODULE = """<ivy-module version="2.0">
  <info organisation="lambda-demo" module="{name}-runtime"/>
  <dependencies>
{deps}
  </dependencies>
</ivy-module>
"""


def java_major() -> int | None:
    """The major version of ``java`` on the PATH (0 if unreadable, None if absent)."""
    java = shutil.which("java")
    if java is None:
        return None
    out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else 0


def java_version() -> int:
    """The major version of ``java`` on the PATH; raises with `doctor.java_problem`'s install
    hint if it is absent or too old to run anything.

    A Java newer than `doctor.MAX_JAVA` is not refused here: only Spark is known to need an
    older one, and ``doctor`` and ``stack status`` name that problem.
    """
    from lambda_demo.stack import doctor  # doctor imports this module

    major = java_major()
    if major is None or major < doctor.MIN_JAVA:
        raise JavaMissingError(str(doctor.java_problem(major)))
    return major


def classpath(name: str) -> str:
    """The classpath for one runtime (``kafka`` or ``s3proxy``), resolved once and cached."""
    coordinates = ARTIFACTS[name]
    key = hashlib.sha256("\n".join(coordinates).encode()).hexdigest()[:12]
    workdir = CACHE_DIR / "jvm" / f"{name}-{key}"
    cp_file = workdir / "classpath.txt"
    if cp_file.exists():
        cp = cp_file.read_text().strip()
        if cp and all(Path(jar).exists() for jar in cp.split(os.pathsep)):
            return cp
    workdir.mkdir(parents=True, exist_ok=True)
    deps = "\n".join(_dependency_xml(c) for c in coordinates)
    (workdir / "ivy.xml").write_text(_IVY_MODULE.format(name=name, deps=deps))
    logger.info("resolving %s jars with Ivy (first run only)", name)
    java_version()
    result = subprocess.run(
        [
            "java",
            "-jar",
            str(ivy_jar()),
            "-settings",
            str(IVY_SETTINGS),
            "-cache",
            str(CACHE_DIR / "ivy" / "cache"),
            "-ivy",
            str(workdir / "ivy.xml"),
            "-confs",
            "default",
            "-cachepath",
            str(partial := cp_file.with_suffix(".partial")),
        ],
        cwd=workdir,
        capture_output=True,
        text=True,
    )
    if result.returncode != 0 or not partial.exists() or not partial.read_text().strip():
        tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
        raise StackError(f"Ivy could not resolve the {name} jars:\n{tail}")
    partial.replace(cp_file)  # only a complete classpath is ever trusted
    return cp_file.read_text().strip()


def ivy_jar() -> Path:
    """The Ivy jar inside the installed pyspark (the one Spark resolves its packages with)."""
    import pyspark

    found = sorted((Path(pyspark.__file__).parent / "jars").glob("ivy-*.jar"))
    if not found:
        raise StackError("pyspark's jars/ivy-*.jar is missing: reinstall pyspark (`make env`).")
    return found[-1]


def _dependency_xml(coordinate: str) -> str:
    group, artifact, version = coordinate.split(":")
    return f'    <dependency org="{group}" name="{artifact}" rev="{version}" conf="default"/>'
