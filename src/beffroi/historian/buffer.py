"""The write path's buffer: memory for a flush interval, then the back end or the spool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from beffroi.core.model import Quality, Sample, utcnow
from beffroi.core.seams import Writer
from beffroi.historian.spool import Spool

log = logging.getLogger(__name__)

DROPPED_TAG = "_system/historian/dropped"
DRAIN_SLICE_S = 0.5  # live first: how long each flush spends sending the spool


class WriteBuffer:
    """Collect samples on the event loop and store them in large batches off the loop.

    Every flush writes to the back end; when that fails, the batch goes to the durable spool,
    and while the spool holds anything new batches follow it there, so the back end receives
    everything in order. The spool is drained with backoff once the back end answers again.
    Samples dropped (spool full, or memory full when even the spool fails) are counted and
    recorded in `_system/historian/dropped`.
    """

    def __init__(
        self,
        historian: Writer,
        spool: Spool,
        flush_interval_s: float = 1.0,
        max_batch: int = 100_000,
        max_pending: int = 5_000_000,
        *,
        replay: Callable[[Sequence[Sample]], int] | None = None,
        live_first: bool = False,
    ):
        self.historian = historian
        # What spooled batches go through when drained (default: the same write). An edge
        # sends them flagged historical: they are older than values already sent live.
        self._replay = replay or historian.write
        # A historian needs the order kept: new batches follow the spool there. An edge's
        # central site needs live values now: new batches go first, and the spool is sent
        # between them (DRAIN_SLICE_S at a time), flagged historical.
        self.live_first = live_first
        self.spool = spool
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._pending: deque[Sample] = deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task | None = None
        self._retry_at = 0.0
        self._backoff = 1.0
        self._dropped_seen = spool.dropped
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.backend_ok = True
        self.last_error = ""

    def put(self, batch: Sequence[Sample]) -> None:
        """Queue samples for the next flush (called on the event loop)."""
        self._pending.extend(batch)
        overflow = len(self._pending) - self.max_pending
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            self._count_dropped(overflow)
        if len(self._pending) >= self.max_batch:
            self._wake.set()

    def target_back(self) -> None:
        """Try the target at once (it said it is back): new batches first when live_first,
        not spooled behind a back-off that no longer holds."""
        self.backend_ok = True
        self._retry_at = 0.0
        self._wake.set()

    @property
    def depth(self) -> int:
        """Return the samples waiting in memory and in the spool."""
        return len(self._pending) + self.spool.pending

    def status(self) -> dict[str, Any]:
        """Return the write path's state for /healthz and the HMI."""
        return {
            "backend_ok": self.backend_ok,
            "written": self.written,
            "memory": len(self._pending),
            "spooled": self.spool.pending,
            "spool_bytes": self.spool.bytes,
            "dropped": self.dropped,
            "last_error": self.last_error,
        }

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Start the flush loop; on exit, store or spool everything still in memory."""
        self._task = asyncio.create_task(self._run(), name="historian-writer")
        stack.push_async_callback(self._stop)

    async def _run(self) -> None:
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            if self._stopping:
                break
            await self.flush()
            if self.live_first and self.spool and self.backend_ok:
                self._wake.set()  # more spool to send: the next slice after what came live

    def _take(self) -> list[Sample]:
        n = min(len(self._pending), self.max_batch)
        return [self._pending.popleft() for _ in range(n)]

    async def flush(self) -> int:
        """Store or spool everything in memory now, then drain the spool if it is due."""
        stored = 0
        while self._pending:
            batch = self._take()
            if self.backend_ok and (self.live_first or not self.spool):
                if await self._write(batch):
                    stored += len(batch)
                    continue
            if not await self._spool(batch):
                break
        if self.spool and time.monotonic() >= self._retry_at:
            stored += await self._drain(DRAIN_SLICE_S if self.live_first else None)
        return stored

    async def _write(self, batch: list[Sample], *, replay: bool = False) -> bool:
        try:
            await asyncio.to_thread(self._replay if replay else self.historian.write, batch)
        except Exception as exc:
            self._failed(exc)
            return False
        self.written += len(batch)
        return True

    async def _spool(self, batch: list[Sample]) -> bool:
        try:
            await asyncio.to_thread(self.spool.append, batch)
        except OSError as exc:
            # The disk refuses too: keep the samples in memory (bounded) and retry later.
            log.error("spool write failed: %s", exc)
            self._pending.extendleft(reversed(batch))
            return False
        if self.spool.dropped > self._dropped_seen:
            self._count_dropped(self.spool.dropped - self._dropped_seen)
            self._dropped_seen = self.spool.dropped
        return True

    async def _drain(self, budget_s: float | None = None) -> int:
        """Replay spooled segments oldest first until the spool is empty or a write fails
        (or, with a budget, until it is spent: the rest at the next flush)."""
        stored = 0
        until = None if budget_s is None else time.monotonic() + budget_s
        while self.spool:
            if self._stopping and self._task is not None and not self._task.done():
                return stored  # stopping: the final flush takes it from here
            if until is not None and stored and time.monotonic() > until:
                self.backend_ok = True  # it answers: live batches go first meanwhile
                return stored
            segment = await asyncio.to_thread(self.spool.peek)
            if segment is None:
                break
            seq, batch = segment
            if not await self._write(batch, replay=True):
                return stored
            self.spool.remove(seq)
            stored += len(batch)
        if not self.backend_ok:
            log.info("historian back end answers again; spool drained")
        self.backend_ok = True
        self._backoff = 1.0
        return stored

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.backend_ok:
            log.warning("historian write failed, spooling: %s", self.last_error)
        self.backend_ok = False
        self._retry_at = time.monotonic() + self._backoff
        self._backoff = min(self._backoff * 2, 30.0)

    def _count_dropped(self, n: int) -> None:
        self.dropped += n
        log.error("%d samples dropped (%d in all)", n, self.dropped)
        self._pending.append(Sample(DROPPED_TAG, utcnow(), float(self.dropped), Quality.GOOD))

    async def _stop(self) -> None:
        if self._task is not None:
            # Not cancelled mid-write: a batch in a worker thread would be neither stored
            # nor spooled. The loop ends after the flush under way.
            self._stopping = True
            self._wake.set()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._retry_at = 0.0
        await self.flush()
        if self.depth:
            log.warning("%d samples stay in the spool for the next start", self.depth)
