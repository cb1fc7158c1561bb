"""Small process helpers shared by the embedded services: ports, processes, detached starts.

A pid alone does not name a process: after a reboot (or simply after a while) the pid in
``state.json`` may belong to another program. So each service is recorded with its
**identity**, the pid together with the process's start time, and a process is only ever
signalled when both still match.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import psutil

from lambda_demo.errors import StackError

#: Where service ports are picked: below the ephemeral range of Linux (32768-60999 by default),
#: macOS and Windows (49152-65535), from which the kernel picks the source port of every outgoing
#: connection. A service port inside that range can be taken, while its service is down, by any
#: client's connection, even by a client reconnecting to that very port (a TCP self-connect);
#: then the service cannot start again on it.
SERVICE_PORTS = range(20000, 32768)


def ephemeral_ports() -> range:
    """The kernel's range of source ports for outgoing connections (Linux; else the IANA one)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(49152, 65536)


def free_port() -> int:
    """A TCP port on loopback, outside the ephemeral range, that nothing listens on right now."""
    ephemeral = ephemeral_ports()
    candidates = [port for port in SERVICE_PORTS if port not in ephemeral]
    for port in random.sample(candidates, min(len(candidates), 200)):
        with socket.socket() as sock, contextlib.suppress(OSError):
            sock.bind(("127.0.0.1", port))
            return port
    first, last = SERVICE_PORTS.start, SERVICE_PORTS.stop - 1
    raise OSError(f"no free TCP port on 127.0.0.1 in {first}-{last}: stop some programs")


def port_open(port: int, *, timeout_seconds: float = 0.5) -> bool:
    """True if something accepts TCP connections on ``127.0.0.1:port``."""
    with (
        contextlib.suppress(OSError),
        socket.create_connection(("127.0.0.1", port), timeout_seconds),
    ):
        return True
    return False


def started_at(pid: int) -> float | None:
    """The process's start time (seconds since the epoch), or None if it is gone."""
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def adopt(pid: int | None, home: Path) -> float | None:
    """The start time of ``pid`` if it is a service of the stack in ``home``, else None.

    For a ``state.json`` written before start times were recorded: a process whose command
    line names the stack's home directory is taken for the service it was recorded as.
    """
    if not pid:
        return None
    try:
        process = psutil.Process(pid)
        if str(home) in " ".join(process.cmdline()):
            return process.create_time()
    except psutil.Error:
        pass
    return None


def running(pid: int | None, started: float | None) -> bool:
    """True if process ``pid`` runs and is the one that started at ``started``.

    A zombie (exited, not yet reaped by its parent) does not run for our purposes.
    """
    if not pid or started is None:
        return False
    try:
        process = psutil.Process(pid)
        if process.status() == psutil.STATUS_ZOMBIE:
            return False
        # Within 2 s: Linux derives start times from the boot time, which moves slightly when
        # the clock is stepped (NTP, a laptop or WSL2 waking up); a reused pid starts later.
        return abs(process.create_time() - started) < 2.0
    except psutil.Error:
        return False


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` readable by its owner only, from the first byte on.

    Written then chmod'ed, a secret is world-readable for a moment (and for good if the
    process dies in between); a temporary file created 0600 and renamed over ``path`` never
    is, and a reader sees the old file or the new one, never half of one.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.fchmod(fd, 0o600)  # an older leftover temporary file keeps its mode under O_CREAT
        with os.fdopen(fd, "w") as out:
            out.write(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def start_detached(
    command: list[str],
    *,
    log_file: Path,
    cwd: Path,
    env: dict[str, str] | None = None,
    preexec_fn: Callable[[], None] | None = None,
) -> int:
    """Start a service in its own session so it outlives the CLI that started it."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )
    return process.pid


def stop(
    pid: int | None,
    started: float | None,
    *,
    sig: int = signal.SIGTERM,
    timeout_seconds: float = 30.0,
) -> None:
    """Ask our process to stop, and kill it if it has not stopped within the timeout.

    Does nothing unless ``pid`` is still the process that started at ``started``.
    """
    if not running(pid, started):
        return
    assert pid is not None
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout_seconds
    while time.monotonic() < deadline:
        _reap(pid)
        if not running(pid, started):
            return
        time.sleep(0.2)
    if running(pid, started):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kill_tree(pid: int, started: float, *, what: str, timeout_seconds: float = 60.0) -> None:
    """SIGKILL our process ``pid`` and every process it started (a Spark worker's executors),
    and wait until all of them are gone: once this returns, the ports and files they held
    are free for a restart."""
    if not running(pid, started):
        return
    try:
        parent = psutil.Process(pid)
        family = [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return
    for process in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    deadline = time.monotonic() + timeout_seconds
    alive = family
    while alive and time.monotonic() < deadline:
        _reap(pid)
        _gone, alive = psutil.wait_procs(alive, timeout=0.2)
    if alive:
        raise StackError(f"{what} left processes running after SIGKILL: {alive}")


def _reap(pid: int) -> None:
    """Collect an exited child of this process so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def log_tail(log_file: Path, lines: int = 15) -> str:
    if not log_file.exists():
        return "(no log yet)"
    return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])
