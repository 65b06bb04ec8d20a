"""Live values: the newest sample wins, and the device's word ends a loss of communication."""

from __future__ import annotations

import math
from datetime import timedelta

from beffroi.core.live import LiveValues
from beffroi.core.model import Quality, Sample, utcnow


def test_an_older_sample_does_not_replace_a_newer_one() -> None:
    live = LiveValues()
    now = utcnow()
    live.update([Sample("t", now, 2.0)])
    live.update([Sample("t", now - timedelta(seconds=5), 1.0)])
    assert live.get("t") == Sample("t", now, 2.0)


def test_an_unchanged_value_read_again_after_commloss_is_current() -> None:
    """A value unchanged for an hour comes back after an outage with its old source time."""
    live = LiveValues()
    now = utcnow()
    hour_ago = now - timedelta(hours=1)
    live.update([Sample("t", hour_ago, 7.0)])
    live.update([Sample("t", now, math.nan, Quality.COMM_LOSS)])
    live.update([Sample("t", hour_ago, 7.0)])
    assert live.get("t") == Sample("t", hour_ago, 7.0)
    # Past the outage, time order holds again.
    live.update([Sample("t", hour_ago - timedelta(minutes=1), 6.0)])
    assert live.get("t") == Sample("t", hour_ago, 7.0)


def test_a_late_commloss_marker_still_marks_the_outage() -> None:
    live = LiveValues()
    now = utcnow()
    live.update([Sample("t", now - timedelta(seconds=1), 7.0)])
    live.update([Sample("t", now, math.nan, Quality.COMM_LOSS)])
    got = live.get("t")
    assert got is not None and got.quality is Quality.COMM_LOSS
