"""The gateway's own downtime, written into the history as CommLoss of what it collects.

Collectors report by exception, so readers of the history (trends, KPIs) take a value as held
until the next one. While the gateway is down nothing is collected, and a value taken as held
through that time would be made up. So a clean stop ends every collected tag with a CommLoss
sample (status BadShutdown) at the moment collection stops, and a heartbeat file, rewritten
every HEARTBEAT_S and marked stopped by a clean stop, lets the next start write the same at
the last moment a crashed or killed gateway was known to run.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path

from beffroi.core.model import Quality, Sample, utcnow

log = logging.getLogger(__name__)

BAD_SHUTDOWN = 0x800C0000  # OPC UA: "the application is shutting down"
HEARTBEAT_S = 10.0


def shutdown_samples(tags: Iterable[str], ts: datetime) -> list[Sample]:
    """Return the samples saying that nothing of these tags is known from `ts` on."""
    nan = float("nan")
    return [Sample(t, ts, nan, Quality.COMM_LOSS, None, BAD_SHUTDOWN) for t in tags]


class Heartbeat:
    """A file saying until when the gateway ran, and whether it stopped cleanly."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.previous: dict[str, str] | None = None  # the last run's record, read at start

    def last_run_crashed(self) -> datetime | None:
        """Read the last run's record; return when it was last alive if it did not stop cleanly."""
        try:
            record = json.loads(self.path.read_text())
            alive = datetime.fromisoformat(record["alive"])
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s is unreadable (%s): the last downtime is not marked", self.path, exc)
            return None
        self.previous = record
        return None if record.get("stopped") else alive

    def beat(self) -> None:
        """Record that the gateway runs now."""
        self._write({"alive": utcnow().isoformat(), "pid": os.getpid()})

    def stopped(self) -> None:
        """Record a clean stop: the next start has no downtime of ours to mark."""
        now = utcnow().isoformat()
        self._write({"alive": now, "stopped": now, "pid": os.getpid()})

    def _write(self, record: dict) -> None:
        """Write the record whole, then rename it in place: never half a file."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record))
        os.replace(tmp, self.path)
