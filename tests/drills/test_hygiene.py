"""Hygiene drills: no secrets in the repository, parameterised SQL, services on loopback only."""

from __future__ import annotations

import ipaddress
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lambda_demo.settings import REPO_ROOT
from lambda_demo.stack import doctor

pytestmark = [pytest.mark.drills, pytest.mark.integration]

KEY_PATTERNS = {
    "AWS access key id": re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key block": re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    "aws_secret_access_key assignment": re.compile(
        rb"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{30,}"
    ),
    "bearer token": re.compile(rb"Bearer\s+[A-Za-z0-9%._~+/-]{40,}"),
    "X bearer token": re.compile(rb"\bAAAAAAAAAAAAAAAAAAAAA[A-Za-z0-9%]{30,}"),
}


def _tracked_files() -> list[Path]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=REPO_ROOT, capture_output=True, check=True
    ).stdout
    return [REPO_ROOT / name.decode() for name in out.split(b"\0") if name]


def _notebook_outputs(path: Path) -> bytes:
    cells = json.loads(path.read_text()).get("cells", [])
    return json.dumps([c.get("outputs", []) for c in cells]).encode()


def test_scanner_finds_what_it_looks_for() -> None:
    """The patterns fire on planted examples, so a clean scan means something."""
    planted = (
        b"AKIA" + b"ABCDEFGHIJKLMNOP\n"
        b"-----BEGIN RSA PRIVATE" + b" KEY-----\n"  # split so this file does not match itself
        b"aws_secret_access_key = " + b"a" * 40 + b"\n"
        b"Authorization: Bearer " + b"x" * 60 + b"\n"
    )
    found = {name for name, pattern in KEY_PATTERNS.items() if pattern.search(planted)}
    assert found == set(KEY_PATTERNS) - {"X bearer token"}


def test_no_key_shaped_strings_in_tracked_files_or_notebook_outputs() -> None:
    hits = []
    for path in _tracked_files():
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.suffix == ".ipynb":
            data += _notebook_outputs(path)
        for name, pattern in KEY_PATTERNS.items():
            hits.extend(f"{path.relative_to(REPO_ROOT)}: {name}" for _ in pattern.finditer(data))
    assert hits == []


def test_the_running_stacks_generated_credentials_are_in_no_tracked_file(
    stack_home: Path,
) -> None:
    state = json.loads((stack_home / "stack" / "state.json").read_text())
    secrets = [state["s3"]["secret_key"], state["s3"]["access_key"], state["postgres"]["password"]]
    assert all(len(s) >= 12 for s in secrets)
    leaks = [
        str(path.relative_to(REPO_ROOT))
        for path in _tracked_files()
        if path.is_file() and any(s.encode() in path.read_bytes() for s in secrets)
    ]
    assert leaks == []
    assert (stack_home / "stack" / "state.json").stat().st_mode & 0o077 == 0


# SQL text built with f-strings or .format that interpolates something other than fixed
# identifiers. Each allowed line is listed with why it is safe; a new one fails this test.
_DYNAMIC_SQL = re.compile(r"\.execute\(\s*f[\"']|\.format\(|execute_values\([^)]*f[\"']")
_SQL_WORDS = re.compile(r"\b(SELECT|INSERT|UPDATE|DELETE|COPY|CREATE|DROP|ALTER)\b")


def test_warehouse_sql_takes_values_only_as_bind_parameters() -> None:
    """Every SQL statement with a value uses %s / %(name)s, psycopg2.sql, or fixed names."""
    suspicious = []
    for path in sorted((REPO_ROOT / "lambda_demo").rglob("*.py")):
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines, 1):
            window = "\n".join(lines[max(0, number - 4) : number + 3])
            if _DYNAMIC_SQL.search(line) and _SQL_WORDS.search(window):
                if "sql.SQL(" in window or "sql.Identifier" in window:
                    continue  # psycopg2.sql composes identifiers safely
                suspicious.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert suspicious == []
    # Values from the outside (tweets, locations) reach SQL only as parameters: the hostile
    # input drill stores "'); DROP TABLE raw_tweets; --" as a location and reads it back.
    speed = (REPO_ROOT / "lambda_demo" / "speed" / "sink.py").read_text()
    assert "VALUES %s" in speed and "SET batch_id = %s" in speed


def test_embedded_services_listen_on_loopback_only(stack_home: Path) -> None:
    state = json.loads((stack_home / "stack" / "state.json").read_text())
    ports = {
        f"{name}.{key}": port
        for name, entry in state.items()
        for key, port in entry.items()
        if key.endswith("port")
    }
    assert set(ports) == {"kafka.port", "kafka.controller_port", "s3.port", "postgres.port"}
    for name, port in ports.items():
        addresses = doctor.listening_addresses(port)
        assert addresses, f"{name} ({port}) is not listening"
        assert addresses == ["127.0.0.1"], f"{name} ({port}) listens on {addresses}"


def test_compose_passwords_come_from_the_environment() -> None:
    compose = (REPO_ROOT / "docker" / "compose.yml").read_text()
    secret_lines = [
        line.strip()
        for line in compose.splitlines()
        if re.search(r"(PASSWORD|SECRET)[A-Z_]*\s*:", line)
    ]
    assert secret_lines, "no password settings found: the scan would prove nothing"
    for line in secret_lines:
        value = line.split(":", 1)[1].strip()
        assert value.startswith("${") and ":?" in value, f"not from the environment: {line}"
    example = (REPO_ROOT / "docker" / ".env.example").read_text()
    for line in example.splitlines():
        if re.match(r"\s*LAMBDA_DEMO_\w*(PASSWORD|SECRET)\w*=", line):
            value = line.split("=", 1)[1].strip()
            assert value in ("", "change-me") or "change" in value.lower(), line


_SPARK_LISTENERS = """
import json, psutil
from lambda_demo.clients.spark import get_spark
spark = get_spark()
found = []
for process in psutil.Process().children(recursive=True):
    for conn in process.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN:
            found.append([conn.laddr.ip, conn.laddr.port])
print(json.dumps({"ui": spark.sparkContext.uiWebUrl, "listening": found}))
"""


def test_spark_listens_on_loopback_only_with_its_ui_enabled(stack_home: Path) -> None:
    """The driver, its block manager and the web UI (no login) are reachable from this
    machine only, also outside CI where the UI is on."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "SPARK_LOCAL_IP")}
    env["LAMBDA_DEMO_HOME"] = str(stack_home)
    done = subprocess.run(
        [sys.executable, "-c", _SPARK_LISTENERS], env=env, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["ui"], "the UI was not enabled: the test would prove nothing"
    ui_port = int(report["ui"].rsplit(":", 1)[1])
    assert ui_port in {port for _ip, port in report["listening"]}
    exposed = [(ip, port) for ip, port in report["listening"] if not _loopback(ip)]
    assert exposed == [], report


def _loopback(ip: str) -> bool:
    """127.0.0.1, ::1, or the IPv4 loopback as an IPv6-mapped address (Java's usual form)."""
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback
