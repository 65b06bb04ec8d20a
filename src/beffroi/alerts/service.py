"""The gateway's alarm service: engine, journal, e-mail notifier and outbox, started together."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import pandas as pd

from beffroi.alerts import rule_changes
from beffroi.alerts.config import AlarmRuleConfig, AlarmsSite, journal_place
from beffroi.alerts.engine import AlarmEngine
from beffroi.alerts.journal import Journal
from beffroi.alerts.notifiers.email import EmailNotifier
from beffroi.alerts.notifiers.outbox import Outbox
from beffroi.alerts.performance import alarm_performance
from beffroi.alerts.state import AlarmCommandError, AlarmEvent
from beffroi.core.errors import BeffroiError
from beffroi.core.model import Sample, utcnow
from beffroi.core.register import Register, RegisterChange
from beffroi.core.scheduler import Scheduler
from beffroi.mail.smtp import SmtpSender

log = logging.getLogger(__name__)

FLUSH_EVERY_S = 0.25  # journal writes and e-mail collection, at least this often
# At a take-over, transitions this long before the digest window are checked against the outbox.
UNMAILED_LOOKBACK = timedelta(minutes=5)


class AlarmService:
    """Run the alarm engine in the gateway: journal every transition, e-mail the teams."""

    def __init__(
        self, cfg: AlarmsSite, register: Register, *, clock: Callable[[], datetime] = utcnow
    ):
        self.cfg, self.register, self.clock = cfg, register, clock
        ac = cfg.alarms
        self.engine = AlarmEngine(ac, register, clock=clock, timezone=cfg.metropolis.timezone)
        self.journal: Journal | None = None
        self.notifier: EmailNotifier | None = None
        self.outbox: Outbox | None = None
        self.sender: SmtpSender | None = None
        self.journaled = 0
        self._configured = {r.name: r for r in ac.rules}  # as the config file has them
        self._rules = dict(self._configured)  # as they apply now, runtime changes included
        self.changes: dict[str, dict[str, Any]] = {}
        self.last_error = ""
        self._unwritten: list[AlarmEvent] = []
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._closed = False
        self._flush_lock = asyncio.Lock()
        # Whether this gateway acts (the active node of a pair; always, alone). A standby
        # evaluates nothing: it follows the journal the active one writes, so its alarm states
        # stay warm and its HMI shows them, and takes over from there (take_over).
        self.acting: Callable[[], bool] = lambda: True
        self._followed = 0  # the newest journal event this node's states include
        self._catching_up = False  # taking over: the journal first, then the live values
        self._system: dict[str, tuple[str, int]] = {}  # key → message, severity
        # A standby sends operator actions (ack, shelve, unshelve, service) to the active node
        # (pair/forward.py), if set.
        self.forward: Callable[[str, dict[str, Any]], Any] | None = None
        if ac.email.enabled:
            hmi_url = cfg.hmi_url()
            self.notifier = EmailNotifier(
                ac, register, hmi_url=hmi_url, timezone=cfg.metropolis.timezone, clock=clock
            )

    async def start(
        self, stack: contextlib.AsyncExitStack, scheduler: Scheduler | None = None
    ) -> None:
        """Open the journal, restore active alarms, start flushing; stop with the stack."""
        self.journal = journal = await asyncio.to_thread(Journal, journal_place(self.cfg))
        stack.callback(journal.close)
        self._followed = await asyncio.to_thread(journal.last_seq)
        for key, (message, severity) in self._system.items():  # before restore: it holds them
            self.engine.declare_system(key, message, severity)
        rows = await asyncio.to_thread(journal.current)
        self.engine.restore(rows)
        await asyncio.to_thread(self._apply_rule_changes)
        if self.notifier is not None:
            self.outbox = Outbox(journal, self.clock)
            if self.acting():  # what a sender that died had claimed goes back to pending
                await asyncio.to_thread(self.outbox.release)
            email = self.cfg.alarms.email
            if email.ca_file:
                email = email.model_copy(update={"ca_file": str(self.cfg.resolve(email.ca_file))})
            self.sender = SmtpSender(email, self.clock)
            watched = self.notifier.restore(self.engine.alarms.values(), self.outbox.escalated)
            self.engine.listeners.append(self.notifier.on_event)
            log.info(
                "alarm e-mails through %s:%d; %d waiting in the outbox, %d alarms to escalate",
                self.cfg.alarms.email.host,
                self.cfg.alarms.email.port,
                self.outbox.pending(),
                watched,
            )
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()
        self._wake = asyncio.Event()
        self.engine.listeners.append(self._poke)
        task = asyncio.create_task(self._run(), name="beffroi-alarms")
        stack.push_async_callback(self._stop, task)
        if scheduler is not None:
            scheduler.every(self.cfg.alarms.tick_s, self.tick, name="alarms-tick", duty=True)
        log.info("alarms: %d configured, journal %s", len(self.engine.alarms), journal.path)

    def _apply_rule_changes(self) -> None:
        """Apply the limits supervisors changed at runtime (the journal's), over the config's:
        at start, and at a take-over (the other node of a pair may have changed some)."""
        assert self.journal is not None
        self.changes = rule_changes.latest(self.journal)
        for name, change in self.changes.items():
            rule = self._configured.get(name)
            try:
                if rule is None:
                    raise rule_changes.RuleChangeError("no such limit rule in the config")
                if change.get("base") != rule_changes.limits_of(rule):
                    raise rule_changes.RuleChangeError("the config file's limits changed since")
                changed = rule_changes.changed_rule(rule, change["limits"])
            except rule_changes.RuleChangeError as exc:
                who = change["user"]
                log.warning("alarm rule %s: the change by %s is not applied: %s", name, who, exc)
                continue
            if rule_changes.limits_of(self._rules[name]) != rule_changes.limits_of(changed):
                self._rules[name] = changed
                self.engine.set_rule(changed, {})

    def process(self, batch: Sequence[Sample]) -> None:
        """Evaluate a batch from the runtime's sink; a rule bug never stops collection."""
        # The active node evaluates; a standby follows its journal, and one taking over
        # judges the live values once it has caught up.
        if not self.acting() or self._catching_up:
            return
        try:
            self.engine.process(batch)
        except Exception:
            log.exception("alarm evaluation failed on a batch of %d samples", len(batch))

    def declare_system(self, key: str, message: str, severity: int) -> None:
        """Declare a system alarm of the gateway (before start): `set_system` drives it."""
        self._system[key] = (message, severity)

    def set_system(self, key: str, on: bool) -> None:
        """Raise or clear a declared system alarm (the active node only: the standby follows)."""
        if self.acting():
            self.engine.set_system(f"system#{key}", on)

    def follow(self, change: RegisterChange) -> None:
        """Follow a change of the register (a register listener, from any thread)."""
        try:
            self.engine.follow(change)
        except Exception:  # the register and the other parts go on; the next start rebinds
            log.exception("alarms could not follow a register change (%s)", change.source)

    async def tick(self) -> None:
        """Run the engine's time-based evaluation (the scheduler's job)."""
        if self._closed or self._catching_up:
            return
        self.engine.tick()
        if self._wake is not None:
            self._wake.set()

    def _poke(self, _event: AlarmEvent) -> None:
        """Wake the flusher soon after a transition, from whichever thread made it."""
        if self._wake is None or self._loop is None:
            return
        if threading.get_ident() == self._loop_thread:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # loop closed at shutdown
                self._loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), FLUSH_EVERY_S)
            self._wake.clear()
            try:
                await self.flush()
            except Exception as exc:
                self.last_error = str(exc)
                log.exception("alarm journal or outbox failed; retrying")
                await asyncio.sleep(1.0)

    async def flush(self, final: bool = False) -> None:
        """Journal new transitions, turn due notifications into e-mails, send the outbox."""
        async with self._flush_lock:
            if not self.acting():
                await self._follow(drop=True)
                return
            events = self._unwritten + self.engine.take_events()
            self._unwritten = []
            if events and self.journal is not None:
                try:
                    self.journaled += await asyncio.to_thread(self.journal.write, events)
                    # Its own rows: a standby again later follows from after them.
                    self._followed = max(self._followed, self.journal.last_written)
                except Exception:
                    self._unwritten = events  # kept, in order, for the next flush
                    raise
            if self.notifier is None or self.outbox is None or self.sender is None:
                return
            mails = self.notifier.collect(self.clock(), flush=final)
            outbox = self.outbox
            for m in mails:
                await asyncio.to_thread(
                    outbox.put, m.message, m.recipients, m.kind, m.team, m.alarm_ids
                )
            if not final:
                await asyncio.to_thread(self.sender.deliver, outbox)

    async def _follow(self, *, drop: bool = False) -> None:
        """Apply what the active node journaled since; `drop` (a standby): and forget anything
        of this node's own (it journals nothing, and the active node sends the e-mails)."""
        if drop:
            self._unwritten = []
            self.engine.take_events()
            if self.notifier is not None:
                self.notifier.reset()
        if self.journal is None:
            return
        rows = await asyncio.to_thread(self.journal.after, self._followed)
        if rows:
            self.engine.restore(rows, following=True)
            self._followed = max(int(r["seq"]) for r in rows)

    def _unmailed(self) -> list[AlarmEvent]:
        """Return the recent transitions to tell that no e-mail composed since names.

        What the old active node journaled but held in a digest not yet in the outbox when it
        died: the journal and the outbox say it, not this node's memory.
        """
        assert self.journal is not None and self.outbox is not None
        window = timedelta(seconds=self.cfg.alarms.email.digest_window_s) + UNMAILED_LOOKBACK
        since = self.clock() - window
        rows = self.journal.told(since)
        named = self.outbox.named_since(since)  # alarm id → the newest e-mail naming it
        return [
            AlarmEvent.from_row(r)
            for r in rows
            if (last := named.get(r["alarm_id"])) is None or last < r["ts"]
        ]

    async def take_over(self, live: Callable[[], Mapping[str, Sample]]) -> None:
        """Become the node that evaluates: catch up with the journal, then judge the live values.

        Transitions the old active node journaled are not made again (restored from the
        journal); those it had no time to journal show now, the values having moved since.
        Samples arriving meanwhile only update the live values, judged at the end.
        """
        self._catching_up = True
        try:
            async with self._flush_lock:
                while True:  # the whole journal, however far behind this node is
                    before = self._followed
                    await self._follow()
                    if self._followed == before:
                        break
                await asyncio.to_thread(self._apply_rule_changes)
                if self.notifier is not None and self.outbox is not None:
                    outbox = self.outbox
                    await asyncio.to_thread(outbox.release)  # what the dead node had claimed
                    self.notifier.reset()
                    self.notifier.restore(self.engine.alarms.values(), outbox.escalated)
                    for event in await asyncio.to_thread(self._unmailed):
                        self.notifier.on_event(event)
                self._catching_up = False
                try:
                    self.engine.process(list(live().values()))
                except Exception:
                    log.exception("alarm evaluation of the live values failed at take-over")
        finally:
            self._catching_up = False
        if self._wake is not None:
            self._wake.set()

    def forwards(self) -> bool:
        """Tell whether operator actions go to the active node (this one is its standby)."""
        return self.forward is not None and not self.acting()

    def _elsewhere(self, action: str, body: dict[str, Any]) -> bool:
        """Send an operator action to the active node when this one is its standby (True);
        False: act here. The active node acts, audits and journals; this one follows."""
        if self.acting():
            return False
        if self.forward is None:
            raise AlarmCommandError(
                "this gateway is the standby of its pair: alarms are acknowledged, shelved and "
                "changed on the active node"
            )
        try:
            self.forward(action, body)
        except BeffroiError as exc:  # refused there, or the active node unreachable: said
            raise AlarmCommandError(str(exc)) from None
        return True

    def _echo(self, alarm_id: str, event: str) -> AlarmEvent:
        """Return the event an action sent to the active node stands for (not journaled here:
        the active node journals it, and this one follows)."""
        alarm = self.engine.alarms.get(alarm_id)
        if alarm is None:
            raise AlarmCommandError(f"{alarm_id}: no such alarm")
        return alarm.event(event, self.clock())

    def _standby_refusal(self) -> None:
        if not self.acting():
            raise AlarmCommandError(
                "this gateway is the standby of its pair: limits are changed on the active node"
            )

    async def _stop(self, task: asyncio.Task) -> None:
        self._closed = True
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        # Pending digests go to the outbox now; they are sent at the next start.
        await self.flush(final=True)

    # --- what the HMI API and the CLI use (thread-safe) ---

    def ack(self, alarm_ids: Sequence[str], user: str, comment: str = "") -> list[AlarmEvent]:
        """Acknowledge alarms."""
        body = {"ids": list(alarm_ids), "user": user, "comment": comment}
        if self._elsewhere("ack", body):
            return []
        return self.engine.ack(alarm_ids, user, comment)

    def shelve(
        self, alarm_id: str, user: str, comment: str = "", minutes: float | None = None
    ) -> AlarmEvent:
        """Shelve an alarm for some minutes, or one-shot."""
        body = {"id": alarm_id, "user": user, "comment": comment, "minutes": minutes}
        if self._elsewhere("shelve", body):
            return self._echo(alarm_id, "shelve")
        return self.engine.shelve(alarm_id, user, comment, minutes)

    def unshelve(self, alarm_id: str, user: str, comment: str = "") -> AlarmEvent:
        """Unshelve an alarm."""
        body = {"id": alarm_id, "user": user, "comment": comment}
        if self._elsewhere("unshelve", body):
            return self._echo(alarm_id, "unshelve")
        return self.engine.unshelve(alarm_id, user, comment)

    def set_out_of_service(
        self, alarm_id: str, out: bool, user: str, comment: str = ""
    ) -> AlarmEvent:
        """Take an alarm out of service or back."""
        body = {"id": alarm_id, "out": out, "user": user, "comment": comment}
        if self._elsewhere("service", body):
            return self._echo(alarm_id, "out_of_service" if out else "in_service")
        return self.engine.set_out_of_service(alarm_id, out, user, comment)

    def limit_rules(self) -> list[tuple[AlarmRuleConfig, dict[str, Any] | None]]:
        """Return each limit rule as it applies now, with its last runtime change (or None)."""
        return [(r, self.changes.get(n)) for n, r in self._rules.items() if r.type == "limit"]

    def set_limits(
        self,
        name: str,
        limits: dict[str, float | None],
        user: str,
        comment: str,
        current: Mapping[str, Sample],
    ) -> tuple[AlarmRuleConfig, AlarmRuleConfig, int]:
        """Change a limit rule's limits now and for later starts; return old, new, alarms."""
        if self.journal is None:
            raise RuntimeError("alarm service not started")
        self._standby_refusal()
        old = self._rules.get(name)
        if old is None:
            raise rule_changes.RuleChangeError(f"no alarm rule named {name}")
        new = rule_changes.changed_rule(old, limits)
        now = self.clock()
        kept = rule_changes.limits_of(new)
        base = rule_changes.limits_of(self._configured[name])
        rule_changes.record(self.journal, name, kept, base, user, comment, now)
        self._rules[name] = new
        self.changes[name] = {
            "limits": kept,
            "base": base,
            "user": user,
            "comment": comment,
            "ts": now,
        }
        return old, new, self.engine.set_rule(new, current)

    def commune_of(self, alarm_id: str) -> str:
        """Return the commune of an alarm, or "" when there is no such alarm."""
        alarm = self.engine.alarms.get(alarm_id)
        return alarm.commune if alarm is not None else ""

    def alarms(self, **filters: Any) -> list[dict[str, Any]]:
        """Return the alarms needing attention (see AlarmEngine.snapshot)."""
        return self.engine.snapshot(**filters)

    def events(self, **filters: Any) -> pd.DataFrame:
        """Return journaled events (see Journal.events)."""
        if self.journal is None:
            raise RuntimeError("alarm service not started")
        return self.journal.events(**filters)

    def stats(self, start: datetime, end: datetime) -> dict[str, Any]:
        """Return alarm-performance figures of a period."""
        if self.journal is None:
            raise RuntimeError("alarm service not started")
        ac = self.cfg.alarms
        return alarm_performance(self.journal, start, end, ac.chatter_count, ac.chatter_window_s)

    def status(self) -> dict[str, Any]:
        """Return the alarm service's state for /healthz."""
        out: dict[str, Any] = {**self.engine.status(), "journaled": self.journaled}
        if self.sender is not None and self.notifier is not None:
            out["email"] = {
                "sent": self.sender.sent,
                "smtp_failures": self.sender.failures,
                "last_error": self.sender.last_error,
                **self.notifier.status(),
            }
        return out
