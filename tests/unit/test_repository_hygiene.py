"""Repository hygiene without a stack: no key-shaped strings in any tracked file or notebook
output, and the Compose stack's passwords come from the environment.

(Moved from ``tests/drills/test_hygiene.py``, which keeps the checks that need the running
stack: its generated credentials and the addresses its services listen on.)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from helpers import tracked_files

from lambda_demo.settings import REPO_ROOT

KEY_PATTERNS = {
    "AWS access key id": re.compile(rb"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "private key block": re.compile(rb"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    "aws_secret_access_key assignment": re.compile(
        rb"aws_secret_access_key\s*[=:]\s*['\"]?[A-Za-z0-9/+]{30,}"
    ),
    "bearer token": re.compile(rb"Bearer\s+[A-Za-z0-9%._~+/-]{40,}"),
    "X bearer token": re.compile(rb"\bAAAAAAAAAAAAAAAAAAAAA[A-Za-z0-9%]{30,}"),
}


def _notebook_outputs(path: Path) -> bytes:
    cells = json.loads(path.read_text()).get("cells", [])
    return json.dumps([c.get("outputs", []) for c in cells]).encode()


def test_scanner_finds_what_it_looks_for() -> None:
    """Every pattern fires on a planted example, so a clean scan means something."""
    planted = (
        b"AKIA" + b"ABCDEFGHIJKLMNOP\n"
        b"-----BEGIN RSA PRIVATE" + b" KEY-----\n"  # split so this file does not match itself
        b"aws_secret_access_key = " + b"a" * 40 + b"\n"
        b"Authorization: Bearer " + b"x" * 60 + b"\n"
        b"AAAAAAAAAAAAAAAAAAAAA" + b"x%3D" * 10 + b"\n"
    )
    found = {name for name, pattern in KEY_PATTERNS.items() if pattern.search(planted)}
    assert found == set(KEY_PATTERNS)


def test_no_key_shaped_strings_in_tracked_files_or_notebook_outputs() -> None:
    files = [path for path in tracked_files() if path.is_file()]
    assert REPO_ROOT / "lambda_demo" / "view.py" in files, "the scan would prove nothing"
    hits = []
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".ipynb":
            data += _notebook_outputs(path)
        for name, pattern in KEY_PATTERNS.items():
            hits.extend(f"{path.relative_to(REPO_ROOT)}: {name}" for _ in pattern.finditer(data))
    assert hits == []


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
