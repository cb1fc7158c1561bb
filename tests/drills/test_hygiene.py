"""Hygiene drills on the running stack: its generated credentials are in no tracked file,
every service (Spark included) listens on loopback only, and PostgreSQL run under root widens
the permissions of no folder outside the home.

The stack-free hygiene checks live in ``tests/unit``: key-shaped strings in the repository
(``test_repository_hygiene.py``) and values interpolated into SQL (``test_sql_hygiene.py``).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from helpers import tracked_files, wait_until

from lambda_demo.settings import REPO_ROOT, isolated_settings
from lambda_demo.stack import doctor, manager, services
from lambda_demo.stack.process import free_port, start_detached, started_at, stop

pytestmark = [pytest.mark.drills, pytest.mark.integration]


def test_the_running_stacks_generated_credentials_are_in_no_tracked_file(
    stack_home: Path,
) -> None:
    state = json.loads((stack_home / "stack" / "state.json").read_text())
    secrets = [state["s3"]["secret_key"], state["s3"]["access_key"], state["postgres"]["password"]]
    assert all(len(s) >= 12 for s in secrets)
    leaks = [
        str(path.relative_to(REPO_ROOT))
        for path in tracked_files()
        if path.is_file() and any(s.encode() in path.read_bytes() for s in secrets)
    ]
    assert leaks == []
    assert (stack_home / "stack" / "state.json").stat().st_mode & 0o077 == 0


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


# --- PostgreSQL under root: no permission widened outside the home -------------------------


def _modes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mode for p in [folder, *folder.parents]}


def _start_postgres(home: Path) -> dict:
    """PostgreSQL alone, the way `stack up` starts it (prepare, run as, command)."""
    postgres = next(s for s in services.SERVICES if s.name == "postgres")
    entry: dict = {"port": free_port()}
    postgres.prepare(home, entry)
    entry["pid"] = start_detached(
        postgres.command(home, entry),
        log_file=home / "postgres.log",
        cwd=home,
        preexec_fn=postgres.run_as(home, entry),
    )
    entry["started"] = started_at(entry["pid"])
    wait_until(lambda: postgres.ready(entry), 60, "PostgreSQL to answer")
    return entry


@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL is demoted to another user under root")
@pytest.mark.parametrize("private_parent", [True, False], ids=["under-0700", "under-0755"])
def test_postgres_under_root_widens_nothing_outside_the_home(private_parent: bool) -> None:
    # Directly in /tmp: pytest's own tmp_path sits in a 0700 folder.
    parent = Path(tempfile.mkdtemp(prefix="lambda-demo-checkout-"))
    parent.chmod(0o700 if private_parent else 0o755)
    home = parent / "home"
    home.mkdir()
    before = _modes(parent)
    entry = _start_postgres(home)
    try:
        assert _modes(parent) == before, "a folder above the home was widened"
        directory = Path(entry["dir"])
        # Out of the user's reach (0700 parent): the directory moves out, else it stays home.
        assert directory.is_relative_to(services.ROOT_PG_PARENT) == private_parent
        assert directory.is_relative_to(home) != private_parent
        assert (directory / "data" / "PG_VERSION").exists()
        assert directory.stat().st_mode & 0o077 == 0
    finally:
        stop(entry["pid"], entry["started"], sig=signal.SIGINT)
        shutil.rmtree(entry["dir"])
        shutil.rmtree(parent)


def test_reset_deletes_a_postgres_directory_kept_outside_the_home(tmp_path: Path) -> None:
    home = tmp_path / "home"
    elsewhere = tmp_path / "pg-elsewhere"
    (elsewhere / "data").mkdir(parents=True)
    settings = isolated_settings(home)
    (home / "stack").mkdir(parents=True)
    state = {"postgres": {"port": free_port(), "pid": None, "dir": str(elsewhere)}}
    (home / "stack" / "state.json").write_text(json.dumps(state))

    manager.reset(settings)

    assert not elsewhere.exists() and not home.exists()
