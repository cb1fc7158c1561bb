"""Static checks of the Docker Compose stack in ``docker/`` (no Docker engine needed).

The compose file is validated against the Compose specification's JSON schema (vendored by
check-jsonschema), and then cross-checked with the code: the ``docker`` profile's addresses
(``lambda_demo.settings.DOCKER_ADDRESSES``) must be services listening on those ports, the
credentials must reach both the servers and the notebooks under the names ``Settings`` reads,
and the image must be installed from ``pyproject.toml`` alone.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from jsonschema import Draft202012Validator

from lambda_demo.errors import SettingsError
from lambda_demo.settings import DOCKER_ADDRESSES, Settings
from lambda_demo.stack.jvm import KAFKA_VERSION

REPO = Path(__file__).resolve().parents[2]
DOCKER_DIR = REPO / "docker"
COMPOSE_FILE = DOCKER_DIR / "compose.yml"
ENV_EXAMPLE = DOCKER_DIR / ".env.example"
DOCKERFILE = DOCKER_DIR / "jupyter" / "Dockerfile"
README = DOCKER_DIR / "README.md"

BACKING_SERVICES = ("kafka", "minio", "postgres")
LAMBDA_SERVICES = ("jupyter", "replayer")
CREDENTIAL_VARS = (
    "LAMBDA_DEMO_S3_ACCESS_KEY",
    "LAMBDA_DEMO_S3_SECRET_KEY",
    "LAMBDA_DEMO_WAREHOUSE_PASSWORD",
    "JUPYTER_TOKEN",
)
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|ROOT_USER")
LONG_MAX = 2**63 - 1


# --- Compose variable interpolation ------------------------------------------------------


class MissingVariableError(Exception):
    """A ``${VAR:?message}`` whose variable is unset: Compose refuses to start."""


_DOLLAR = re.compile(r"\$(?:(?P<escaped>\$)|\{(?P<braced>[^}]*)\}|(?P<named>[A-Za-z_]\w*))")
_BRACED = re.compile(r"(?P<name>[A-Za-z_]\w*)(?:(?P<op>:?[-?+])(?P<arg>.*))?", re.DOTALL)


def interpolate_text(text: str, env: dict[str, str]) -> str:
    """Compose's ``$VAR``, ``${VAR}``, ``${VAR:-default}``, ``${VAR:?err}``... and ``$$``."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        if match["named"]:
            return env.get(match["named"], "")
        braced = _BRACED.fullmatch(match["braced"])
        if braced is None or "$" in (braced["arg"] or ""):
            raise ValueError(f"unsupported interpolation: {match[0]!r}")
        name, op, arg = braced["name"], braced["op"], braced["arg"]
        value = env.get(name)
        if op is None:
            return value or ""
        present = bool(value) if op.startswith(":") else value is not None
        if op.endswith("-"):
            return value if present else arg
        if op.endswith("+"):
            return arg if present else ""
        if not present:
            raise MissingVariableError(f"{name}: {arg}")
        return value

    return _DOLLAR.sub(replace, text)


def interpolate(node: Any, env: dict[str, str]) -> Any:
    """Interpolate every string value of a loaded compose document (keys are left alone)."""
    if isinstance(node, dict):
        return {key: interpolate(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, env) for value in node]
    if isinstance(node, str):
        return interpolate_text(node, env)
    return node


def variables_in(node: Any) -> set[str]:
    """Names of every variable a compose document interpolates."""
    found: set[str] = set()
    if isinstance(node, dict):
        for value in node.values():
            found |= variables_in(value)
    elif isinstance(node, list):
        for value in node:
            found |= variables_in(value)
    elif isinstance(node, str):
        for match in _DOLLAR.finditer(node):
            if match["named"]:
                found.add(match["named"])
            elif match["braced"] is not None:
                found.add(_BRACED.fullmatch(match["braced"])["name"])
    return found


# --- Loading ------------------------------------------------------------------------------


def read_env_file(path: Path) -> tuple[dict[str, str], set[str]]:
    """``NAME=value`` assignments, and the names only documented in ``# NAME=value`` lines."""
    active: dict[str, str] = {}
    documented: set[str] = set()
    for line in path.read_text().splitlines():
        match = re.fullmatch(r"\s*(#\s*)?([A-Z_][A-Z0-9_]*)=(.*)", line)
        if match is None:
            continue
        if match[1]:
            documented.add(match[2])
        else:
            active[match[2]] = match[3].strip()
    return active, documented


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    """compose.yml as written, ``${...}`` expressions untouched."""
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict), "compose.yml must be a mapping"
    return document


@pytest.fixture(scope="module")
def example_env() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)[0]


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any], example_env: dict[str, str]) -> dict[str, Any]:
    """compose.yml as Compose sees it with the values of .env.example (defaults elsewhere)."""
    return interpolate(raw, example_env)


def service_env(service: dict[str, Any]) -> dict[str, Any]:
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        return dict(item.split("=", 1) if "=" in item else (item, None) for item in environment)
    return dict(environment)


def command_args(service: dict[str, Any], key: str = "command") -> list[str]:
    value = service.get(key) or []
    return shlex.split(value) if isinstance(value, str) else [str(v) for v in value]


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    named: bool


def mounts(service: dict[str, Any]) -> list[Mount]:
    result = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = volume.get("source", ""), volume["target"]
            named = volume.get("type", "volume") == "volume" and bool(source)
        else:
            source, target, *_ = volume.split(":")
            named = not source.startswith((".", "/", "~"))
        result.append(Mount(source, target.rstrip("/"), named))
    return result


@dataclass(frozen=True)
class Port:
    host_ip: str
    host_port: str
    container_port: int


def published_ports(service: dict[str, Any]) -> list[Port]:
    result = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            result.append(
                Port(port.get("host_ip", ""), str(port.get("published", "")), int(port["target"]))
            )
            continue
        parts = str(port).split(":")
        container = int(parts[-1].split("/")[0])
        if len(parts) == 3:
            result.append(Port(parts[0], parts[1], container))
        elif len(parts) == 2:
            result.append(Port("", parts[0], container))
        else:
            result.append(Port("", "", container))
    return result


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """``NAME://host:port,...`` -> {NAME: (host, port)}."""
    result = {}
    for item in value.split(","):
        name, address = item.strip().split("://")
        host, port = address.rsplit(":", 1)
        result[name] = (host, int(port))
    return result


def image_tag(image: str) -> str | None:
    name = image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None


# --- The Dockerfile -----------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    workdir: str
    user: str


def dockerfile_instructions(path: Path = DOCKERFILE) -> list[Instruction]:
    """Instructions with continuation lines joined, comments dropped, WORKDIR/USER tracked."""
    logical: list[str] = []
    pending = ""
    for line in path.read_text().splitlines():
        if line.strip().startswith("#") or (not line.strip() and not pending):
            continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        logical.append(pending + line.strip())
        pending = ""
    result = []
    workdir, user = "/", "root"
    for text in logical:
        keyword, _, args = text.partition(" ")
        keyword = keyword.upper()
        if keyword == "WORKDIR":
            workdir = str(Path(workdir, args.strip()))
        elif keyword == "USER":
            user = args.strip()
        result.append(Instruction(keyword, args.strip(), workdir, user))
    return result


def exec_form(args: str) -> list[str]:
    return json.loads(args) if args.startswith("[") else shlex.split(args)


def shell_commands(line: str) -> list[list[str]]:
    """The words of each simple command in a shell line (``&&``, ``||``, ``;``, ``|`` chains)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token in ("&&", "||", ";", "|", "(", ")"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [words for words in commands if words]


def pip_installs(run: str) -> list[list[str]]:
    """The argument lists of every ``pip install`` in one RUN (shell ``&&``/``;`` chains)."""
    calls = []
    for words in shell_commands(run):
        for i, word in enumerate(words[:-1]):
            if word.endswith("pip") and words[i + 1] == "install":
                calls.append(words[i + 2 :])
    return calls


# --- Key-shaped strings -------------------------------------------------------------------

_KEY_PATTERNS = [
    re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key ids
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
]
_LONG_TOKEN = re.compile(r"[A-Za-z0-9+/_-]{32,}={0,2}")


def key_shaped(text: str) -> list[str]:
    """AWS key ids, private keys, and long mixed-case alphanumeric tokens (base64 secrets)."""
    hits = [m[0] for pattern in _KEY_PATTERNS for m in pattern.finditer(text)]
    for match in _LONG_TOKEN.finditer(text):
        token = match[0]
        if all(re.search(cls, token) for cls in ("[a-z]", "[A-Z]", "[0-9]")):
            hits.append(token)
    return hits


# ==========================================================================================
# Compose file: syntax and schema
# ==========================================================================================


def test_compose_is_a_compose_spec_file_without_version(raw: dict[str, Any]) -> None:
    assert "version" not in raw, "the Compose specification dropped `version:`; remove it"
    assert set(raw["services"]) >= {*BACKING_SERVICES, "minio-init", *LAMBDA_SERVICES}


@pytest.fixture(scope="module")
def compose_validator() -> Draft202012Validator:
    schema_file = files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _schema_errors(validator: Draft202012Validator, document: Any) -> list[str]:
    return [
        f"{'/'.join(map(str, error.absolute_path)) or '<root>'}: {error.message}"
        for error in validator.iter_errors(document)
    ]


def test_compose_validates_against_the_compose_specification(
    compose_validator: Draft202012Validator, raw: dict[str, Any], compose: dict[str, Any]
) -> None:
    assert _schema_errors(compose_validator, raw) == []
    assert _schema_errors(compose_validator, compose) == []


def test_the_schema_check_is_not_vacuous(
    compose_validator: Draft202012Validator, compose: dict[str, Any]
) -> None:
    """Each typical slip on its own is rejected."""
    mistakes = [
        ("kafka", lambda s: s.update(healtcheck=s.pop("healthcheck"))),  # misspelt key
        ("jupyter", lambda s: s["depends_on"]["kafka"].update(condition="service_ready")),
        ("postgres", lambda s: s.update(volumes="postgres-data")),  # not a list
        ("minio", lambda s: s.update(ports="9000:9000")),  # not a list
    ]
    for name, mistake in mistakes:
        broken = json.loads(json.dumps(compose))
        mistake(broken["services"][name])
        assert _schema_errors(compose_validator, broken), name


def test_interpolation_needs_exactly_the_credentials(raw: dict[str, Any]) -> None:
    """Without docker/.env Compose refuses to start; with .env.example's names it can."""
    for var in CREDENTIAL_VARS:
        env = {name: "placeholder-value" for name in CREDENTIAL_VARS if name != var}
        with pytest.raises(MissingVariableError, match=var):
            interpolate(raw, env)
    interpolate(raw, dict.fromkeys(CREDENTIAL_VARS, "placeholder-value"))


def test_every_variable_is_documented_in_env_example(raw: dict[str, Any]) -> None:
    active, documented = read_env_file(ENV_EXAMPLE)
    undocumented = variables_in(raw) - set(active) - documented
    assert not undocumented, f"add these to docker/.env.example: {sorted(undocumented)}"
    assert set(CREDENTIAL_VARS) <= set(active), "credentials must be active lines"


def test_lambda_demo_variables_are_settings_fields(raw: dict[str, Any]) -> None:
    """A misspelt LAMBDA_DEMO_* name would be silently ignored by Settings."""
    names = set(read_env_file(ENV_EXAMPLE)[0]) | set(read_env_file(ENV_EXAMPLE)[1])
    for name in LAMBDA_SERVICES:
        names |= set(service_env(raw["services"][name]))
    fields = set(Settings.model_fields)
    for name in sorted(n for n in names if n.startswith("LAMBDA_DEMO_")):
        assert name.removeprefix("LAMBDA_DEMO_").lower() in fields, name


# ==========================================================================================
# The docker profile's addresses are these services
# ==========================================================================================


def _host_port(address: str) -> tuple[str, int]:
    parts = urlsplit(address if "://" in address else f"//{address}")
    assert parts.hostname and parts.port, f"{address!r} needs a host and a port"
    return parts.hostname, parts.port


_CREDENTIALS = {
    "s3_access_key": "key-only-in-this-test",
    "s3_secret_key": "secret-only-in-this-test",
    "warehouse_password": "pw-only-in-this-test",
}


@pytest.mark.usefixtures("clean_env")
def test_docker_profile_resolves_to_the_compose_addresses() -> None:
    endpoints = Settings(profile="docker", _env_file=None, **_CREDENTIALS).endpoints()
    assert endpoints.warehouse_password == _CREDENTIALS["warehouse_password"]
    assert endpoints.kafka_bootstrap == DOCKER_ADDRESSES["kafka_bootstrap"]
    assert endpoints.s3_endpoint == DOCKER_ADDRESSES["s3_endpoint"]
    assert (endpoints.warehouse_host, endpoints.warehouse_port) == (
        DOCKER_ADDRESSES["warehouse_host"],
        DOCKER_ADDRESSES["warehouse_port"],
    )
    assert _CREDENTIALS["warehouse_password"] not in repr(endpoints)


def test_kafka_bootstrap_is_the_in_network_listener(compose: dict[str, Any]) -> None:
    host, port = _host_port(DOCKER_ADDRESSES["kafka_bootstrap"])
    assert host in compose["services"], f"no service named {host!r}"
    env = service_env(compose["services"][host])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    bound = listeners(env["KAFKA_LISTENERS"])
    names = [name for name, address in advertised.items() if address == (host, port)]
    assert names, f"no listener advertises {host}:{port}"
    assert bound[names[0]][1] == port, "the broker must listen where it advertises"
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] == names[0]


def test_s3_endpoint_is_minio(compose: dict[str, Any]) -> None:
    host, port = _host_port(DOCKER_ADDRESSES["s3_endpoint"])
    assert host in compose["services"], f"no service named {host!r}"
    args = command_args(compose["services"][host])
    assert args[:1] == ["server"]
    address = args[args.index("--address") + 1] if "--address" in args else ":9000"
    assert int(address.rsplit(":", 1)[1]) == port


def test_warehouse_is_postgres(compose: dict[str, Any]) -> None:
    host, port = DOCKER_ADDRESSES["warehouse_host"], int(DOCKER_ADDRESSES["warehouse_port"])
    assert host in compose["services"], f"no service named {host!r}"
    service = compose["services"][host]
    env = service_env(service)
    assert "PGPORT" not in env and "-p" not in command_args(service)
    assert port == 5432  # PostgreSQL's own default, which the image keeps
    defaults = Settings.model_fields
    assert env["POSTGRES_DB"] == defaults["warehouse_db"].default
    assert env["POSTGRES_USER"] == defaults["warehouse_user"].default
    check = command_args(service["healthcheck"], "test")
    assert "pg_isready" in check and str(port) in check


def test_minio_init_creates_the_default_bucket(compose: dict[str, Any]) -> None:
    script = " ".join(command_args(compose["services"]["minio-init"]))
    bucket = Settings.model_fields["s3_bucket"].default
    assert re.search(rf"mc mb (--ignore-existing |-p )+\w+/{re.escape(bucket)}\b", script)
    assert "http://minio:9000" in script


# ==========================================================================================
# Kafka
# ==========================================================================================


def test_kafka_is_the_pinned_single_kraft_node(compose: dict[str, Any]) -> None:
    kafka = compose["services"]["kafka"]
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"  # same broker as `stack up`
    env = service_env(kafka)
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    bound = listeners(env["KAFKA_LISTENERS"])
    controller = env["KAFKA_CONTROLLER_LISTENER_NAMES"]
    assert controller in bound
    voter = f"{env['KAFKA_NODE_ID']}@kafka:{bound[controller][1]}"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == voter
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    assert set(bound) | set(advertised) <= set(protocols)
    assert controller not in advertised
    assert len(bound) == 3, "one listener for containers, one for the host, the controller"


def test_kafka_keeps_everything_on_one_replica(compose: dict[str, Any]) -> None:
    env = service_env(compose["services"]["kafka"])
    for name in (
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR",
        "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
    ):
        assert int(env[name]) == 1, name
    assert int(env["KAFKA_LOG_RETENTION_MS"]) == -1
    # Replays carry simulated timestamps, days or years from the wall clock.
    assert int(env["KAFKA_LOG_MESSAGE_TIMESTAMP_BEFORE_MAX_MS"]) == LONG_MAX
    assert int(env["KAFKA_LOG_MESSAGE_TIMESTAMP_AFTER_MAX_MS"]) == LONG_MAX


def test_kafka_host_listener_advertises_the_published_port(raw: dict[str, Any]) -> None:
    """Moving KAFKA_HOST_PORT must move the advertised address too, or clients get lost."""
    env = dict.fromkeys(CREDENTIAL_VARS, "placeholder-value") | {"KAFKA_HOST_PORT": "39092"}
    kafka = interpolate(raw, env)["services"]["kafka"]
    kafka_env = service_env(kafka)
    advertised = listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    bound = listeners(kafka_env["KAFKA_LISTENERS"])
    host_side = {name: a for name, a in advertised.items() if a[0] in ("localhost", "127.0.0.1")}
    assert len(host_side) == 1, "exactly one listener for clients on the host"
    ((name, (_, advertised_port)),) = host_side.items()
    assert advertised_port == 39092
    ports = published_ports(kafka)
    assert [(p.host_port, p.container_port) for p in ports] == [("39092", bound[name][1])]


def test_kafka_healthcheck_lists_topics_on_the_profile_bootstrap(
    compose: dict[str, Any],
) -> None:
    check = command_args(compose["services"]["kafka"]["healthcheck"], "test")
    assert check[0] in ("CMD", "CMD-SHELL")
    assert "/opt/kafka/bin/kafka-topics.sh" in " ".join(check)
    assert DOCKER_ADDRESSES["kafka_bootstrap"] in check and "--list" in check


# ==========================================================================================
# Images, health, ordering, state, ports
# ==========================================================================================


def test_every_image_is_pinned(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        image = service.get("image")
        assert image, f"{name}: give it an image (built services get a versioned tag)"
        tag = image_tag(image)
        assert tag and tag != "latest" and re.search(r"\d", tag), f"{name}: pin {image!r}"
    services = compose["services"]
    assert re.fullmatch(r"16\.\d+(-\w+)?", image_tag(services["postgres"]["image"]))
    for name in ("minio", "minio-init"):
        assert image_tag(services[name]["image"]).startswith("RELEASE.20"), name


def test_backing_services_have_healthchecks(compose: dict[str, Any]) -> None:
    for name in BACKING_SERVICES:
        check = compose["services"][name].get("healthcheck") or {}
        test = command_args(check, "test")
        assert test and test[0] in ("CMD", "CMD-SHELL"), f"{name} needs a healthcheck"
        assert not check.get("disable"), name


def test_depends_on_waits_for_health_or_completion(compose: dict[str, Any]) -> None:
    services = compose["services"]
    required = {
        "jupyter": {"kafka", "postgres", "minio-init"},
        "replayer": {"kafka"},
        "minio-init": {"minio"},
    }
    for name, needs in required.items():
        depends = services[name].get("depends_on")
        assert isinstance(depends, dict), f"{name}: depends_on needs conditions (long form)"
        assert needs <= set(depends), f"{name} must wait for {sorted(needs - set(depends))}"
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            expected = (
                "service_healthy"
                if "healthcheck" in services[target]
                else "service_completed_successfully"
            )
            assert spec.get("condition") == expected, f"{name} -> {target}"
    assert str(services["minio-init"].get("restart", "no")) == "no"  # one-shot


def test_state_lives_in_named_volumes(compose: dict[str, Any]) -> None:
    services = compose["services"]
    declared = set(compose.get("volumes") or {})
    used = {m.source for s in services.values() for m in mounts(s) if m.named}
    assert used == declared, "declare every named volume (and only those used)"
    minio_args = command_args(services["minio"])
    data_dirs = {
        "kafka": service_env(services["kafka"])["KAFKA_LOG_DIRS"],
        "minio": minio_args[1],
        "postgres": service_env(services["postgres"]).get("PGDATA", "/var/lib/postgresql/data"),
    }
    for name in LAMBDA_SERVICES:
        data_dirs[name] = service_env(services[name])["LAMBDA_DEMO_HOME"]
    for name, path in data_dirs.items():
        targets = {m.target for m in mounts(services[name]) if m.named}
        assert path.rstrip("/") in targets, f"{name}: mount a named volume at {path}"


def test_published_ports_are_loopback_only_and_movable(
    raw: dict[str, Any], compose: dict[str, Any]
) -> None:
    readme = README.read_text()
    _, documented = read_env_file(ENV_EXAMPLE)
    for name, service in raw["services"].items():
        for port in service.get("ports", []):
            match = re.fullmatch(
                r"127\.0\.0\.1:\$\{(?P<var>[A-Z_]+_HOST_PORT):-(?P<default>\d+)\}:\d+", str(port)
            )
            assert match, f"{name}: publish as 127.0.0.1:${{X_HOST_PORT:-n}}:n, not {port!r}"
            assert match["var"] in documented and match["var"] in readme, match["var"]
    for name, service in compose["services"].items():
        for port in published_ports(service):
            assert port.host_ip == "127.0.0.1", f"{name} publishes beyond this machine"
    jupyter_ports = {p.container_port for p in published_ports(compose["services"]["jupyter"])}
    cmd = exec_form(next(i.args for i in dockerfile_instructions() if i.keyword == "CMD"))
    port_flag = next(a for a in cmd if a.startswith("--port="))
    assert int(port_flag.split("=")[1]) in jupyter_ports


# ==========================================================================================
# jupyter and replayer: settings, credentials, mounts, command
# ==========================================================================================


def test_lambda_services_use_the_docker_profile_without_overrides(raw: dict[str, Any]) -> None:
    overrides = {
        f"LAMBDA_DEMO_{key.upper()}"
        for key in ("kafka_bootstrap", "s3_endpoint", "warehouse_host", "warehouse_port")
    }
    for name in LAMBDA_SERVICES:
        service = raw["services"][name]
        env = service_env(service)
        assert env.get("LAMBDA_DEMO_PROFILE") == "docker", name
        assert not overrides & set(env), f"{name}: the profile's addresses must not be overridden"
        # env_file would pass host-only settings (localhost addresses) into the container.
        assert "env_file" not in service, f"{name}: list its variables in `environment`"


def test_credentials_reach_servers_and_settings_alike(
    raw: dict[str, Any], clean_env: pytest.MonkeyPatch
) -> None:
    env = {name: f"value-of-{name.lower()}" for name in CREDENTIAL_VARS}
    services = interpolate(raw, env)["services"]
    minio, postgres = service_env(services["minio"]), service_env(services["postgres"])
    assert service_env(services["minio-init"])["MINIO_ROOT_USER"] == minio["MINIO_ROOT_USER"]
    for name in LAMBDA_SERVICES:
        container_env = service_env(services[name])
        assert container_env["LAMBDA_DEMO_S3_ACCESS_KEY"] == minio["MINIO_ROOT_USER"]
        assert container_env["LAMBDA_DEMO_S3_SECRET_KEY"] == minio["MINIO_ROOT_PASSWORD"]
        assert container_env["LAMBDA_DEMO_WAREHOUSE_PASSWORD"] == postgres["POSTGRES_PASSWORD"]
        # What lambda_demo resolves inside that container, from its environment alone.
        with clean_env.context() as container:
            for var, value in container_env.items():
                container.setenv(var, str(value))
            endpoints = Settings(_env_file=None).endpoints()
        assert endpoints.kafka_bootstrap == DOCKER_ADDRESSES["kafka_bootstrap"]
        assert endpoints.s3_endpoint == DOCKER_ADDRESSES["s3_endpoint"]
        assert endpoints.warehouse_host == DOCKER_ADDRESSES["warehouse_host"]
        assert endpoints.s3_access_key == env["LAMBDA_DEMO_S3_ACCESS_KEY"]
        assert endpoints.s3_secret_key == env["LAMBDA_DEMO_S3_SECRET_KEY"]
        assert endpoints.warehouse_password == env["LAMBDA_DEMO_WAREHOUSE_PASSWORD"]
    assert service_env(services["jupyter"])["JUPYTER_TOKEN"] == env["JUPYTER_TOKEN"]


def test_mounts_mirror_a_checkout_inside_the_image(compose: dict[str, Any]) -> None:
    """REPO_ROOT-relative paths (data/sample_tweets, notebooks) must exist in the container."""
    instructions = dockerfile_instructions()
    install = next(i for i in instructions if i.keyword == "RUN" and pip_installs(i.args))
    assert "-e" in pip_installs(install.args)[0] or "--editable" in pip_installs(install.args)[0]
    checkout = install.workdir  # editable install: lambda_demo.settings.REPO_ROOT is here
    expected = {
        "jupyter": {"../notebooks": "notebooks", "../data": "data"},
        "replayer": {"../data": "data"},
    }
    for name, binds in expected.items():
        found = {m.source: m.target for m in mounts(compose["services"][name]) if not m.named}
        for source, relative in binds.items():
            assert (DOCKER_DIR / source).resolve() == REPO / relative
            assert (REPO / relative).is_dir(), f"{source} does not exist"
            assert found.get(source) == f"{checkout}/{relative}", f"{name}: mount {source}"


def test_replayer_command_is_a_valid_cli_call(compose: dict[str, Any]) -> None:
    from lambda_demo.cli import build_parser

    argv = command_args(compose["services"]["replayer"])
    assert argv[0] == "lambda-demo"
    args = build_parser().parse_args(argv[1:])
    assert (args.command, args.loop) == ("replay", True)
    assert args.speedup > 0, "paced like a live stream (speedup 0 replays as fast as it can)"


def test_lambda_services_share_the_built_image(compose: dict[str, Any]) -> None:
    services = compose["services"]
    images = {services[name]["image"] for name in LAMBDA_SERVICES}
    assert len(images) == 1
    for name in LAMBDA_SERVICES:
        build = services[name]["build"]
        context = (DOCKER_DIR / build["context"]).resolve()
        assert context == REPO, "build from the repository root (pyproject.toml is there)"
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE


# ==========================================================================================
# The image: pyproject.toml is the only dependency list
# ==========================================================================================


def test_image_is_python_311_slim_bookworm_with_java_17() -> None:
    instructions = dockerfile_instructions()
    base = next(i.args for i in instructions if i.keyword == "FROM")
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    runs = " ".join(i.args for i in instructions if i.keyword == "RUN")
    assert re.search(r"apt-get install\b.*\bopenjdk-17-jre-headless\b", runs)


def test_image_installs_the_package_from_pyproject_only() -> None:
    instructions = dockerfile_instructions()
    copied = [shlex.split(i.args) for i in instructions if i.keyword in ("COPY", "ADD")]
    sources = {s.rstrip("/") for args in copied for s in args[:-1] if not s.startswith("--")}
    assert {"pyproject.toml", "lambda_demo"} <= sources
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: not in the build context"
    calls = [c for i in instructions if i.keyword == "RUN" for c in pip_installs(i.args)]
    assert calls, "the image must pip install the project"
    for call in calls:
        targets = [a for a in call if not a.startswith("-")]
        assert targets and set(targets) <= {".", ".[dev]"}, f"pip install {call}: only `.`"
        assert not {"-r", "--requirement", "-c", "--constraint"} & set(call)
    assert not list(DOCKER_DIR.rglob("requirements*.txt")), "pyproject.toml is the only list"


def test_image_fetches_the_kafka_connector_for_its_runtime_user() -> None:
    instructions = dockerfile_instructions()
    env = " ".join(i.args for i in instructions if i.keyword == "ENV")
    assert re.search(r"\bLAMBDA_DEMO_CACHE=/\S+", env), "keep the Ivy cache inside the image"
    fetch = [i for i, ins in enumerate(instructions) if "get_spark" in ins.args]
    assert fetch, "fetch the connector at build time (get_spark) so notebooks run offline"
    install = next(
        i for i, ins in enumerate(instructions) if ins.keyword == "RUN" and pip_installs(ins.args)
    )
    copy_code = next(
        i
        for i, ins in enumerate(instructions)
        if ins.keyword == "COPY" and "lambda_demo" in ins.args
    )
    assert fetch[0] > max(install, copy_code)
    final_user = instructions[-1].user
    assert final_user not in ("root", "0"), "run JupyterLab as a non-root user"
    # Ivy writes lock and resolution files next to the jars: same user at build and run time.
    assert instructions[fetch[0]].user == final_user


def test_jupyter_listens_on_all_interfaces_with_a_token_from_env() -> None:
    instructions = dockerfile_instructions()
    cmd = exec_form(next(i.args for i in reversed(instructions) if i.keyword == "CMD"))
    assert cmd[:2] == ["jupyter", "lab"]
    assert "--ip=0.0.0.0" in cmd and "--no-browser" in cmd
    assert not [a for a in cmd if "token" in a.lower()], "the token comes from JUPYTER_TOKEN"


# ==========================================================================================
# No secrets in docker/
# ==========================================================================================


def test_compose_credentials_are_interpolated(raw: dict[str, Any]) -> None:
    for name, service in raw["services"].items():
        for key, value in service_env(service).items():
            if SECRET_NAME.search(key):
                assert re.fullmatch(r"\$\{[A-Z_][A-Z0-9_]*:\?[^}]+\}", str(value)), (
                    f"{name}.{key} must be ${{VAR:?message}}, not a literal"
                )


def test_env_example_holds_placeholders_only() -> None:
    active, _ = read_env_file(ENV_EXAMPLE)
    for name in CREDENTIAL_VARS:
        assert re.fullmatch(r"change-me(-[a-z0-9]+)*", active[name]), f"{name}: placeholder"
    # MinIO refuses shorter root credentials, so even the placeholders must start.
    assert len(active["LAMBDA_DEMO_S3_ACCESS_KEY"]) >= 3
    assert len(active["LAMBDA_DEMO_S3_SECRET_KEY"]) >= 8


def test_no_key_shaped_strings_in_docker_dir() -> None:
    scanned = [p for p in DOCKER_DIR.rglob("*") if p.is_file() and p.name != ".env"]
    assert ENV_EXAMPLE in scanned and COMPOSE_FILE in scanned
    for path in scanned:
        hits = key_shaped(path.read_text(errors="replace"))
        assert not hits, f"{path.relative_to(REPO)} holds key-shaped strings: {hits}"


def test_key_scan_catches_real_keys() -> None:
    aws_id = "AKIA" + "IOSFODNN7" + "EXAMPLE"
    token = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
    assert key_shaped(f"key={aws_id}\nsecret={token}") == [aws_id, token]
    assert key_shaped("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR: 1") == []


def test_the_real_env_file_is_git_ignored() -> None:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout")
    result = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "-q", "docker/.env"], check=False
    )
    assert result.returncode == 0, "docker/.env must be git-ignored"
    result = subprocess.run(
        ["git", "-C", str(REPO), "check-ignore", "-q", "docker/.env.example"], check=False
    )
    assert result.returncode == 1, "docker/.env.example must be committed"


# ==========================================================================================
# The README shows what the code prints
# ==========================================================================================


@pytest.mark.usefixtures("clean_env")
def test_readme_shows_the_real_endpoints() -> None:
    readme = README.read_text()
    in_network = Settings(profile="docker", _env_file=None, **_CREDENTIALS).endpoints()
    from_host = Settings(
        **_CREDENTIALS,
        profile="docker",
        kafka_bootstrap="localhost:29092",
        s3_endpoint="http://localhost:9000",
        warehouse_host="localhost",
        _env_file=None,
    ).endpoints()
    assert repr(in_network) in readme
    assert repr(from_host) in readme
    for command in ("--env-file docker/.env up -d", "logs -f replayer", "down -v"):
        assert command in readme, command


@pytest.mark.usefixtures("clean_env")
def test_docker_profile_refuses_to_run_without_credentials() -> None:
    """Missing keys would make boto3 fall back to ~/.aws and send real keys to MinIO."""
    with pytest.raises(SettingsError, match="LAMBDA_DEMO_S3_ACCESS_KEY"):
        Settings(profile="docker", _env_file=None).endpoints()


def test_the_build_context_holds_only_what_the_dockerfile_copies() -> None:
    """The build context is the repository root: without an allow-list, a local .venv and
    .lambda-demo's data would be sent to the builder on every build."""
    ignore = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    dockerfile = DOCKERFILE.read_text()
    copied = {
        source.rstrip("/")
        for line in dockerfile.splitlines()
        if line.startswith(("COPY ", "ADD "))
        for source in shlex.split(line)[1:-1]
        if not source.startswith("--")
    }
    assert ignore[0] == "*"
    assert copied and copied == {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
