"""Plain-words diagnoses for ``lambda-demo stack status``: what is wrong and what to do.

A learner at a workshop should not have to read a JVM stack trace to find out that another
program holds a port, that Java is missing, that a service died (and why, from its log) or
that the disk is full. Each check here is a small pure-ish function returning a sentence (or
None when all is well), so ``stack.manager.status`` can attach it to the service it concerns
and the unit tests can exercise each one without a running stack.
"""

from __future__ import annotations

import contextlib
import ipaddress
import shutil
from pathlib import Path

import psutil

from lambda_demo.errors import JavaMissingError

MIN_FREE_BYTES = 500 * 1024 * 1024
"""Below this much free space under ``LAMBDA_DEMO_HOME``, Kafka and PostgreSQL may stop."""


def java_problem() -> str | None:
    """Why the JVM services (Kafka, S3Proxy, Spark) cannot run, or None if Java 17+ is there."""
    from lambda_demo.stack import jvm

    try:
        jvm.java_version()
    except JavaMissingError as exc:
        return str(exc)
    return None


def disk_problem(home: Path, *, min_free_bytes: int = MIN_FREE_BYTES) -> str | None:
    """A warning when the file system holding ``home`` has less than ``min_free_bytes`` free."""
    path = Path(home)
    while not path.exists() and path != path.parent:
        path = path.parent  # before the first start, look at the nearest existing parent
    try:
        free = shutil.disk_usage(path).free
    except OSError:
        return None
    if free >= min_free_bytes:
        return None
    return (
        f"disk almost full: only {free // (1024 * 1024)} MB free under {home} "
        f"(need at least {min_free_bytes // (1024 * 1024)} MB). Kafka and PostgreSQL stop "
        f"writing when the disk fills up: free some space, or run `lambda-demo stack reset` "
        f"to delete this stack's data."
    )


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


def port_problem(port: int, *, own_pid: int | None) -> str | None:
    """Say who holds ``port`` when it is not the service's own process (``own_pid``)."""
    from lambda_demo.stack.process import port_open

    pids = [pid for pid in listener_pids(port) if pid != own_pid]
    if not pids and (own_pid is not None or not port_open(port)):
        return None
    who = (
        ", ".join(f"{process_name(pid)} (pid {pid})" for pid in pids)
        if pids
        else "a program this user cannot see"
    )
    return (
        f"port {port} is taken by another program: {who}. Stop that program, or run "
        f"`lambda-demo stack reset` to pick new ports (this deletes the stack's data)."
    )


def dead_service_problem(name: str, pid: int | None, log_tail: str) -> str:
    """A service whose recorded process is gone: say so, show its log, say what to do."""
    if pid is None:
        return f"stopped: run `lambda-demo stack up` to start {name}"
    return (
        f"died (pid {pid} is gone): run `lambda-demo stack up` to restart it on its ports. "
        f"The last lines of its log:\n{log_tail}"
    )


def stack_warnings(home: Path, *, java: bool) -> list[str]:
    """Problems that concern the whole stack: Java (for JVM services) and free disk space."""
    out = []
    if java and (problem := java_problem()):
        out.append(problem)
    if problem := disk_problem(home):
        out.append(problem)
    return out
