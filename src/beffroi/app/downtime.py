"""The gateway's own downtime, written into the history as CommLoss of what it collects.

Collectors report by exception, so readers of the history (trends, KPIs) take a value as held
until the next one. While the gateway is down nothing is collected, and a value taken as held
through that time would be made up. So a clean stop ends every collected tag with a CommLoss
sample (status BadShutdown) at the moment collection stops, and a heartbeat file, rewritten
every HEARTBEAT_S and marked stopped by a clean stop, lets the next start write the same after
the last moment a crashed or killed gateway was known to run.

After a restart, equipment that did not change sends its value with the time it last changed,
older than the mark: stored as such it would stay hidden behind the mark until it changes
again (days, for a state). Such a first value is stored again at the time it is received.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from beffroi.core import status_codes
from beffroi.core.errors import BeffroiError
from beffroi.core.model import Quality, Sample, utcnow
from beffroi.core.seams import Collector

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0
# Equipment sends its current values within this long of a (re)connection (OPC UA initial
# values, a first Modbus poll, MQTT retained messages): a value later than that is a new report.
FIRST_VALUES_S = 300.0
_AFTER = timedelta(microseconds=1)

Latest = Callable[[list[str]], pd.DataFrame]  # the historian's newest stored values of tags


def shutdown_samples(tags: Iterable[str], ts: datetime) -> list[Sample]:
    """Return the samples saying that nothing of these tags is known from `ts` on."""
    nan = float("nan")
    return [Sample(t, ts, nan, Quality.COMM_LOSS, None, status_codes.BadShutdown) for t in tags]


class Heartbeat:
    """A file saying until when the gateway ran, and whether it stopped cleanly."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._closed = False

    def read(self) -> dict[str, Any] | None:
        """Return the last run's record (None when there is none or it cannot be read)."""
        try:
            record: dict[str, Any] = json.loads(self.path.read_text())
            datetime.fromisoformat(record["alive"])
            return record
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("%s is unreadable (%s): the last downtime is not marked", self.path, exc)
            return None

    def beat(self) -> None:
        """Record that the gateway runs now (nothing once it has stopped)."""
        self._write({"alive": utcnow().isoformat(), "pid": os.getpid()})

    def stopped(self) -> None:
        """Record a clean stop: the next start has no downtime of ours to mark."""
        now = utcnow().isoformat()
        self._write({"alive": now, "stopped": now, "pid": os.getpid()})
        self._closed = True

    def _write(self, record: dict[str, Any]) -> None:
        """Write the record whole, then rename it in place: never half a file."""
        with self._lock:  # the scheduler's thread beats; the stop runs on the event loop
            if self._closed:
                return
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(record))
            os.replace(tmp, self.path)


class Downtime:
    """Marks the gateway's downtime in the history at its stop, or at the start after a crash."""

    def __init__(self, path: Path, put: Callable[[list[Sample]], None]) -> None:
        self.heartbeat = Heartbeat(path)
        self.previous: dict[str, Any] | None = None  # the last run's record, read at start
        self.marks = 0  # samples written for our own downtime
        self.restamped = 0  # first values after a restart stored again when received
        self._put = put
        # tag → its mark: a first value not newer than it is stored again when received
        self._first: dict[str, datetime] = {}
        self._first_until: datetime | None = None
        self._started = False

    def check_alone(self) -> None:
        """Refuse to start while another gateway beats in the same data folder (its pid alive
        and its last beat recent): its values would be marked lost, its heartbeat overwritten."""
        self.previous = self.heartbeat.read()
        prev = self.previous or {}
        pid = prev.get("pid")
        if prev.get("stopped") or not isinstance(pid, int) or pid == os.getpid():
            return
        # A running gateway beats every HEARTBEAT_S: an older beat is a crash, even if its pid
        # now names another process (after a reboot, say).
        if utcnow() - datetime.fromisoformat(prev["alive"]) > 3 * timedelta(seconds=HEARTBEAT_S):
            return
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return  # it died: a crash, marked at start
        except PermissionError:
            pass  # alive, another user's
        raise BeffroiError(
            f"{self.heartbeat.path}: another gateway (pid {pid}) is running on this data "
            "folder; stop it first, or give this one another --data folder"
        )

    def start(self, collectors: Sequence[Collector], latest: Latest) -> None:
        """Mark the downtime the previous run left unmarked; note what to store again."""
        tags = [t for c in collectors for t in c.tags]
        prev = self.previous
        if prev is not None and prev.get("stopped"):
            stopped = datetime.fromisoformat(prev["stopped"])
            self._first = dict.fromkeys(tags, stopped)
        elif prev is not None:
            since = datetime.fromisoformat(prev["alive"])
            log.warning("the previous run stopped without a clean stop; last alive %s", since)
            self._first = self._after_last_stored(tags, since, latest)
            marks = [s for t, ts in self._first.items() for s in shutdown_samples([t], ts)]
            self._mark(marks + [Sample(c.status_tag, since, False) for c in collectors])
        self._first_until = utcnow() + timedelta(seconds=FIRST_VALUES_S)
        self.heartbeat.beat()
        self._started = True

    def _after_last_stored(
        self, tags: list[str], since: datetime, latest: Latest
    ) -> dict[str, datetime]:
        """Return each tag's mark: the last heartbeat, or just after a newer stored sample."""
        marks = dict.fromkeys(tags, since)
        try:
            newest = latest(tags)
        except Exception:  # the historian down: the heartbeat is the best known
            log.warning("newest stored values unknown: downtime marked from the heartbeat")
            return marks
        for tag, ts in zip(newest["tag"], newest["ts"], strict=True):
            if tag in marks and ts.to_pydatetime() >= since:
                marks[tag] = ts.to_pydatetime() + _AFTER
        return marks

    def restamp(self, batch: Sequence[Sample]) -> list[Sample]:
        """Return copies, stamped now, of first values older than their tag's mark."""
        if not self._first:
            return []
        now, copies = utcnow(), []
        if self._first_until is not None and now > self._first_until:
            self._first.clear()  # tags still silent: not a check on every batch forever
            return []
        for s in batch:
            mark = self._first.pop(s.tag, None)
            if mark is not None and s.ts <= mark and s.quality != Quality.COMM_LOSS:
                copies.append(replace(s, ts=max(now, mark + _AFTER)))
        self.restamped += len(copies)
        return copies

    def stop(self, collectors: Sequence[Collector]) -> None:
        """End collection in the history; record a clean stop if this run got to start."""
        if collectors:
            now = utcnow()
            tags = [t for c in collectors for t in c.tags]
            disconnected = [Sample(c.status_tag, now, False) for c in collectors]
            self._mark(shutdown_samples(tags, now) + disconnected)
        if self._started:  # a start that failed early keeps the evidence of a crash before it
            self.heartbeat.stopped()

    def _mark(self, samples: list[Sample]) -> None:
        self.marks += len(samples)
        self._put(samples)
