"""Group commit for the audit log: records of concurrent commands share one transaction.

The lighting schedule and playbook steps send many commands at once, each of which must be
audited before it goes out. Appending them one by one costs a transaction and a WAL sync each
(about 2 ms), so thousands of commands wait in line for the log. Here a caller's record joins
whatever else is waiting on the event loop; one writer appends them with `record_many` in a
worker thread, and each caller resumes only once its record is committed, so "no audit record,
no command" holds as before, only at the price of one sync for the whole group.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from beffroi.control.audit import AuditError, AuditLog, AuditRecord, Entry

log = logging.getLogger(__name__)


class AuditQueue:
    """Append records for coroutines, grouped into one transaction per round (group commit)."""

    def __init__(self, audit: AuditLog):
        self.audit = audit
        self._waiting: list[tuple[Entry, asyncio.Future[AuditRecord]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.batches = 0

    async def record(
        self,
        user: str,
        action: str,
        *,
        target: str = "",
        commune: str = "",
        outcome: str = "ok",
        **detail: Any,
    ) -> AuditRecord:
        """Append a record with the others waiting; return once committed, else AuditError."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[AuditRecord] = loop.create_future()
        self._waiting.append(((user, action, target, commune, outcome, detail), done))
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write(), name="audit-group-commit")
        # Shielded: a caller cancelled mid-write must not cancel the others' transaction.
        return await asyncio.shield(done)

    async def record_quietly(self, user: str, action: str, **fields: Any) -> bool:
        """Append like record, logging a failure instead of raising; return whether it did."""
        try:
            await self.record(user, action, **fields)
        except AuditError:
            log.exception("audit of %s %s failed", action, fields.get("target", ""))
            return False
        return True

    async def _write(self) -> None:
        """Append what is waiting, round after round, until nothing is."""
        while self._waiting:
            # One turn of the loop first, so that the other commands of a gather() queue theirs.
            await asyncio.sleep(0)
            group, self._waiting = self._waiting, []
            try:
                records = await asyncio.to_thread(self.audit.record_many, [e for e, _ in group])
            except asyncio.CancelledError:
                # The loop is stopping: nobody is told "recorded" for what may not be.
                log.warning("audit group commit stopped with %d records pending", len(group))
                stopped = AuditError("the audit log stopped before recording this")
                for _, done in [*group, *self._waiting]:
                    if not done.done():
                        done.set_exception(stopped)
                raise
            except Exception as exc:  # all refused together: the transaction wrote none of them
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                continue
            self.batches += 1
            for (_, done), rec in zip(group, records, strict=True):
                if not done.done():
                    done.set_result(rec)
