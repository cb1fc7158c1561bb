"""Recovery by recomputation: a bad speed layer is healed; S3 rebuilds any warehouse."""

from __future__ import annotations

from datetime import timedelta

import pytest
from helpers import DAY0, Delivery, as_dict, expected_view, produce, tweet

from lambda_demo.batch.run import run_batch
from lambda_demo.serving import check
from lambda_demo.settings import Settings
from lambda_demo.tutorial import recovery

pytestmark = pytest.mark.integration


def _stream_with_duplicates() -> list[Delivery]:
    out = []
    for i in range(60):
        ts = DAY0 + timedelta(hours=i)
        t = tweet(i + 1, ["Oslo", "Lima", "Pune"][i % 3], followers=i, likes=1)
        out.append(Delivery(ts, t))
        if i % 4 == 0:
            out.append(Delivery(ts + timedelta(minutes=3), t))
    return out


def test_bug_is_visible_then_healed_and_master_dataset_rebuilds(settings: Settings, spark) -> None:
    deliveries = _stream_with_duplicates()
    produce(settings, deliveries)
    cutoff = (DAY0 + timedelta(days=1)).date()
    run_batch(settings, cutoff=cutoff, progress=False)

    recovery.deploy_buggy_speed_layer(settings)
    assert not check.check(settings).ok, "the buggy speed layer must show up in check"

    recovery.deploy_fixed_speed_layer(settings)
    assert check.check(settings).ok

    last_day = (deliveries[-1].ts + timedelta(days=1)).date()
    rebuilt = recovery.rebuild_from_master_dataset(
        settings, schema=f"{settings.warehouse_schema}_rebuilt", cutoff=last_day
    )
    assert as_dict(rebuilt.view) == expected_view(deliveries)
    kappa = recovery.reprocess_from_kafka(settings, schema=f"{settings.warehouse_schema}_kappa")
    assert as_dict(kappa.view) == expected_view(deliveries)
