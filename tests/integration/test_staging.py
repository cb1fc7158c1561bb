"""Staged copies (issue 20): each raw object's records judged once, at archive time.

The raw objects stay the master dataset. A staged copy is used only when it was built from the
very bytes of its raw object; a missing, damaged, altered or stale one is rebuilt from the raw
object, never skipped, and a changed raw object wins over its old staged copy.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from datetime import date, timedelta

import pytest
from helpers import DAY0, Delivery, as_dict, expected_view, produce, query, tweet

from lambda_demo.batch import archiver, staging
from lambda_demo.batch.archiver import CHECKSUM_METADATA, list_archived
from lambda_demo.batch.loader import read_object, staged_copy
from lambda_demo.batch.run import run_batch
from lambda_demo.clients import storage
from lambda_demo.serving import reads
from lambda_demo.settings import Settings

pytestmark = pytest.mark.integration

EVERY_DAY = date(2100, 1, 1)  # a cutoff after every ingest day: the batch view serves it all


def _deliveries() -> list[Delivery]:
    """Four days of tweets and one garbage record a day: several objects, each with a
    quarantined record."""
    found = []
    for day in range(4):
        ts = DAY0 + timedelta(days=day)
        found += [
            Delivery(ts + timedelta(seconds=i), tweet(day * 100 + i, f"city {i % 3}", i, 1, 2))
            for i in range(30)
        ]
        found.append(Delivery(ts + timedelta(seconds=40), garbage=b'{"v": 1, "tweet_id": 7'))
    return found


def _staged_bytes(settings: Settings, s3, raw_key: str) -> tuple[bytes, bytes]:
    manifest = s3.get_object(Bucket=settings.s3_bucket, Key=staging.manifest_key(raw_key))
    body = manifest["Body"].read()
    rows_key = json.loads(body)["rows_key"]
    return body, s3.get_object(Bucket=settings.s3_bucket, Key=rows_key)["Body"].read()


def test_each_staged_copy_is_what_its_raw_object_rebuilds(settings: Settings) -> None:
    produce(settings, _deliveries())
    run_batch(settings, only="archive", progress=False)
    s3 = storage.s3_client(settings)
    objects = list_archived(settings, client=s3)
    assert len(objects) >= 4
    reasons = []
    for obj in objects:
        manifest_body, rows_body = _staged_bytes(settings, s3, obj.key)
        raw = s3.get_object(Bucket=settings.s3_bucket, Key=obj.key)["Body"].read()
        rows, rejected = read_object(gzip.decompress(raw), object_key=obj.key)
        rebuilt = staging.build(
            _archived(raw),
            raw_key=obj.key,
            raw_sha256=hashlib.sha256(raw).hexdigest(),
            dialect=settings.warehouse_dialect,
        )
        # Built at archive time from Kafka's records, rebuilt here from the raw object: the
        # same bytes, the same rows and quarantine as the loader's own reading.
        assert (rebuilt.manifest_bytes(), rebuilt.rows_body) == (manifest_body, rows_body)
        assert gzip.decompress(rows_body).decode() == staging.csv_rows(rows)
        assert rebuilt.quarantined() == rejected
        reasons += [q.reason for q in rejected]
    assert reasons == ["not_json"] * 4  # the day's garbage record, each in some object


def _archived(raw: bytes) -> list[staging.Delivery]:
    found = []
    for line in gzip.decompress(raw).split(b"\n"):
        if line:
            record = json.loads(line)
            value = None if record["value"] is None else record["value"].encode()
            found.append((record["partition"], record["offset"], record["timestamp_ms"], value))
    return found


def test_missing_damaged_and_stale_staged_copies_are_rebuilt_from_the_raw_objects(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    deliveries = _deliveries()
    produce(settings, deliveries)
    run_batch(settings, only="archive", progress=False)
    s3 = storage.s3_client(settings)
    bucket = settings.s3_bucket
    objects = list_archived(settings, client=s3)
    before = {obj.key: _staged_bytes(settings, s3, obj.key) for obj in objects}
    no_manifest, cut_rows, no_rows, altered, stale = objects[:5]
    s3.delete_object(Bucket=bucket, Key=staging.manifest_key(no_manifest.key))
    rows_key = json.loads(before[cut_rows.key][0])["rows_key"]
    s3.put_object(Bucket=bucket, Key=rows_key, Body=before[cut_rows.key][1][:20])
    s3.delete_object(Bucket=bucket, Key=json.loads(before[no_rows.key][0])["rows_key"])
    # A manifest edited by hand (its own checksum no longer matches) ...
    edited = json.loads(before[altered.key][0])
    edited["rows"] = 0
    s3.put_object(
        Bucket=bucket, Key=staging.manifest_key(altered.key), Body=json.dumps(edited).encode()
    )
    # ... and one judged by other rules (consistent in itself, but stale).
    old = json.loads(before[stale.key][0])
    old["rules"] = "an-older-contract"
    del old["sha256"]
    old["sha256"] = hashlib.sha256(
        json.dumps(old, sort_keys=True, ensure_ascii=False).encode()
    ).hexdigest()
    s3.put_object(Bucket=bucket, Key=staging.manifest_key(stale.key), Body=json.dumps(old).encode())

    with caplog.at_level(logging.INFO, logger="lambda_demo.batch.loader"):
        summary = run_batch(settings, cutoff=EVERY_DAY, progress=False)

    assert as_dict(reads.serving_view(settings)) == expected_view(deliveries)
    assert (summary.rows_loaded, summary.quarantined) == (120, 4)
    assert query(settings, "SELECT COUNT(*) FROM quarantine WHERE reason = 'not_json'") == [(4,)]
    for obj in (no_manifest, cut_rows, no_rows, altered, stale):
        named = [r for r in caplog.records if obj.key in r.getMessage()]
        assert named, f"the rebuild of {obj.key} was not named"
        # Damage is a warning; a copy made under older rules is expected after a change.
        want = "INFO" if obj is stale else "WARNING"
        assert {r.levelname for r in named} == {want}, [r.getMessage() for r in named]
        assert _staged_bytes(settings, s3, obj.key) == before[obj.key], f"{obj.key} differs"


def test_a_changed_raw_object_wins_over_its_old_staged_copy(settings: Settings) -> None:
    """The master dataset decides: a raw object rewritten (with a valid checksum) since its
    staged copy was built is judged again."""
    deliveries = _deliveries()
    produce(settings, deliveries)
    run_batch(settings, only="archive", progress=False)
    s3 = storage.s3_client(settings)
    obj = list_archived(settings, client=s3)[0]
    raw = gzip.decompress(
        s3.get_object(Bucket=settings.s3_bucket, Key=obj.key)["Body"].read()
    ).decode()
    assert '\\"location\\":\\"city 0\\"' in raw
    changed = gzip.compress(raw.replace("city 0", "Atlantis").encode(), mtime=0)
    s3.put_object(
        Bucket=settings.s3_bucket,
        Key=obj.key,
        Body=changed,
        Metadata={CHECKSUM_METADATA: hashlib.sha256(changed).hexdigest()},
    )

    staged = staged_copy(settings, s3, obj)

    assert staged.manifest["source_sha256"] == hashlib.sha256(changed).hexdigest()
    assert "Atlantis" in gzip.decompress(staged.rows_body).decode()


def _everything(settings: Settings, s3) -> dict[str, bytes]:
    listing = s3.list_objects_v2(Bucket=settings.s3_bucket)
    keys = [item["Key"] for item in listing.get("Contents", []) if not item["Key"].endswith("/")]
    return {key: s3.get_object(Bucket=settings.s3_bucket, Key=key)["Body"].read() for key in keys}


def test_writer_processes_write_the_same_bytes_as_one_process(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    produce(settings, _deliveries())
    archiver.archive(settings, progress=False)
    s3 = storage.s3_client(settings)
    here = _everything(settings, s3)

    other = settings.model_copy(update={"s3_bucket": settings.s3_bucket + "-workers"})
    storage.ensure_bucket(other)
    monkeypatch.setattr(archiver, "PARALLEL_FROM", 0)  # a run this small, in worker processes
    result = archiver.archive(other, progress=False)

    assert result.records_archived == len(_deliveries())
    assert any(key.startswith("staging/manifests/") for key in here)
    assert _everything(other, s3) == here
