"""lambda-demo: learn the Lambda Architecture by building one on a stream of tweets."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_EXERCISE_API = ("grade", "reference")


def __getattr__(name: str) -> Any:
    """``lambda_demo.grade`` and ``lambda_demo.reference``, imported on first use: the graders
    need pandas and the warehouse client, which the CLI's start-up should not pay for."""
    if name in _EXERCISE_API:
        from lambda_demo.tutorial import grading

        return getattr(grading, name)
    raise AttributeError(f"module 'lambda_demo' has no attribute {name!r}")
