"""Lose a broker: three Kafka brokers, a replay, and the leader of a partition SIGKILLed in
the middle of it, one step per notebook cell (notebook 06, "Lose a broker").

The brokers are the ``cluster`` profile's three KRaft nodes, started alone
(``stack.up(settings, kafka_only=True)``) in a home of their own: the notebook's own stack is
not touched, and no S3Proxy, PostgreSQL or Spark starts that the lesson would not use. Each
partition gets three replicas and ``min.insync.replicas=2`` (`kafka_io.ensure_topics`); the
replay's producer sends with ``acks=all`` and idempotence (`kafka_io.producer`), unchanged.

Every step shows observable state: the partition table is the cluster's own metadata, the
counts come from Kafka's offsets and from reading every record back, never from what the
code believes it sent. The cluster drill (``tests/drills/test_cluster.py``) uses the same
`describe_partitions` and `lambda_demo.stack.kill_service`.
"""

from __future__ import annotations

import contextlib
import json
import math
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafka import KafkaConsumer, TopicPartition
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import KafkaConnectionError, KafkaTimeoutError

from lambda_demo import stack
from lambda_demo.clients import kafka_io
from lambda_demo.errors import LambdaDemoError, StackError
from lambda_demo.ingestion.clock import SimulatedClock, wait_until
from lambda_demo.ingestion.replay import SAMPLE_FILE
from lambda_demo.settings import Settings
from lambda_demo.tutorial.recovery import BackgroundReplay, valid_tweets_in

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

STEP_TIMEOUT_SECONDS = 120.0
"""How long a step waits for the state it promises before it gives up in words."""

SAMPLE_EVERY_SECONDS = 0.25
"""How often the replay's progress is read from Kafka's end offsets, for the figure."""
SAMPLE_TIMEOUT_MS = 200
"""How long one partition's end offset may take to read before it counts as unknown."""


# --- the cluster's metadata --------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class PartitionState:
    """One partition as the cluster's metadata describes it, by node id.

    ``leader`` is -1 while the partition has none (its leader died and no other has been
    elected yet). ``in_sync`` lists the replicas that have every record the partition
    acknowledged: the only ones that may become its leader.
    """

    topic: str
    partition: int
    leader: int
    replicas: tuple[int, ...]
    in_sync: tuple[int, ...]


def describe_partitions(settings: Settings, topics: Iterable[str] = ()) -> list[PartitionState]:
    """Leader, replicas and in-sync replicas of every partition of ``topics`` (by default
    the tweets topic and its dead-letter topic), read from the cluster's metadata."""
    names = list(topics) or [settings.topic, settings.dlq_topic]
    admin = kafka_io.admin(settings)
    with contextlib.closing(admin):
        described = admin.describe_topics(names)
    return sorted(
        PartitionState(
            topic=topic["name"],
            partition=p["partition_index"],
            leader=p["leader_id"],
            replicas=tuple(sorted(p["replica_nodes"])),
            in_sync=tuple(sorted(p["isr_nodes"])),
        )
        for topic in described
        for p in topic["partitions"]
    )


def min_insync_replicas_of(settings: Settings, topic: str) -> int:
    """The topic's ``min.insync.replicas`` as the cluster has it, not as we asked for it."""
    admin = kafka_io.admin(settings)
    with contextlib.closing(admin):
        configs = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    return int(configs["topic"][topic]["min.insync.replicas"]["value"])


def node_names(settings: Settings) -> dict[int, str]:
    """``{node id: service name}`` of the stack's Kafka nodes, as ``stack up`` recorded them."""
    state = json.loads(settings.state_file.read_text())
    return {entry["node_id"]: name for name, entry in state.items() if "node_id" in entry}


def partition_table(partitions: list[PartitionState], names: dict[int, str]) -> pd.DataFrame:
    """The partitions as a table a reader compares at a glance: nodes by their service
    names, and how many replicas are in sync beside how many there are."""
    import pandas as pd

    def named(nodes: tuple[int, ...]) -> str:
        return ", ".join(names.get(node, str(node)) for node in nodes)

    rows = [
        {
            "topic": p.topic,
            "partition": p.partition,
            "leader": names.get(p.leader, "none") if p.leader >= 0 else "none",
            "replicas": named(p.replicas),
            "in-sync replicas": named(p.in_sync),
            "in sync": f"{len(p.in_sync)} of {len(p.replicas)}",
        }
        for p in partitions
    ]
    return pd.DataFrame(rows).set_index(["topic", "partition"])


def fully_in_sync(partitions: list[PartitionState]) -> bool:
    """Every replica of every partition is in sync again (and each partition has a leader)."""
    return bool(partitions) and all(
        p.leader >= 0 and set(p.in_sync) == set(p.replicas) for p in partitions
    )


def leader_of(partitions: list[PartitionState], topic: str, partition: int) -> int:
    """The node that leads ``topic``'s ``partition`` (-1: none right now)."""
    (state,) = (p for p in partitions if (p.topic, p.partition) == (topic, partition))
    return state.leader


# --- the lesson, one step per cell -------------------------------------------------------------


@dataclass
class LoseABroker:
    """Replay a file into three brokers, SIGKILL the leader of a partition mid-replay, read
    everything back, and bring the broker back, one method per notebook cell."""

    settings: Settings
    sample: Path
    speedup: float
    clock: SimulatedClock = field(init=False)
    victim: str | None = field(default=None, init=False)
    progress: list[tuple[float, dict[int, int | None]]] = field(default_factory=list, init=False)
    """(seconds since the replay started, {partition: its end offset, or None when no answer
    came: no leader, or one this reader did not know of yet}), for the figure."""
    events: dict[str, float] = field(default_factory=dict, init=False)
    """When each thing happened, in seconds since the replay started."""
    _replay: BackgroundReplay | None = field(default=None, init=False)
    _started: float = field(default=0.0, init=False)

    def __post_init__(self) -> None:
        self.clock = SimulatedClock(speedup=self.speedup)

    @classmethod
    def start(
        cls, home: Path, *, sample: Path = SAMPLE_FILE, speedup: float = 25_000
    ) -> LoseABroker:
        """Three brokers in ``home``, emptied first, with the topics created.

        Emptied, because a replay resumes: on topics that already held the file (a run that
        stopped half-way) it would send nothing, and there would be nothing to watch. The
        sample's three days last 3 x 86,400 / ``speedup`` seconds (about 10 s by default):
        long enough to kill a broker while it plays.
        """
        settings = Settings(home=home, profile="cluster")
        stack.reset(settings)
        stack.up(settings, kafka_only=True)
        wait_until(
            lambda: _all_described(settings),
            STEP_TIMEOUT_SECONDS,
            "every partition of the new topics to have a leader and its replicas in sync",
        )
        return cls(settings=settings, sample=sample, speedup=speedup)

    def min_insync_replicas(self) -> int:
        """How many replicas must have a write before ``acks=all`` acknowledges it."""
        return min_insync_replicas_of(self.settings, self.settings.topic)

    def partitions(self) -> pd.DataFrame:
        """Every partition's leader, replicas and in-sync replicas, as the cluster says now."""
        return partition_table(describe_partitions(self.settings), node_names(self.settings))

    def start_replay(self) -> None:
        """Play the file into the cluster from a background thread (the real `replay`), and
        record how many records each partition has acknowledged as it goes."""
        self._started = time.monotonic()
        self._replay = BackgroundReplay.start(self.settings, self.sample, self.speedup, self.clock)
        threading.Thread(target=self._record_progress, name="progress", daemon=True).start()

    def await_records(self, records: int) -> int:
        """Wait until Kafka holds at least ``records`` tweets while the replay still runs;
        return how many it holds."""

        def enough() -> int:
            if not self._replaying():
                raise LambdaDemoError(
                    "The replay ended before the broker was killed: start again with a "
                    "lower speedup."
                )
            held = self.records_in_kafka()
            return held if held >= records else 0

        return wait_until(
            enough, STEP_TIMEOUT_SECONDS, f"{records} records in Kafka", interval_seconds=0.1
        )

    def records_in_kafka(self) -> int:
        """Records the tweets topic holds: its end offsets, which count only what the
        in-sync replicas have (the high watermark)."""
        offsets = kafka_io.partition_offsets(self.settings, self.settings.topic)
        return sum(end - begin for begin, end in offsets.values())

    def kill_leader(self, partition: int = 0) -> dict[str, Any]:
        """SIGKILL the broker that leads ``partition`` of the tweets topic, then wait until
        the cluster has elected another leader for it."""
        topic = self.settings.topic
        names = node_names(self.settings)
        self.victim = names[leader_of(describe_partitions(self.settings), topic, partition)]
        self.events["broker killed"] = self._elapsed()
        stack.kill_service(self.victim, self.settings)

        def new_leader() -> int:
            try:
                leader = leader_of(describe_partitions(self.settings), topic, partition)
            except KafkaConnectionError:  # asked the dead broker, not yet fenced: ask again
                return 0
            return leader if leader >= 0 and names[leader] != self.victim else 0

        elected = wait_until(
            new_leader, STEP_TIMEOUT_SECONDS, f"a new leader of {topic}[{partition}]"
        )
        self.events["new leader"] = self._elapsed()
        return {
            "killed": self.victim,
            f"new leader of partition {partition}": names[elected],
            "seconds until a new leader was seen": round(
                self.events["new leader"] - self.events["broker killed"], 1
            ),
            "replay": "running" if self._replaying() else "finished",
        }

    def finish_replay(self) -> dict[str, int]:
        """Wait for the replay to end; what it did (``failed``: sends it gave up on)."""
        if self._replay is None:
            raise LambdaDemoError("Start the replay first (start_replay).")
        return self._replay.result()

    def read_back(self) -> dict[str, int]:
        """Read every record from the brokers still alive and count them three ways.

        ``records`` against what the replay produced shows a loss; ``distinct lines`` (each
        record names its line of the file in a header) shows a record written twice; the
        tweet ids against the file's valid tweets show both, judged by the contract alone.
        """
        lines: set[int] = set()
        ids: set[bytes] = set()
        records = 0
        for record in self._records(self.settings.topic):
            records += 1
            lines.add(int(dict(record.headers)["replay-line"]))
            ids.add(record.key)
        return {
            "records": records,
            "distinct lines": len(lines),
            "distinct tweet ids": len(ids),
            "valid tweets in the file": valid_tweets_in(self.sample),
            "dead-lettered records": sum(1 for _ in self._records(self.settings.dlq_topic)),
        }

    def restart_broker(self) -> pd.DataFrame:
        """``stack.up`` starts the killed broker again, on its ports, with its data; wait
        until it has caught up and every replica is in sync again."""
        stack.up(self.settings, kafka_only=True)
        wait_until(
            lambda: fully_in_sync(describe_partitions(self.settings)),
            STEP_TIMEOUT_SECONDS,
            "every replica to be in sync again",
        )
        return self.partitions()

    def figure(self) -> Figure:
        """Records acknowledged per partition while the replay ran, with the kill marked."""
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(9, 4))
        seconds = [t for t, _ in self.progress]
        for partition in sorted(self.progress[-1][1]):
            ends = [acked[partition] for _, acked in self.progress]
            counts = [math.nan if end is None else end for end in ends]  # a gap: no leader
            ax.plot(seconds, counts, marker=".", markersize=3, label=f"partition {partition}")
        for event, color in [("broker killed", "#C44E52"), ("new leader", "#55A868")]:
            if event in self.events:
                ax.axvline(self.events[event], color=color, linestyle="--", label=event)
        ax.set_xlabel("seconds since the replay started")
        ax.set_ylabel("records acknowledged")
        ax.set_title(f"{self.victim} killed mid-replay: what each partition acknowledged")
        ax.legend(loc="upper left")
        fig.tight_layout()
        return fig

    def stop(self) -> None:
        """Kill the three brokers and delete their home: the cluster ends with its lesson.

        Killed, not stopped cleanly: their data is deleted next, so a clean shutdown would
        protect nothing, and three nodes stopping together can wait for a controller quorum
        that is shutting down too (30 s, until ``stack down`` kills them anyway).
        """
        for name in node_names(self.settings).values():
            with contextlib.suppress(StackError):  # not running: nothing to kill
                stack.kill_service(name, self.settings)
        stack.reset(self.settings)

    def _records(self, topic: str) -> Iterator[Any]:
        """Every record of ``topic``, partition by partition (`kafka_io.read_range`)."""
        consumer = kafka_io.consumer(self.settings, client_id="lambda-demo-read-back")
        with contextlib.closing(consumer):
            offsets = kafka_io.partition_offsets(self.settings, topic, consumer=consumer)
            for partition, (begin, end) in offsets.items():
                yield from kafka_io.read_range(
                    self.settings, topic, partition, begin, end, consumer=consumer
                )

    def _record_progress(self) -> None:
        """Every partition's end offset, read until the replay ends (the figure's data).

        Each partition is asked alone and briefly: one without a leader has no end offset to
        give (None, a gap in the figure), and must not hold up the others' answers.
        """
        topic = self.settings.topic
        consumer = kafka_io.consumer(self.settings, client_id="lambda-demo-progress")
        with contextlib.closing(consumer):
            partitions = [
                TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic))
            ]
            while True:
                replaying = self._replaying()
                acked = {tp.partition: _end_offset(consumer, tp) for tp in partitions}
                self.progress.append((self._elapsed(), acked))
                if not replaying:
                    return
                assert self._replay is not None
                self._replay.thread.join(timeout=SAMPLE_EVERY_SECONDS)  # next sample, or the end

    def _replaying(self) -> bool:
        return self._replay is not None and self._replay.running

    def _elapsed(self) -> float:
        return time.monotonic() - self._started


def _end_offset(consumer: KafkaConsumer, partition: TopicPartition) -> int | None:
    """The partition's end offset: the records its in-sync replicas all have (None: it has
    no leader to ask right now)."""
    try:
        return consumer.end_offsets([partition], timeout_ms=SAMPLE_TIMEOUT_MS)[partition]
    except KafkaTimeoutError:
        return None


def _all_described(settings: Settings) -> bool:
    """Both topics are known to the broker that answers, every replica of them in sync: a
    topic just created reaches each broker's metadata a moment later."""
    partitions = describe_partitions(settings)
    topics = {p.topic for p in partitions}
    return topics == {settings.topic, settings.dlq_topic} and fully_in_sync(partitions)
