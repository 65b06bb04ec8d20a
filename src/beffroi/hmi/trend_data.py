"""What a trend needs besides the samples in its window: the value held at its start and now.

Collectors report by exception: a value is sent when it changes, so the samples inside a
window do not tell what the value was at its start, nor that it still holds now. A trend
therefore starts from the last sample before the window, and in live view holds the newest
value up to now while the collector still vouches for it (its live sample is not CommLoss).
Staff positions (`core/privacy.py`) are drawn as the user's role may see them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta

import pandas as pd
from flask import has_request_context
from flask_login import current_user

from beffroi.api.query import coarse_positions
from beffroi.core.model import Quality, Sample
from beffroi.core.privacy import PositionPolicy, PositionViewer
from beffroi.core.seams import Historian
from beffroi.hmi.context import get_context

# Looked back in steps, so that the usual case (a sample a minute ago) costs a small query.
PRIOR_LOOKBACK = (timedelta(hours=1), timedelta(days=1), timedelta(days=7))


def prior_samples(historian: Historian, tags: Sequence[str], start: datetime) -> pd.DataFrame:
    """Return the last stored sample of each tag before `start`, up to a week back."""
    found: list[pd.DataFrame] = []
    missing = list(tags)
    for back in PRIOR_LOOKBACK:
        if not missing:
            break
        df = historian.query(missing, start - back, start)
        if df.empty:
            continue
        last = df.sort_values("ts", kind="stable").groupby("tag", sort=False).tail(1)
        found.append(last)
        missing = [t for t in missing if t not in set(last["tag"])]
    if not found:
        return pd.DataFrame()
    return pd.concat(found, ignore_index=True)


def live_tail(
    df: pd.DataFrame, tags: Sequence[str], live: Mapping[str, Sample], end: datetime
) -> tuple[pd.DataFrame, dict[str, datetime]]:
    """Add live samples newer than the stored ones; return them and how far each tag holds.

    A tag holds its newest value up to `end` when its live sample is newer than or as new as
    the stored ones and is not CommLoss: the collector is connected and nothing changed.
    """
    newest = df.groupby("tag")["ts"].max() if not df.empty else pd.Series(dtype=object)
    fresh: list[Sample] = []
    held: dict[str, datetime] = {}
    for tag in tags:
        s = live.get(tag)
        if s is None or s.quality == Quality.COMM_LOSS or s.ts > end:
            continue
        last = newest.get(tag)
        if last is not None and s.ts < last:
            continue  # the store knows better: a newer sample was read back from it
        if last is None or s.ts > last:
            fresh.append(s)
        held[tag] = end
    if not fresh:
        return df, held
    rows = pd.DataFrame(
        {
            "ts": pd.to_datetime([s.ts for s in fresh], utc=True),
            "tag": [s.tag for s in fresh],
            "value": [s.value for s in fresh],
            "quality": [int(s.quality) for s in fresh],
        }
    )
    return pd.concat([df, rows], ignore_index=True), held


def request_viewer() -> PositionViewer | None:
    """Return this request's user as a reader of staff positions; None outside a request."""
    if not has_request_context():
        return None
    hmi = get_context()
    # Every HMI page requires a login; a request without one sees positions coarsely anyway.
    role = current_user.user.role if current_user.is_authenticated else None
    return PositionViewer(PositionPolicy.from_config(hmi.cfg), role, hmi.register)


def trend_frame(
    historian: Historian,
    live: Mapping[str, Sample],
    tags: Sequence[str],
    window: tuple[datetime, datetime],
    max_points: int,
    live_view: bool,
    viewer: PositionViewer | None = None,
) -> tuple[pd.DataFrame, int, dict[str, datetime]]:
    """Return what a trend draws, the number of stored samples in its window, what holds.

    The samples of the window (downsampled), the last one before it, and in live view the
    live samples not stored yet with each tag's value held up to the window's end. Staff
    positions are as `viewer` may see them; by default, as the current request's user may.
    """
    start, end = window
    df = historian.query(tags, start, end, max_points=max_points)
    stored = len(df)
    prior = prior_samples(historian, tags, start)
    if not prior.empty:
        df = pd.concat([prior, df], ignore_index=True)
    held: dict[str, datetime] = {}
    if live_view:
        df, held = live_tail(df, tags, live, end)
    df = coarse_positions(df, viewer or request_viewer())
    return df, stored, held
