"""The first difference between two per-location results whose columns are not the view's.

``base.view_difference`` compares the view's four measures; an exercise with columns of its
own (an average, a distinct count, a new measure) names them here, and floats compare within
a tolerance, since the warehouse and pandas round division differently in the last digits.
"""

from __future__ import annotations

import math
from decimal import Decimal

import pandas as pd

from lambda_demo import view

TOLERANCE = 1e-6
"""Relative tolerance for a column of floats (an average)."""


def frame_difference(
    expected: pd.DataFrame, got: pd.DataFrame, columns: tuple[str, ...]
) -> str | None:
    """The first difference in words, location by location (None if there is none)."""
    missing = [c for c in (view.KEY, *columns) if c not in got.columns]
    if missing:
        return f"your result has no column {', '.join(missing)} (it has {', '.join(got.columns)})"
    if got[view.KEY].duplicated().any():
        twice = got.loc[got[view.KEY].duplicated(), view.KEY].iloc[0]
        return f"location {twice!r} appears in more than one row: group by location"
    want = expected.set_index(view.KEY)
    have = got.set_index(view.KEY)
    for location in sorted(set(want.index) | set(have.index)):
        if location not in have.index:
            return f"location {location!r} is missing from your result"
        if location not in want.index:
            return f"location {location!r} should not be in your result"
        for column in columns:
            problem = _cell_difference(want.at[location, column], have.at[location, column])
            if problem:
                return f"location {location!r}, column {column}: {problem}"
    return None


def _cell_difference(want: object, have: object) -> str | None:
    """``expected X, got Y`` when two cells differ (floats within `TOLERANCE`)."""
    if have is None or (isinstance(have, float) and math.isnan(have)):
        return f"expected {_show(want)}, got NULL"
    if isinstance(want, float | Decimal) or isinstance(have, float | Decimal):
        if math.isclose(float(want), float(have), rel_tol=TOLERANCE):  # type: ignore[arg-type]
            return None
    elif int(want) == int(have):  # type: ignore[call-overload]
        return None
    return f"expected {_show(want)}, got {_show(have)}"


def _show(value: object) -> str:
    return f"{float(value):.6g}" if isinstance(value, float | Decimal) else str(value)
