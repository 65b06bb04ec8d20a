"""The gateway's control service: audit log, setpoints, playbooks, mail and lighting together.

Commands run on the gateway's event loop (where the collectors live); the HMI's threads reach
them through the blocking helpers here.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import CancelledError, Future
from datetime import datetime
from typing import Any

from beffroi.control.audit import AuditLog
from beffroi.control.audit_anchor import AnchorBook, AnchorError, AnchorMail
from beffroi.control.config import ControlSite, audit_place
from beffroi.control.lighting import LightingScheduler
from beffroi.control.mail import Mailer
from beffroi.control.model import Actor, CommandResult, Selection
from beffroi.control.playbooks import PlaybookEngine
from beffroi.control.runs import PlaybookRun
from beffroi.control.setpoints import SetpointService
from beffroi.core.live import LiveValues
from beffroi.core.model import utcnow
from beffroi.core.register import Register
from beffroi.core.scheduler import Scheduler
from beffroi.core.seams import Collector
from beffroi.i18n import current_locale, in_locale

log = logging.getLogger(__name__)

MAIL_RETRY_S = 60.0


class ControlService:
    """Start and stop the control parts; let HMI threads select, operate and run playbooks."""

    def __init__(
        self,
        cfg: ControlSite,
        register: Register,
        live: LiveValues,
        collector_for: Callable[[str], Collector | None],
        *,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.cfg, self.register, self.live = cfg, register, live
        self.collector_for, self.clock = collector_for, clock
        self.audit: AuditLog | None = None
        self.setpoints: SetpointService | None = None
        self.playbooks: PlaybookEngine | None = None
        self.mailer: Mailer | None = None
        self.lighting: LightingScheduler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._tasks: set[Future] = set()
        self._jobs: set[asyncio.Future] = set()
        # Whether this gateway may command equipment (the active node of a pair; always, alone).
        self.acting: Callable[[], bool] = lambda: True
        ctl = cfg.control
        self._anchor_mail = AnchorMail(ctl.audit_anchor_email, ctl.audit_anchor_email_every_h)
        self.closed = False

    async def start(
        self,
        stack: contextlib.AsyncExitStack,
        scheduler: Scheduler | None = None,
        *,
        node: str | None = None,
    ) -> None:
        """Open the audit log, build the parts, schedule lighting and mail; stop with the stack.

        `node`: this gateway's name in a redundant pair, named by every record it audits."""
        cfg, place = self.cfg, audit_place(self.cfg)
        anchors = AnchorBook.from_config(cfg, self.clock)
        await asyncio.to_thread(anchors.key, True)  # a key named but not set stops the start
        self.audit = audit = await asyncio.to_thread(
            AuditLog, place, False, self.clock, anchors=anchors
        )
        audit.node = node
        stack.callback(audit.close)  # which anchors the head at stop
        self.setpoints = SetpointService(
            cfg, self.register, self.live, self.collector_for, audit, clock=self.clock
        )
        self.setpoints.acting = self.acting
        self.mailer = Mailer(cfg, audit, self.clock)
        if self.acting():  # what a sender that died had claimed goes back to pending
            await asyncio.to_thread(self.mailer.outbox.release)
        self.playbooks = PlaybookEngine(
            cfg, self.register, self.live, self.setpoints, audit, self.mailer, clock=self.clock
        )
        await asyncio.to_thread(self.playbooks.restore)
        await asyncio.to_thread(self.setpoints.restore_manual_holds)
        if cfg.control.lighting.enabled:
            self.lighting = LightingScheduler(
                cfg, self.register, self.live, self.setpoints, clock=self.clock
            )
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        stack.push_async_callback(self._stop)
        if scheduler is not None:
            if self.lighting is not None:
                scheduler.every(
                    cfg.control.lighting.tick_s,
                    self._lighting_tick,
                    name="control-lighting",
                    duty=True,
                )
            scheduler.every(MAIL_RETRY_S, self._mail_retry, name="control-mail", duty=True)
            scheduler.every(
                cfg.control.audit_anchor_every_s,
                self._anchor,
                name="control-audit-anchor",
                duty=True,
            )
        audit.record(
            "system",
            "control.start",
            playbooks=sorted(self.playbooks.playbooks),
            lighting_cabinets=len(self.lighting.cabinets) if self.lighting else 0,
        )
        log.info("control: audit log %s, %d playbooks", place, len(self.playbooks.playbooks))

    async def take_over(self) -> None:
        """Become the node that commands: reload the runs the old active node left open, and
        the holds its operators' commands put on schedules."""
        if self.playbooks is not None:
            await asyncio.to_thread(self.playbooks.restore)
        if self.setpoints is not None:
            await asyncio.to_thread(self.setpoints.restore_manual_holds)
        if self.mailer is not None:  # what the dead node had claimed goes back to pending
            await asyncio.to_thread(self.mailer.outbox.release)

    async def _job(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a scheduled job's work so that a stop lets it finish instead of cutting it."""
        task = asyncio.ensure_future(coro)
        self._jobs.add(task)
        try:
            await asyncio.shield(task)
        finally:
            self._jobs.discard(task)

    async def _lighting_tick(self) -> None:
        if not self.closed and self.lighting is not None:
            await self._job(self.lighting.tick())

    async def _mail_retry(self) -> None:
        if not self.closed and self.mailer is not None:
            await self._job(self.mailer.retry())

    async def _anchor(self) -> None:
        """Anchor the audit log's head if records came; e-mail it to the auditors when due."""
        if self.closed or self.audit is None or self.audit.anchors is None:
            return
        try:
            await asyncio.to_thread(self.audit.anchor, "job")
        except AnchorError as exc:  # every minute until a place takes it again
            log.error("audit log: the head is not anchored: %s", exc)
        mail = self._anchor_mail.take(self.audit.anchors.last, self.clock())
        if mail is not None and self.mailer is not None:
            to = self.cfg.control.audit_anchor_email
            await self._job(self.mailer.send(to, *mail, "audit-anchor"))

    async def _stop(self) -> None:
        self.closed = True
        if self.lighting is not None:
            self.lighting.closed = True
        if self._jobs:  # commands in flight are confirmed and audited before the collectors go
            ctl = self.cfg.control
            _, late = await asyncio.wait(set(self._jobs), timeout=ctl.write_timeout_s + 10)
            for task in late:
                task.cancel()
        # A run cut short is stored as running and restored as stopped, to be rolled back.
        pending = list(self._tasks)
        for fut in pending:
            fut.cancel()
        for fut in pending:
            with contextlib.suppress(asyncio.CancelledError, CancelledError, Exception):
                await asyncio.wrap_future(fut)
        if self.audit is not None:
            with contextlib.suppress(Exception):
                self.audit.record("system", "control.stop")

    # --- from HMI threads ----------------------------------------------------------------

    def _submit(self, coro: Coroutine[Any, Any, Any]) -> Future:
        if self._loop is None or self.closed:
            coro.close()
            raise RuntimeError("the control service is not running")
        if threading.get_ident() == self._loop_thread:
            coro.close()
            raise RuntimeError("call the async methods from the event loop, not these helpers")
        # The loop's thread has no request: the refusals and results it writes take the
        # language of the user who asked (the HMI request's, or French for the API).
        fut = asyncio.run_coroutine_threadsafe(_speaking(current_locale(), coro), self._loop)
        self._tasks.add(fut)
        fut.add_done_callback(self._tasks.discard)
        return fut

    def select(self, actor: Actor, tag: str) -> Selection:
        """Select a setpoint (see SetpointService.select)."""
        assert self.setpoints is not None
        return self.setpoints.select(actor, tag)

    def operate(self, actor: Actor, selection_id: str, value: Any, reason: str) -> CommandResult:
        """Operate a selection and wait for the equipment's confirmation (blocking)."""
        assert self.setpoints is not None
        timeout = self.cfg.control.write_timeout_s + self.cfg.control.settle_s + 60
        return self._submit(self.setpoints.operate(actor, selection_id, value, reason)).result(
            timeout
        )

    def command(
        self, actor: Actor, tag: str, value: Any, reason: str, *, via: str = ""
    ) -> CommandResult:
        """Check, send and audit an operator's command, waiting for its result (blocking; API
        threads). `via`: the node of the pair that sent it here (it goes no further)."""
        assert self.setpoints is not None
        timeout = self.cfg.control.write_timeout_s + self.cfg.control.settle_s + 60
        context = {"via": via} if via else None
        sent = self.setpoints.command(actor, tag, value, reason, context=context)
        return self._submit(sent).result(timeout)

    def start_run(self, actor: Actor, run_id: str) -> PlaybookRun:
        """Start running a previewed playbook in the background; return its live state."""
        assert self.playbooks is not None
        run = self.playbooks.begin(actor, run_id)
        self._submit(self.playbooks.execute(actor, run))
        return run

    def start_rollback(self, actor: Actor, run_id: str) -> PlaybookRun:
        """Start rolling a run back in the background; return its live state."""
        assert self.playbooks is not None
        run = self.playbooks.begin_rollback(actor, run_id)
        self._submit(self.playbooks.rollback(actor, run))
        return run

    def status(self) -> dict[str, Any]:
        """Return the control service's state for /healthz."""
        if self.setpoints is None or self.audit is None:
            return {"running": False}
        return {
            **self.setpoints.status(),
            "audit_records": len(self.audit),
            "audit_anchor": self.audit.anchors.status() if self.audit.anchors else None,
            "open_runs": sum(
                1 for r in self.playbooks.runs() if r.state not in ("rolled_back", "discarded")
            )
            if self.playbooks
            else 0,
            "lighting": self.lighting.status() if self.lighting else None,
            "emails_waiting": self.mailer.outbox.pending() if self.mailer else 0,
        }


async def _speaking(locale: str, coro: Coroutine[Any, Any, Any]) -> Any:
    """Await a coroutine with its messages in one locale (set in the loop's own task)."""
    with in_locale(locale):
        return await coro
