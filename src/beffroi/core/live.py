"""The current value of every tag, kept in memory for the HMI and rules."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence

from beffroi.core.model import Quality, Sample


class LiveValues:
    """Thread-safe map of tag → latest Sample, fed by the runtime's sink."""

    def __init__(self) -> None:
        self._values: dict[str, Sample] = {}
        self._lock = threading.Lock()

    def update(self, batch: Sequence[Sample]) -> None:
        """Keep the newest sample of each tag in the batch (older arrivals do not win), except
        that the first value after a loss of communication ends it whatever its source time."""
        with self._lock:
            values = self._values
            for s in batch:
                prev = values.get(s.tag)
                if prev is None or s.ts >= prev.ts or _ends_outage(prev, s):
                    values[s.tag] = s

    def get(self, tag: str) -> Sample | None:
        """Return the current sample of one tag."""
        return self._values.get(tag)

    def snapshot(self, tags: Iterable[str] | None = None) -> dict[str, Sample]:
        """Return a copy of the current samples of some tags (all when None)."""
        with self._lock:
            if tags is None:
                return dict(self._values)
            values = self._values
            return {t: values[t] for t in tags if t in values}

    def __len__(self) -> int:
        return len(self._values)


def _ends_outage(prev: Sample, new: Sample) -> bool:
    """Tell whether a sample is the device's word after a CommLoss the gateway stamped now.

    A value unchanged for hours comes back (a reconnection's first read, an edge's birth) with
    its old source time, older than the CommLoss marker: it still is what the device says.
    """
    return prev.quality is Quality.COMM_LOSS and new.quality is not Quality.COMM_LOSS
