"""``lambda-demo stack up | down | status | reset``: the embedded stack's life cycle.

State lives under ``$LAMBDA_DEMO_HOME``: each service's data directory, its log, and
``stack/state.json`` with the ports chosen at first start, generated credentials and pids.
``up`` is idempotent: a service that answers is left alone, a dead one is restarted on its
recorded ports (and reported), and a port taken by a stranger is an error, never reused.
"""

from __future__ import annotations

import fcntl
import json
import logging
import shutil
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from lambda_demo.errors import StackError
from lambda_demo.settings import STACK_PROFILES, Settings, get_settings
from lambda_demo.stack import doctor, jvm
from lambda_demo.stack.process import (
    adopt,
    free_port,
    kill_tree,
    log_tail,
    port_open,
    running,
    start_detached,
    started_at,
    stop,
    write_private,
)
from lambda_demo.stack.services import CLUSTER_SERVICES, SERVICES, Service, link, services_for

logger = logging.getLogger(__name__)

READY_TIMEOUT_SECONDS = 90.0


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    title: str
    address: str
    version: str
    up: bool
    problem: str | None = None
    details: dict | None = None
    """More that the service says about itself (the Spark master: its web UI, its workers)."""


def _load(settings: Settings) -> dict:
    if not settings.state_file.exists():
        return {}
    state = json.loads(settings.state_file.read_text())
    for entry in state.values():
        if entry.get("pid") and "started" not in entry:
            entry["started"] = adopt(entry["pid"], settings.home.resolve())
    return state


def _save(settings: Settings, state: dict) -> None:
    write_private(settings.state_file, json.dumps(state, indent=2))  # it holds the passwords


def up(settings: Settings | None = None, *, kafka_only: bool = False) -> list[ServiceStatus]:
    """Start every service that is not already answering, then create topics and bucket.

    ``kafka_only`` starts the profile's Kafka nodes alone and creates only the topics:
    notebook 06 runs the cluster profile's three brokers beside its own stack, without a
    second S3Proxy, PostgreSQL and Spark it would not use (some 20 s and 1 GB less).

    Holds a file lock: a notebook and a CLI starting the same stack at once must not both
    format Kafka's storage or start a second server on the same data. The ``docker`` and
    ``aws`` profiles' services run elsewhere (Compose, AWS): there, ``up`` starts nothing and
    only creates the topics and the bucket, so the notebooks' ``stack.up()`` is right in
    every profile.
    """
    settings = settings or get_settings()
    if settings.profile not in STACK_PROFILES:
        _create_resources(settings, bucket=not kafka_only)
        return []
    jvm.java_version()
    settings.state_file.parent.mkdir(parents=True, exist_ok=True)
    with (settings.state_file.parent / "up.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return _up(settings, kafka_only=kafka_only)


def chosen_services(profile: str, *, kafka_only: bool = False) -> tuple[Service, ...]:
    """The services ``up`` starts: the profile's, or only its Kafka nodes."""
    services = services_for(profile)
    return tuple(s for s in services if s.node_id is not None) if kafka_only else services


def _up(settings: Settings, *, kafka_only: bool) -> list[ServiceStatus]:
    """Start every service that does not answer, then wait for all of them.

    All start before any is awaited: a Kafka node of a cluster answers only once a majority
    of the controller quorum runs, and the services start side by side meanwhile.
    """
    state = _load(settings)
    home = settings.home.resolve()
    services = chosen_services(settings.profile, kafka_only=kafka_only)
    for service in services:
        entry = state.setdefault(service.name, {})
        for port_key in service.ports:
            entry.setdefault(port_key, free_port())
    link(state, services)
    starting = []
    for service in services:
        entry = state[service.name]
        ours = running(entry.get("pid"), entry.get("started"))
        if ours and service.ready(entry):
            continue
        if ours:
            _stop(service, entry)  # alive but not answering: a stuck process
        elif entry.get("pid"):
            logger.warning("%s (pid %s) is not running; starting it", service.name, entry["pid"])
        taken = [entry[key] for key in service.ports if port_open(entry[key])]
        if taken:
            what = f"Port {taken[0]} recorded for {service.name} is taken by another program"
            raise StackError(str(doctor.Problem(what, doctor.PORT_FIX)))
        service.prepare(home, entry)
        _save(settings, state)
        entry["pid"] = start_detached(
            service.command(home, entry),
            log_file=settings.log_file(service.log),
            cwd=home,
            env=service.env(home, entry) if service.env else None,
            preexec_fn=service.run_as(home, entry),
        )
        entry["started"] = started_at(entry["pid"])
        _save(settings, state)
        starting.append(service)
    for service in starting:
        _wait_ready(settings, service, state[service.name])
    _save(settings, state)
    _create_resources(settings, bucket=not kafka_only)
    names = {service.name for service in services}
    return [s for s in status(settings) if s.name in names]


def _wait_ready(settings: Settings, service: Service, entry: dict) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if not running(entry["pid"], entry["started"]):
            raise StackError(
                f"{service.title} exited during start-up. Last lines of its log "
                f"({settings.log_file(service.log)}):\n{log_tail(settings.log_file(service.log))}"
            )
        if service.ready(entry):
            return
        time.sleep(0.5)
    raise StackError(
        f"{service.title} did not answer within {READY_TIMEOUT_SECONDS:.0f} s. "
        f"Log:\n{log_tail(settings.log_file(service.log))}"
    )


def _create_resources(settings: Settings, *, bucket: bool = True) -> None:
    """Topics and the bucket exist once the stack is up, so every layer can assume them."""
    from lambda_demo.clients.kafka_io import ensure_topics
    from lambda_demo.clients.storage import ensure_bucket

    ensure_topics(settings)
    if bucket:
        ensure_bucket(settings)


def down(settings: Settings | None = None) -> None:
    """Stop every service; data stays for the next ``up``."""
    settings = settings or get_settings()
    from lambda_demo.clients import warehouse

    warehouse.close_readers()  # this process's own idle connections go first
    _stop_recorded(settings, reversed(_recorded(settings)))


def stop_service(name: str, settings: Settings | None = None) -> None:
    """Stop one service the way ``down`` does; its data and ports stay for the next ``up``.

    An outage on purpose: notebook 06 stops the broker mid-replay to show that nothing is
    lost, and ``up`` brings it back on its recorded ports with its data.
    """
    settings = settings or get_settings()
    _stop_recorded(settings, [_service(name, settings)])


def kill_service(name: str, settings: Settings | None = None) -> None:
    """SIGKILL one service and wait until it and every process it started are gone.

    A crash on purpose, with no chance to shut down cleanly (no hand-over of a broker's
    partitions, no flush): notebook 06 kills the broker that leads a partition and the
    cluster drill kills a broker and the Spark worker. ``up`` restarts it on its recorded
    ports, with whatever data it had on disk; the kill is recorded like a stop, so ``up``
    does not report it as a surprise.
    """
    settings = settings or get_settings()
    service = _service(name, settings)
    entry = _load(settings).get(name, {})
    if not running(entry.get("pid"), entry.get("started")):
        raise StackError(f"{name} is not running: there is nothing to kill.")
    kill_tree(entry["pid"], entry["started"], what=service.title)
    _stop_recorded(settings, [service])


def _service(name: str, settings: Settings) -> Service:
    """The profile's service called ``name``, or an error that lists the names there are."""
    by_name = {service.name: service for service in services_for(settings.profile)}
    if name not in by_name:
        raise StackError(
            f"There is no service {name!r} in the stack: choose one of {list(by_name)}."
        )
    return by_name[name]


def _recorded(settings: Settings) -> list[Service]:
    """Every service the home's state records, whichever profile started it, in start order."""
    state = _load(settings)
    known = {service.name: service for service in (*SERVICES, *CLUSTER_SERVICES)}
    return [service for name, service in known.items() if name in state]


def _stop_recorded(settings: Settings, services: Iterable[Service]) -> None:
    """Stop the services, all at once, and record that they are stopped, so ``up`` starts
    them without alarm.

    At once, not one by one: a Kafka node shuts down by handing its partitions over through
    the controller quorum, and the last node of a cluster stopped alone would find no quorum
    left and wait for the kill 30 s later.
    """
    state = _load(settings)
    chosen = list(services)
    with ThreadPoolExecutor(max_workers=max(1, len(chosen))) as pool:
        list(pool.map(lambda service: _stop(service, state.get(service.name, {})), chosen))
    for service in chosen:
        entry = state.get(service.name, {})
        entry["pid"] = entry["started"] = None
    if state:
        _save(settings, state)


def _stop(service: Service, entry: dict) -> None:
    """Stop the service's process, if it is still the one this stack started."""
    stop(entry.get("pid"), entry.get("started"), sig=service.stop_signal)


def reset(settings: Settings | None = None) -> None:
    """Stop everything and delete all state: topics, objects, warehouse, checkpoints."""
    settings = settings or get_settings()
    down(settings)
    # PostgreSQL's directory may live outside the home (see services.pg_dir).
    elsewhere = _load(settings).get("postgres", {}).get("dir")
    if elsewhere and not Path(elsewhere).is_relative_to(settings.home.resolve()):
        shutil.rmtree(elsewhere, ignore_errors=True)
    if settings.home.exists():
        shutil.rmtree(settings.home)


def status(settings: Settings | None = None) -> list[ServiceStatus]:
    """Each service's address, version, and whether it answers, with a hint when it does not.

    The hints come from the rules `lambda-demo doctor` applies (`lambda_demo.stack.doctor`):
    a port held by another program, a dead service's last log lines, and stack-wide warnings
    (Java missing, too old or too new for Spark; too little free disk).
    """
    settings = settings or get_settings()
    state = _load(settings)
    java = doctor.java_problem(jvm.java_major())
    disk = doctor.disk_problem(
        doctor.free_disk(settings.home), settings.home, need=doctor.MIN_FREE_DISK_TO_RUN
    )
    result = []
    for service in services_for(settings.profile):
        jvm_problem = java if service.java else None
        warnings = [str(w) for w in (jvm_problem, disk) if w]
        entry = state.get(service.name)
        if not entry or "port" not in entry:
            hint = "never started: run `lambda-demo stack up`"
            result.append(_status(service, "-", False, _join(hint, *warnings)))
            continue
        address = f"{service.scheme}127.0.0.1:{entry['port']}"
        pid = entry.get("pid")
        if not running(pid, entry.get("started")):
            taken = _ports_taken(service, entry, own_pid=None)
            tail = log_tail(settings.log_file(service.log), 5)
            hint = doctor.dead_service_problem(service.name, pid, tail)
            result.append(_status(service, address, False, _join(*taken, hint, *warnings)))
        elif not service.ready(entry):
            taken = _ports_taken(service, entry, own_pid=pid)
            hint = f"running but not answering on {address}; see {settings.log_file(service.log)}"
            result.append(_status(service, address, False, _join(*taken, hint, *warnings)))
        else:
            details = service.details(entry) or None
            result.append(_status(service, address, True, _join(*warnings), details))
    return result


def _ports_taken(service: Service, entry: dict, *, own_pid: int | None) -> list[str]:
    """Who else holds the service's recorded ports, in words (`doctor.port_problem`)."""
    problems = (doctor.port_problem(entry[key], own_pid=own_pid) for key in service.ports)
    return [str(p) for p in problems if p]


def _join(*problems: str) -> str | None:
    return "\n".join(problems) or None


def _status(
    service: Service,
    address: str,
    up: bool,
    problem: str | None = None,
    details: dict | None = None,
) -> ServiceStatus:
    return ServiceStatus(
        service.name, service.title, address, service.version(), up, problem, details
    )


_NOT_FIELDS = ("name", "details")


def status_json(statuses: list[ServiceStatus]) -> str:
    """``status --json``: service name -> address, version, up (and the problem, if any, and
    the service's details: the Spark master's web UI address and worker count)."""
    payload = {
        s.name: {
            **{k: v for k, v in asdict(s).items() if k not in _NOT_FIELDS and v is not None},
            **(s.details or {}),
        }
        for s in statuses
    }
    return json.dumps(payload, indent=2)
