"""Plain-words diagnoses for ``lambda-demo stack status``: what is wrong and what to do.

A learner at a workshop should not have to read a JVM stack trace to find out that another
program holds a port, that Java is missing, that a service died (and why, from its log) or
that the disk is full. Each check here is a small pure-ish function returning a sentence (or
None when all is well), so ``stack.manager.status`` can attach it to the service it concerns
and the unit tests can exercise each one without a running stack.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from lambda_demo.errors import JavaMissingError

MIN_FREE_BYTES = 500 * 1024 * 1024
"""Below this much free space under ``LAMBDA_DEMO_HOME``, Kafka and PostgreSQL may stop."""

_TCP_LISTEN = "0A"


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

    Reads ``/proc/net/tcp{,6}`` for the listening socket's inode, then finds which process
    holds that inode among its file descriptors. Other users' processes may be invisible
    (no permission): the result is then empty even though the port is taken.
    """
    inodes = _listening_inodes(port)
    if not inodes:
        return []
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            for fd in (entry / "fd").iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith("socket:[") and target[8:-1] in inodes:
                        pids.append(int(entry.name))
                        break
    return sorted(pids)


def listening_addresses(port: int) -> list[str]:
    """The local addresses (``"127.0.0.1"``, ``"0.0.0.0"``, ``"::"``...) listening on ``port``."""
    return sorted({address for address, _inode in _listeners(port)})


def _listening_inodes(port: int) -> set[str]:
    return {inode for _address, inode in _listeners(port)}


def _listeners(port: int) -> list[tuple[str, str]]:
    found = []
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                    continue
                address_hex, port_hex = fields[1].split(":")
                if int(port_hex, 16) == port and len(address_hex) == width:
                    found.append((_address(address_hex), fields[9]))
    return found


def _address(hex_address: str) -> str:
    """Decode /proc/net/tcp's little-endian-per-word hex address."""
    raw = bytes.fromhex(hex_address)
    words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]
    data = b"".join(words)
    if len(data) == 4:
        return ".".join(str(b) for b in data)
    if data[:12] == b"\x00" * 10 + b"\xff\xff":
        return ".".join(str(b) for b in data[12:])
    import ipaddress

    return str(ipaddress.IPv6Address(data))


def process_name(pid: int) -> str:
    """A short description of a process: its command line, cut to 80 characters."""
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return f"pid {pid}"
    command = raw.replace(b"\x00", b" ").decode(errors="replace").strip() or f"pid {pid}"
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
