"""Shared helpers: a private stack, isolated names, repeated timing, memory and disk probes."""

from __future__ import annotations

import contextlib
import cProfile
import io
import os
import platform
import pstats
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil

from lambda_demo import stack
from lambda_demo.clients.kafka_io import ensure_topics
from lambda_demo.clients.storage import ensure_bucket
from lambda_demo.clients.warehouse import ensure_schema
from lambda_demo.settings import Settings, isolated_settings


@contextlib.contextmanager
def private_stack() -> Iterator[Path]:
    """Start Kafka, S3Proxy and PostgreSQL in a fresh home; stop and delete them at the end.

    ``tempfile.mkdtemp``: under root, PostgreSQL runs as an unprivileged user that must be
    able to traverse the path (the same reason as ``tests/conftest.py``).
    """
    home = Path(tempfile.mkdtemp(prefix="lambda-demo-bench-"))
    settings = Settings(home=home)
    try:
        stack.up(settings)
        yield home
    finally:
        stack.reset(settings)


def isolated(home: Path, **overrides: object) -> Settings:
    """Settings with their own topic, bucket, schema and checkpoints, resources created."""
    settings = isolated_settings(home, prefix="bench", **overrides)
    ensure_topics(settings)
    ensure_bucket(settings)
    ensure_schema(settings)
    return settings


def profiled(fn: Callable[[], object], top: int = 15) -> str:
    """cProfile of one call (this thread only): the top entries by own time."""
    profiler = cProfile.Profile()
    profiler.runcall(fn)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).strip_dirs().sort_stats("tottime").print_stats(top)
    lines = out.getvalue().splitlines()
    start = next(i for i, line in enumerate(lines) if "ncalls" in line)
    total = next((line.strip() for line in lines if "function calls" in line), "")
    return "\n".join([total, "", *lines[start:]]).rstrip()


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def summary(values: list[float]) -> dict[str, float]:
    """min / median / max of repeated measurements (min: least disturbed by the neighbours)."""
    return {
        "min": min(values),
        "median": statistics.median(values),
        "max": max(values),
        "runs": values,
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def stack_pids(settings: Settings) -> dict[str, int]:
    import json

    state = json.loads(settings.state_file.read_text())
    return {name: entry["pid"] for name, entry in state.items() if entry.get("pid")}


def _tree_rss(pid: int) -> int:
    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            total += p.memory_info().rss
    return total


class MemorySampler:
    """Samples the RSS of each stack service, Spark's JVM and this process every 0.5 s; keeps the
    peaks."""

    def __init__(self, settings: Settings) -> None:
        self.pids = stack_pids(settings)
        self.peaks_mb: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        rss = {name: _tree_rss(pid) for name, pid in self.pids.items()}
        me = psutil.Process()
        # This process alone, sampled: ``ru_maxrss`` would be a high-water mark since start.
        rss["python"] = me.memory_info().rss
        rss["spark_jvm"] = sum(
            c.memory_info().rss for c in me.children(recursive=True) if c.name() == "java"
        )
        for name, value in rss.items():
            self.peaks_mb[name] = max(self.peaks_mb.get(name, 0.0), value / 2**20)

    def _run(self) -> None:
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                self._sample()
            self._stop.wait(0.5)

    def __enter__(self) -> MemorySampler:
        # Python rarely hands freed memory back to the OS, so this process's peak includes what
        # earlier stages left behind; its RSS at the start tells the two apart.
        self.python_start_mb = psutil.Process().memory_info().rss / 2**20
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def du_bytes(root: Path, contains: str = "") -> int:
    """Disk blocks used by the files under ``root`` whose path contains ``contains``.

    Blocks, not file sizes: Kafka preallocates sparse 10 MiB index files per segment.
    """
    total = 0
    for dirpath, _, files in os.walk(root):
        if contains in dirpath:
            total += sum((Path(dirpath) / f).stat().st_blocks * 512 for f in files)
    return total


def environment(home: Path | None = None) -> dict[str, object]:
    """Cores, memory and the versions of everything measured."""
    import pyspark

    from lambda_demo.stack import jvm
    from lambda_demo.stack.services import _pg_version

    java = subprocess.run(["java", "-version"], capture_output=True, text=True).stderr
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "java": java.splitlines()[0] if java else "?",
        "kafka": jvm.KAFKA_VERSION,
        "s3proxy": jvm.S3PROXY_VERSION,
        "spark": pyspark.__version__,
        "postgresql": _pg_version(),
        "platform": platform.platform(),
    }
