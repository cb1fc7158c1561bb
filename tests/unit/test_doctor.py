"""The health rules in ``lambda_demo.stack.doctor``, the checklist built on them, and
``stack status``, which applies the same rules to a running stack.

The live checks (a private stack and a round trip) are exercised by running the command;
here every rule and check gets the inputs a participant's laptop might produce, and
``stack status`` a fake stack whose processes are gone.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections import namedtuple
from pathlib import Path

import pytest

from lambda_demo.errors import JavaMissingError, StackError
from lambda_demo.settings import Settings
from lambda_demo.stack import doctor, jvm, manager, prefetch
from lambda_demo.stack.doctor import GB, Problem, Verdict

Usage = namedtuple("Usage", "total used free")


@pytest.fixture
def listener():
    """A socket of this process listening on a loopback port: 'another program'."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def _free_port() -> int:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


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


def _free_bytes(monkeypatch: pytest.MonkeyPatch, free: int) -> None:
    monkeypatch.setattr(doctor.shutil, "disk_usage", lambda _p: Usage(10**13, 10**13, free))


# --- a problem in one sentence ---------------------------------------------------------------


def test_a_problem_reads_as_one_sentence_with_its_fix() -> None:
    problem = Problem("port 1 is taken by another program: x (pid 2)", "stop that program.")
    assert str(problem) == "port 1 is taken by another program: x (pid 2). Stop that program."


# --- the checklist's verdicts ----------------------------------------------------------------


def test_python_versions() -> None:
    assert doctor.python_check((3, 11, 7)).ok
    assert doctor.python_check((3, 13, 0)).ok
    old = doctor.python_check((3, 10, 12))
    assert not old.ok
    assert "3.10.12" in old.detail and "3.11+" in old.detail
    assert "make env" in old.fix


@pytest.mark.parametrize(
    ("major", "ok"), [(17, True), (21, True), (16, False), (11, False), (None, False)]
)
def test_java_versions(major: int | None, ok: bool) -> None:
    verdict = doctor.java_check(major)
    assert verdict.ok is ok
    if not ok:
        assert "openjdk-17" in verdict.fix
        assert (
            ("no `java`" in verdict.detail)
            if major is None
            else (f"Java {major}" in verdict.detail)
        )


@pytest.mark.parametrize("major", [22, 25])
def test_a_java_newer_than_spark_supports_names_the_fix(major: int) -> None:
    verdict = doctor.java_check(major)
    assert not verdict.ok
    assert f"Java {major}" in verdict.detail and "17 and 21" in verdict.detail
    assert "OpenJDK 21 or 17" in verdict.fix


def test_available_memory_is_a_plausible_number_of_bytes() -> None:
    with open("/proc/meminfo") as meminfo:  # the Linux figure, read independently
        total = int(next(line for line in meminfo if line.startswith("MemTotal:")).split()[1])
    available = doctor.available_memory()
    assert available is not None and 0 < available <= total * 1024


def test_memory_threshold_is_four_gigabytes() -> None:
    assert doctor.memory_check(4 * GB).ok
    low = doctor.memory_check(int(2.5 * GB))
    assert not low.ok
    assert "2.5 GB available" in low.detail
    assert "close other programs" in low.fix
    assert doctor.memory_check(None).ok  # unmeasurable is not the participant's fault


def test_disk_threshold_is_two_gigabytes(tmp_path: Path) -> None:
    assert doctor.disk_check(2 * GB, tmp_path).ok
    assert "2 GB free at" in doctor.disk_check(2 * GB, tmp_path).detail
    full = doctor.disk_check(2 * GB - 1, tmp_path)
    assert not full.ok
    assert str(tmp_path) in full.detail and "need at least 2 GB" in full.detail
    assert "LAMBDA_DEMO_HOME" in full.fix and "stack reset" in full.fix


def test_disk_rule_speaks_megabytes_below_a_gigabyte(tmp_path: Path) -> None:
    problem = doctor.disk_problem(120 << 20, tmp_path, need=500 << 20)
    assert problem is not None
    assert "only 120 MB free" in problem.what and "need at least 500 MB" in problem.what
    assert "stack reset" in str(problem)
    assert doctor.disk_problem(500 << 20, tmp_path, need=500 << 20) is None


def test_unmeasurable_disk_is_not_the_participants_fault(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(_path: Path) -> Usage:
        raise PermissionError("no")

    monkeypatch.setattr(doctor.shutil, "disk_usage", unreadable)
    assert doctor.free_disk(tmp_path) is None
    verdict = doctor.disk_check(None, tmp_path)
    assert verdict.ok and "could not measure" in verdict.detail and "2 GB" in verdict.detail
    assert doctor.disk_problem(None, tmp_path, need=doctor.MIN_FREE_DISK_TO_RUN) is None


def test_free_disk_looks_at_the_nearest_existing_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[Path] = []
    monkeypatch.setattr(
        doctor.shutil, "disk_usage", lambda path: asked.append(path) or Usage(1, 0, 123)
    )
    assert doctor.free_disk(tmp_path / "not" / "yet" / "created") == 123
    assert asked == [tmp_path]


def test_ports_green_without_a_stack_or_when_ours() -> None:
    assert doctor.ports_check([], lambda port, pid: None).ok
    ours = doctor.ports_check([("kafka", 9092, 123)], lambda port, pid: None)
    assert ours.ok and "9092" in ours.detail


def test_ports_red_names_the_service_and_passes_the_diagnosis_on() -> None:
    seen: list[tuple[int, int | None]] = []

    def problem_for(port: int, pid: int | None) -> Problem | None:
        seen.append((port, pid))
        return Problem(f"port {port} is taken by postgres (pid 9)", "stop it.") if port else None

    verdict = doctor.ports_check([("s3", 0, 7), ("postgres", 5432, None)], problem_for)
    assert not verdict.ok
    assert verdict.detail == "postgres's port 5432 is taken by postgres (pid 9)"
    assert verdict.fix == "stop it."
    assert seen == [(0, 7), (5432, None)]  # each port judged against its own service's pid


def test_ports_check_with_the_real_rule_names_the_holder(listener: int) -> None:
    verdict = doctor.ports_check(
        [("kafka", listener, None), ("s3", listener, None)],
        lambda port, pid: doctor.port_problem(port, own_pid=pid),
    )
    assert not verdict.ok
    assert f"kafka's port {listener} is taken by another program" in verdict.detail
    assert f"(pid {os.getpid()})" in verdict.detail and "(and 1 more)" in verdict.detail
    assert "stack reset" in verdict.fix
    ours = doctor.ports_check(
        [("kafka", listener, os.getpid())], lambda port, pid: doctor.port_problem(port, own_pid=pid)
    )
    assert ours.ok


def test_recorded_ports_reads_every_port_and_pid(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    assert doctor.recorded_ports(settings) == []
    settings.state_file.parent.mkdir(parents=True)
    state = {
        "kafka": {"port": 1, "controller_port": 2, "pid": 10},
        "s3": {"port": 3, "access_key": "x"},
    }
    settings.state_file.write_text(json.dumps(state))
    assert doctor.recorded_ports(settings) == [("kafka", 1, 10), ("kafka", 2, 10), ("s3", 3, None)]


@pytest.mark.parametrize(
    ("missing", "ok", "words"),
    [([], True, "all jars"), (None, False, "never downloaded"), (["/m2/a.jar"], False, "a.jar")],
)
def test_runtime_cache(missing: list[str] | None, ok: bool, words: str) -> None:
    verdict = doctor.runtime_cache_check("Kafka jars", missing)
    assert verdict.ok is ok
    assert words in verdict.detail
    if not ok:
        assert "lambda-demo prefetch" in verdict.fix


def test_connector_cache() -> None:
    assert doctor.connector_check("4.2.0", True).ok
    red = doctor.connector_check("4.2.0", False)
    assert not red.ok and "4.2.0" in red.detail and "lambda-demo prefetch" in red.fix


def test_sample(tmp_path: Path) -> None:
    assert doctor.sample_check(tmp_path / "s.jsonl.gz", True).ok
    red = doctor.sample_check(tmp_path / "s.jsonl.gz", False)
    assert not red.ok and "git checkout" in red.fix and "sample generate" in red.fix


def test_blocked_check_is_red_and_says_why() -> None:
    verdict = doctor.blocked("Stack starts", ["Java", "Kafka jars cached"])
    assert not verdict.ok
    assert "Java, Kafka jars cached" in verdict.detail


def test_render_marks_colour_and_fix() -> None:
    green = Verdict("Java", True, "Java 17")
    red = Verdict("Disk", False, "1.0 GB free", "free some space")
    assert green.render() == f"✔ {'Java':<22} Java 17"
    assert red.render().splitlines() == [f"✘ {'Disk':<22} 1.0 GB free", "    fix: free some space"]
    assert "\033[32m✔\033[0m" in green.render(colour=True)
    assert "\033[31m✘\033[0m" in red.render(colour=True)


def test_colour_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    class Tty:
        def isatty(self) -> bool:
            return True

    monkeypatch.delenv("NO_COLOR", raising=False)
    assert doctor.use_colour(Tty())
    assert not doctor.use_colour(object())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not doctor.use_colour(Tty())


def test_missing_jars_reads_the_recorded_classpath(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefetch.jvm, "CACHE_DIR", tmp_path)
    assert prefetch.missing_jars("kafka") is None
    present = tmp_path / "present.jar"
    present.write_bytes(b"")
    cp_file = prefetch.classpath_file("kafka")
    cp_file.parent.mkdir(parents=True)
    cp_file.write_text(os.pathsep.join([str(present), str(tmp_path / "gone.jar")]))
    assert prefetch.missing_jars("kafka") == [str(tmp_path / "gone.jar")]


def test_connector_cached_needs_metadata_and_jar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(prefetch.jvm, "CACHE_DIR", tmp_path)
    assert not prefetch.connector_cached("9.9.9")
    prefetch.connector_jar("9.9.9").parent.mkdir(parents=True)
    prefetch.connector_jar("9.9.9").write_bytes(b"")
    assert not prefetch.connector_cached("9.9.9")
    metadata = tmp_path / "ivy/cache/org.apache.spark/spark-sql-kafka-0-10_2.13/ivy-9.9.9.xml"
    metadata.parent.mkdir(parents=True)
    metadata.write_text("<ivy-module/>")
    assert prefetch.connector_cached("9.9.9")


def test_live_checks_are_skipped_when_a_prerequisite_is_red(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without Java the stack cannot start, and without caches it would download: skip both."""
    monkeypatch.setattr(doctor, "java_major", lambda: None)
    monkeypatch.setattr(doctor, "_live_checks", lambda quick: pytest.fail("must not start"))
    verdicts = {v.name: v for v in doctor.doctor(Settings(home=tmp_path))}
    assert not verdicts["Java"].ok
    assert not verdicts["Stack starts"].ok and "Java" in verdicts["Stack starts"].detail
    assert not verdicts["Round trip"].ok
    quick = [v.name for v in doctor.doctor(Settings(home=tmp_path), quick=True)]
    assert "Round trip" not in quick


# --- the same rules in `stack status` and in the JVM starters -----------------------------------


def test_jvm_starters_refuse_a_missing_or_old_java_in_the_rules_words(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(jvm, "java_major", lambda: 11)
    with pytest.raises(JavaMissingError) as old:
        jvm.java_version()
    assert str(old.value).startswith("Java 11 found, but 17+ is needed. Install OpenJDK 17 (")
    monkeypatch.setattr(jvm, "java_major", lambda: None)
    with pytest.raises(JavaMissingError) as missing:
        jvm.java_version()
    assert str(missing.value).startswith("no `java` on the PATH (Java 17+ is needed")
    # Too new for Spark is a warning (doctor, stack status), not a refusal to start Kafka.
    monkeypatch.setattr(jvm, "java_major", lambda: 25)
    assert jvm.java_version() == 25


def test_status_puts_the_java_problem_on_the_jvm_services_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    _free_bytes(monkeypatch, 100 * GB)
    statuses = {s.name: s for s in manager.status(Settings(home=tmp_path / "home"))}
    for name in ("kafka", "s3"):
        problem = statuses[name].problem or ""
        assert "no `java` on the PATH (Java 17+ is needed" in problem, problem
        assert "Install OpenJDK 17" in problem
    assert statuses["postgres"].problem == "never started: run `lambda-demo stack up`"


def test_status_warns_about_disk_only_when_a_running_stack_is_about_to_stop(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """doctor asks for room for a workshop; status only for the stack to keep writing."""
    home = tmp_path / "not" / "yet" / "created"
    _free_bytes(monkeypatch, GB)
    assert not doctor.disk_check(doctor.free_disk(home), home).ok
    assert not any("disk" in (s.problem or "") for s in manager.status(Settings(home=home)))
    _free_bytes(monkeypatch, 120 << 20)
    for s in manager.status(Settings(home=home)):
        assert "low on disk space: only 120 MB free" in (s.problem or ""), s
        assert "need at least 500 MB" in (s.problem or "") and "stack reset" in (s.problem or "")


def test_port_taken_by_another_program_is_named(listener: int) -> None:
    problem = doctor.port_problem(listener, own_pid=None)
    assert problem is not None
    assert f"port {listener} is taken by another program" in str(problem)
    assert f"pid {os.getpid()}" in str(problem) and "python" in str(problem)
    assert "stack reset" in str(problem)
    assert doctor.listener_pids(listener) == [os.getpid()]
    assert doctor.listening_addresses(listener) == ["127.0.0.1"]


def test_a_port_held_by_the_service_itself_or_by_nobody_is_fine(listener: int) -> None:
    assert doctor.port_problem(listener, own_pid=os.getpid()) is None
    assert doctor.port_problem(_free_port(), own_pid=None) is None


def test_up_refuses_a_recorded_port_held_by_another_program(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, listener: int
) -> None:
    monkeypatch.setattr(jvm, "java_version", lambda: 17)
    home = _fake_home(tmp_path, port=listener, pid=_dead_pid())
    with pytest.raises(StackError) as taken:
        manager.up(Settings(home=home))
    assert str(taken.value) == (
        f"Port {listener} recorded for kafka is taken by another program. Stop that program, "
        "or run `lambda-demo stack reset` to pick new ports (this deletes the stack's data)."
    )


def test_status_of_a_dead_stack_whose_port_was_taken(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, listener: int
) -> None:
    home = _fake_home(tmp_path, port=listener, pid=_dead_pid(), log="line 1\nFATAL: out of cheese")
    _free_bytes(monkeypatch, 50 << 20)
    statuses = {s.name: s for s in manager.status(Settings(home=home))}
    for name in ("kafka", "s3", "postgres"):
        problem = statuses[name].problem or ""
        assert not statuses[name].up
        assert "taken by another program" in problem, problem
        assert "died" in problem and "FATAL: out of cheese" in problem
        assert "lambda-demo stack up" in problem
        assert "low on disk space" in problem


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
    home = _fake_home(tmp_path, port=_free_port(), pid=None)
    statuses = manager.status(Settings(home=home))
    assert all(s.problem and s.problem.startswith("stopped") for s in statuses)
