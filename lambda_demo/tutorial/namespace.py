"""A notebook's own names on the shared stack: topics, bucket, schema and checkpoints.

Each notebook works in a namespace of its own, so it runs alone, in any order, and twice in a
row with the same story. The names are fixed (not random like ``settings.isolated_settings``),
so a re-run finds what the previous run left, and the notebook decides what to empty
(``explore.reset_namespace``).
"""

from __future__ import annotations

from lambda_demo.settings import Settings, get_settings


def notebook_namespace(name: str, settings: Settings | None = None) -> Settings:
    """Settings named after ``name`` on the same stack: topics ``name`` and ``name.dlq``,
    bucket ``lambda-demo-name``, schema ``name`` (dashes as underscores), and checkpoints
    under ``$LAMBDA_DEMO_HOME/checkpoints/name``."""
    settings = settings or get_settings()
    return settings.model_copy(
        update={
            "topic": name,
            "dlq_topic": f"{name}.dlq",
            "s3_bucket": f"lambda-demo-{name}",
            "warehouse_schema": name.replace("-", "_"),
            "checkpoint_location": str(settings.home / "checkpoints" / name),
        }
    )
