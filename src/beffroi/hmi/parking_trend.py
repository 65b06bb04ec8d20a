"""Whether each car park is filling, emptying or stable, read from the historian.

The trend compares the free spaces now with their mean over an earlier window (between
`trend_min` and `trend_min / 2` ago). One historian query serves every car park, and it runs
at most once per `refresh_s` whoever asks: the public pages never load the historian per visitor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

from beffroi.core.model import Quality
from beffroi.core.seams import Historian

log = logging.getLogger(__name__)

Trend = Literal["filling", "emptying", "stable"]

# A change smaller than this many spaces, or this share of capacity, is noise: "stable".
MIN_CHANGE_SPACES = 3
MIN_CHANGE_SHARE = 0.02


def trend_of(now_free: int | None, before_free: float | None, capacity: int | None) -> Trend | None:
    """Return the trend from free spaces now and earlier; None when either is unknown."""
    if now_free is None or before_free is None:
        return None
    threshold = max(MIN_CHANGE_SPACES, MIN_CHANGE_SHARE * (capacity or 0))
    change = now_free - before_free
    if change <= -threshold:
        return "filling"  # fewer free spaces than before
    if change >= threshold:
        return "emptying"
    return "stable"


class TrendReader:
    """Read the earlier mean of free spaces per tag, refreshed at most once per refresh_s."""

    def __init__(self, historian: Historian | None, window_min: float, refresh_s: float = 60.0):
        self.historian, self.refresh_s = historian, refresh_s
        self.window = timedelta(minutes=window_min)
        self._at = -float("inf")
        self._before: dict[str, float] = {}
        self._asked: set[str] = set()
        self._lock = threading.Lock()

    def before(self, tags: Sequence[str], now: datetime) -> dict[str, float]:
        """Return tag -> mean of its good values in the earlier window (tags without any absent)."""
        if self.historian is None:
            return {}
        with self._lock:
            mono = time.monotonic()
            if mono - self._at >= self.refresh_s or not set(tags) <= self._asked:
                self._before = self._read(list(tags), now)
                self._asked = set(tags)
                self._at = mono
            return self._before

    def _read(self, tags: list[str], now: datetime) -> dict[str, float]:
        """Query the window once for every tag; a failing historian leaves trends unknown."""
        if not tags or self.historian is None:
            return {}
        try:
            frame = self.historian.query(tags, now - self.window, now - self.window / 2)
        except Exception:
            # The public page must still answer: without history, trends are just not shown.
            log.exception("parking trends: historian query failed")
            return {}
        if frame.empty:
            return {}
        good = frame[frame["quality"] == int(Quality.GOOD)]
        values = good["value"].astype(float)
        means = values.groupby(good["tag"]).mean()
        return {str(tag): float(v) for tag, v in means.items()}
