"""The write buffer between collectors and the historian: batches samples, flushes on a timer."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence

from beffroi.core.model import Sample
from beffroi.historian.base import Historian

log = logging.getLogger(__name__)


class WriteBuffer:
    """Collect samples in memory and write them in large batches off the event loop.

    A failed write keeps the samples and retries on the next flush; the buffer is bounded,
    and when full the oldest samples are dropped and counted in `dropped`.
    """

    def __init__(
        self,
        historian: Historian,
        flush_interval_s: float = 1.0,
        max_batch: int = 100_000,
        max_pending: int = 5_000_000,
    ):
        self.historian = historian
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.max_pending = max_pending
        self._pending: deque[Sample] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.last_error = ""

    def put(self, batch: Sequence[Sample]) -> None:
        """Queue samples for the next flush (called on the event loop)."""
        self._pending.extend(batch)
        overflow = len(self._pending) - self.max_pending
        if overflow > 0:
            for _ in range(overflow):
                self._pending.popleft()
            self.dropped += overflow
            log.error("write buffer full: dropped %d oldest samples", overflow)
        if len(self._pending) >= self.max_batch:
            self._wake.set()

    @property
    def depth(self) -> int:
        """Return the number of samples waiting to be written."""
        return len(self._pending)

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Start the flush loop; on exit, write everything still pending."""
        self._task = asyncio.create_task(self._run(), name="historian-writer")
        stack.push_async_callback(self._stop)

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            await self.flush()

    async def flush(self) -> int:
        """Write everything pending now; return how many samples were stored."""
        stored = 0
        while self._pending:
            n = min(len(self._pending), self.max_batch)
            batch = [self._pending.popleft() for _ in range(n)]
            try:
                await asyncio.to_thread(self.historian.write, batch)
            except Exception as exc:
                # Keep the batch at the front, in order, and retry at the next flush.
                self._pending.extendleft(reversed(batch))
                self.failures += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("historian write failed, will retry: %s", self.last_error)
                break
            stored += n
            self.written += n
        return stored

    async def _stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()
        if self._pending:
            log.error("%d samples could not be written at shutdown", len(self._pending))
