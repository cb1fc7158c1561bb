"""`lambda-demo doctor`'s verdicts: each check's colour and fix text, from fake measurements.

The live checks (a private stack and a round trip) are exercised by running the command;
here every pure check gets the inputs a participant's laptop might produce.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from lambda_demo.settings import Settings
from lambda_demo.stack import doctor, prefetch
from lambda_demo.stack.doctor import GB, Verdict


def test_python_versions() -> None:
    assert doctor.python_check((3, 11, 7)).ok
    assert doctor.python_check((3, 13, 0)).ok
    old = doctor.python_check((3, 10, 12))
    assert not old.ok
    assert "3.10.12" in old.detail and "3.11+" in old.detail
    assert "make env" in old.fix


@pytest.mark.parametrize(("major", "ok"), [(17, True), (21, True), (11, False), (None, False)])
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
    full = doctor.disk_check(GB // 2, tmp_path)
    assert not full.ok
    assert str(tmp_path) in full.detail
    assert "LAMBDA_DEMO_HOME" in full.fix and "stack reset" in full.fix


def test_free_disk_looks_at_the_nearest_existing_parent(tmp_path: Path) -> None:
    assert doctor.free_disk(tmp_path / "not" / "yet" / "created") > 0


def test_ports_green_without_a_stack_or_when_ours() -> None:
    assert doctor.ports_check([], lambda port, pid: None).ok
    ours = doctor.ports_check([("kafka", 9092, 123)], lambda port, pid: None)
    assert ours.ok and "9092" in ours.detail


def test_ports_red_names_the_service_and_passes_the_diagnosis_on() -> None:
    seen: list[tuple[int, int | None]] = []

    def problem_for(port: int, pid: int | None) -> str | None:
        seen.append((port, pid))
        return "port 5432 is taken by another program: postgres (pid 9). Stop it." if port else None

    verdict = doctor.ports_check([("s3", 0, 7), ("postgres", 5432, None)], problem_for)
    assert not verdict.ok
    assert "postgres's port 5432" in verdict.detail
    assert verdict.fix.startswith("port 5432 is taken")
    assert seen == [(0, 7), (5432, None)]  # each port judged against its own service's pid


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
