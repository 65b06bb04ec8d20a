"""When each asset counts in the KPIs: from its addition to the register until its retirement.

The register changes while the gateway runs. An asset added at 10:20 counts from 10:20: its
expected seconds in that hour are 40 minutes, so the hour's coverage says what is known of the
assets then in service, not that 20 minutes of a newcomer are missing. A retired asset counts
until its retirement, then no more: its values are cut there (a held kW does not run on), and
hours computed again later (late data) still count it up to then, so closed periods do not move
because the register did. Assets in the register when the engine started count from always.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from beffroi.core.model import Asset
from beffroi.core.register import Register, RegisterChange

ALWAYS = (-math.inf, math.inf)
Key = tuple[str, str, str]  # asset id, class, commune: what names its tags


def _key(a: Asset) -> Key:
    return a.id, a.asset_class, a.commune


@dataclass(frozen=True, slots=True)
class Tenure:
    """One asset record and the time it is in service, [since, until) in epoch seconds."""

    asset: Asset
    since: float = -math.inf
    until: float = math.inf


class InService:
    """The tenures of the assets added or retired since the engine started (thread-safe)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._since: dict[Key, float] = {}  # added while running: when
        self._past: list[Tenure] = []  # retired while running: the record and its tenure
        self.revision = 0

    def follow(self, change: RegisterChange, now: float) -> None:
        """Record a change of the register made at `now` (epoch seconds)."""
        with self._lock:
            for old in change.retired:
                since = self._since.pop(_key(old), -math.inf)
                self._past.append(Tenure(old, since, now))
            for new in change.added:
                self._since[_key(new)] = now
            if change.retired or change.added:
                self.revision += 1

    def tenures(self, register: Register, start: float, end: float) -> list[Tenure]:
        """Return the tenures that overlap [start, end): assets in service, and retired ones."""
        with self._lock:
            since, past = dict(self._since), list(self._past)
        out = [
            Tenure(a, since.get(_key(a), -math.inf))
            for a in register.assets.values()
            if since.get(_key(a), -math.inf) < end
        ]
        out += [t for t in past if t.until > start and t.since < end]
        return out

    def retired_records(self) -> list[Asset]:
        """Return the records of the assets retired while running (their tags stay inputs)."""
        with self._lock:
            return [t.asset for t in self._past]


def expected_seconds(windows: Sequence[tuple[float, float]], edges: np.ndarray) -> np.ndarray:
    """Return each asset-hour's seconds in service: the overlap of its tenure with the hour."""
    if not len(windows):
        return np.zeros((0, len(edges) - 1))
    w = np.array(windows, float)
    lo = np.maximum(edges[None, :-1], w[:, :1])
    hi = np.minimum(edges[None, 1:], w[:, 1:])
    return np.clip(hi - lo, 0.0, None)
