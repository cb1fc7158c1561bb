"""``lambda_demo.stack.diagnose`` and ``stack status``: problems said in words, with what to do."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from lambda_demo.settings import Settings
from lambda_demo.stack import diagnose, manager

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def listener():
    """A socket of this process listening on a loopback port: 'another program'."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _fake_home(tmp_path: Path, *, port: int, pid: int | None, log: str = "") -> Path:
    home = tmp_path / "home"
    (home / "stack").mkdir(parents=True)
    (home / "logs").mkdir()
    state = {
        "kafka": {"port": port, "controller_port": port, "pid": pid},
        "s3": {"port": port, "pid": pid, "access_key": "a", "secret_key": "b"},
        "postgres": {"port": port, "pid": pid, "password": "c"},
    }
    (home / "stack" / "state.json").write_text(json.dumps(state))
    for name in state:
        (home / "logs" / f"{name}.log").write_text(log)
    return home


def test_port_taken_by_another_program_is_named(listener: int) -> None:
    problem = diagnose.port_problem(listener, own_pid=None)
    assert problem is not None
    assert f"port {listener} is taken by another program" in problem
    assert f"pid {os.getpid()}" in problem and "python" in problem
    assert "stack reset" in problem
    assert diagnose.listener_pids(listener) == [os.getpid()]
    assert diagnose.listening_addresses(listener) == ["127.0.0.1"]


def test_a_port_held_by_the_service_itself_or_by_nobody_is_fine(listener: int) -> None:
    assert diagnose.port_problem(listener, own_pid=os.getpid()) is None
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    free = sock.getsockname()[1]
    sock.close()
    assert diagnose.port_problem(free, own_pid=None) is None


def test_java_missing_says_what_to_install(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    problem = diagnose.java_problem()
    assert problem is not None and "Java 17+" in problem and "install" in problem


def test_disk_almost_full_is_reported_with_what_to_do(monkeypatch, tmp_path: Path) -> None:
    assert diagnose.disk_problem(tmp_path) is None or "disk almost full" in str(
        diagnose.disk_problem(tmp_path)
    )
    monkeypatch.setattr(diagnose.shutil, "disk_usage", lambda _p: Usage(10**12, 10**12, 120 << 20))
    problem = diagnose.disk_problem(tmp_path / "not" / "yet" / "created")
    assert problem is not None
    assert "only 120 MB free" in problem and "500 MB" in problem and "stack reset" in problem


def test_status_of_a_dead_stack_whose_port_was_taken(
    monkeypatch, tmp_path: Path, listener: int
) -> None:
    home = _fake_home(tmp_path, port=listener, pid=_dead_pid(), log="line 1\nFATAL: out of cheese")
    monkeypatch.setattr(diagnose.shutil, "disk_usage", lambda _p: Usage(10**12, 10**12, 50 << 20))
    statuses = {s.name: s for s in manager.status(Settings(home=home))}
    for name in ("kafka", "s3", "postgres"):
        problem = statuses[name].problem or ""
        assert not statuses[name].up
        assert "taken by another program" in problem, problem
        assert "died" in problem and "FATAL: out of cheese" in problem
        assert "lambda-demo stack up" in problem
        assert "disk almost full" in problem


def test_stack_status_cli_says_it_in_words(tmp_path: Path, listener: int) -> None:
    home = _fake_home(tmp_path, port=listener, pid=_dead_pid(), log="Address already in use")
    env = {**os.environ, "LAMBDA_DEMO_HOME": str(home)}
    out = subprocess.run(
        [sys.executable, "-m", "lambda_demo.cli", "stack", "status"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1, out.stderr
    assert "[DOWN] kafka" in out.stdout
    assert f"port {listener} is taken by another program" in out.stdout
    assert "Address already in use" in out.stdout


def test_a_stopped_service_is_not_called_dead(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    home = _fake_home(tmp_path, port=port, pid=None)
    statuses = manager.status(Settings(home=home))
    assert all(s.problem and s.problem.startswith("stopped") for s in statuses)
