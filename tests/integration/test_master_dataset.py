"""The master dataset checks itself (issue 16): damaged objects heal from Kafka, and a topic
that no longer continues the archive stops the batch in words instead of leaving a gap."""

from __future__ import annotations

import contextlib
from datetime import date, timedelta

import pytest
from helpers import DAY0, Delivery, as_dict, expected_view, produce, tweet
from kafka import TopicPartition

from lambda_demo.batch.archiver import DamagedObject, MasterDatasetGap, list_archived
from lambda_demo.batch.run import run_batch
from lambda_demo.clients import kafka_io, storage
from lambda_demo.ingestion.clock import wait_until
from lambda_demo.serving import reads
from lambda_demo.settings import Settings

pytestmark = pytest.mark.integration

EVERY_DAY = date(2100, 1, 1)  # a cutoff after every ingest day: the batch view serves it all
LOCATIONS = ["London", "Zürich 🇨🇭", "東京", "(unknown)"]


def _days(n_days: int, per_day: int, *, first_id: int = 1, hour: int = 0) -> list[Delivery]:
    """``per_day`` tweets on each of ``n_days`` days, so the archive has one object per day
    and partition."""
    return [
        Delivery(
            DAY0 + timedelta(days=day, hours=hour, seconds=i),
            tweet(tid := first_id + day * per_day + i, LOCATIONS[tid % 4], followers=tid % 7),
        )
        for day in range(n_days)
        for i in range(per_day)
    ]


def test_damaged_and_missing_objects_are_rebuilt_from_kafka(settings: Settings) -> None:
    deliveries = _days(4, 40)
    produce(settings, deliveries)
    run_batch(settings, only="archive", progress=False)
    s3 = storage.s3_client(settings)
    objects = list_archived(settings, client=s3)
    assert len(objects) >= 6
    truncated, emptied, deleted = objects[1], objects[3], objects[4]
    body = s3.get_object(Bucket=settings.s3_bucket, Key=truncated.key)["Body"].read()
    s3.put_object(Bucket=settings.s3_bucket, Key=truncated.key, Body=body[: len(body) // 2])
    s3.put_object(Bucket=settings.s3_bucket, Key=emptied.key, Body=b"")
    s3.delete_object(Bucket=settings.s3_bucket, Key=deleted.key)

    run_batch(settings, cutoff=EVERY_DAY, progress=False)

    assert as_dict(reads.serving_view(settings)) == expected_view(deliveries)
    assert list_archived(settings, client=s3) == objects
    for obj in (truncated, emptied, deleted):
        healed = s3.get_object(Bucket=settings.s3_bucket, Key=obj.key)["Body"].read()
        assert len(healed) > 20, f"{obj.key} was not rebuilt"


def test_a_recreated_topic_stops_the_batch_naming_the_topic_and_the_gap(
    settings: Settings,
) -> None:
    produce(settings, _days(1, 30))
    run_batch(settings, cutoff=EVERY_DAY, progress=False)
    served = as_dict(reads.serving_view(settings))

    _recreate_topics(settings)
    produce(settings, _days(2, 60, first_id=10_000, hour=1))  # more records than before

    with pytest.raises(MasterDatasetGap, match=rf"{settings.topic}.*deleted and recreated"):
        run_batch(settings, cutoff=EVERY_DAY, progress=False)
    assert as_dict(reads.serving_view(settings)) == served, "a refused run changes nothing"


def test_a_shorter_recreated_topic_is_named_too(settings: Settings) -> None:
    produce(settings, _days(1, 60))
    run_batch(settings, only="archive", progress=False)
    _recreate_topics(settings)
    produce(settings, _days(1, 3, first_id=10_000))
    with pytest.raises(MasterDatasetGap, match="deleted and recreated, or truncated"):
        run_batch(settings, only="archive", progress=False)


def test_records_gone_from_kafka_before_they_were_archived_are_named(settings: Settings) -> None:
    produce(settings, _days(1, 30))
    run_batch(settings, only="archive", progress=False)
    produce(settings, _days(1, 30, first_id=1_000, hour=2))
    _delete_all_records(settings)  # retention ran before the next batch run
    with pytest.raises(MasterDatasetGap, match="no longer in Kafka"):
        run_batch(settings, only="archive", progress=False)


def test_a_damaged_object_kafka_no_longer_holds_stops_the_batch_naming_it(
    settings: Settings,
) -> None:
    produce(settings, _days(2, 30))
    run_batch(settings, only="archive", progress=False)
    _delete_all_records(settings)
    s3 = storage.s3_client(settings)
    damaged = list_archived(settings, client=s3)[0]
    s3.put_object(Bucket=settings.s3_bucket, Key=damaged.key, Body=b"")
    with pytest.raises(DamagedObject, match=damaged.key):
        run_batch(settings, only="load", progress=False)


def _recreate_topics(settings: Settings) -> None:
    """Delete the topics and create them again; bucket and schema stay as they are."""
    topics = {settings.topic, settings.dlq_topic}
    client = kafka_io.admin(settings)
    with contextlib.closing(client):
        client.delete_topics(sorted(topics))
        wait_until(lambda: not topics & set(client.list_topics()), 60, "the topics to go")

    def created() -> bool:
        with contextlib.suppress(Exception):  # Kafka may still be finishing the deletion
            kafka_io.ensure_topics(settings)
            return bool(kafka_io.partition_offsets(settings, settings.topic))
        return False

    wait_until(created, 60, "the topics to be created again")


def _delete_all_records(settings: Settings) -> None:
    """Move the start of every partition to its end, as retention would."""
    offsets = kafka_io.partition_offsets(settings, settings.topic)
    client = kafka_io.admin(settings)
    with contextlib.closing(client):
        client.delete_records(
            {TopicPartition(settings.topic, p): end for p, (_, end) in offsets.items()}
        )
