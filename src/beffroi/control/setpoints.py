"""The setpoint service: the one place every command to equipment goes through.

Select-before-operate for people (a selection shows the value, range, interlocks and who else
is looking, and expires); for every command, whoever sends it: kind, range and step, interlock
rules, a rate limit per asset, then the collector's write with read-back, and a look at what the
equipment reports once it has had time to act (equipment may take an order and not carry it
out). Everything is audited: no audit record, no command.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from beffroi.control.audit import AuditError, AuditLog
from beffroi.control.audit_queue import AuditQueue
from beffroi.control.config import ControlSite
from beffroi.control.limits import (
    QUALITY_WORDS,
    Hold,
    Holds,
    Interlocks,
    MaintenanceCalendar,
    RateLimiter,
    check_range,
    coerce,
    same_value,
    shown_value,
)
from beffroi.control.model import Actor, CommandResult, ControlError, Selection
from beffroi.core.limits import COMMENT_MAX, check_text
from beffroi.core.live import LiveValues
from beffroi.core.model import (
    Asset,
    Quality,
    TagSpec,
    Value,
    WriteStatus,
    aware_utc,
    naive_utc,
    utcnow,
)
from beffroi.core.register import Register
from beffroi.core.seams import Collector
from beffroi.i18n import _, fmt_number

log = logging.getLogger(__name__)


def _bounded(value: object) -> object:
    """Return a refused command's value or reason as the audit keeps it: text cut to a bound."""
    if isinstance(value, str) and len(value) > COMMENT_MAX:
        return value[:COMMENT_MAX] + _("… (%(n)s characters)") % {"n": fmt_number(len(value))}
    return value if isinstance(value, bool | int | float | str | None) else repr(value)[:200]


class SetpointService:
    """Check, execute, confirm and audit commands; keep selections and holds."""

    def __init__(
        self,
        cfg: ControlSite,
        register: Register,
        live: LiveValues,
        collector_for: Callable[[str], Collector | None],
        audit: AuditLog,
        *,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.ctl = cfg.control
        self.register, self.live, self.audit = register, live, audit
        self.queue = AuditQueue(audit)
        self.collector_for = collector_for
        self.clock = clock
        # Whether this gateway may command (the active node of a pair): checked before the
        # audit record and again right before the write (fencing).
        self.acting: Callable[[], bool] = lambda: True
        # A standby sends its users' commands to the active node (pair/forward.py), if set.
        self.forward: Callable[[Actor, str, Any, str], Awaitable[CommandResult]] | None = None
        calendar = MaintenanceCalendar(self.ctl.maintenance, cfg.metropolis.timezone)
        self.interlocks = Interlocks(self.ctl.interlocks, calendar, live)
        self.rates = RateLimiter(self.ctl.classes, clock)
        self._selections: dict[str, Selection] = {}
        self.holds = Holds(clock, self.ctl.manual_hold_min)
        self._lock = threading.Lock()
        self._sem: asyncio.Semaphore | None = None
        self.sent = 0
        self.refused = 0

    # --- lookups -------------------------------------------------------------------------

    def target(self, tag: str) -> tuple[TagSpec, Asset]:
        """Return a writable tag's spec and asset, or refuse."""
        spec = self.register.tags.get(tag)
        asset = self.register.assets.get(spec.asset) if spec else None
        if spec is None or asset is None:
            raise ControlError(_("unknown tag %(tag)s") % {"tag": tag})
        if not spec.writable:
            raise ControlError(_("%(tag)s is not a setpoint") % {"tag": tag})
        return spec, asset

    def step(self, asset: Asset, spec: TagSpec) -> float | None:
        """Return the step a setpoint's values must be on, if any."""
        c = self.ctl.classes.get(asset.asset_class)
        return c.steps.get(spec.signal) if c else None

    def settle_s(self, asset: Asset) -> float:
        """Return how long after a write the equipment's report is checked."""
        c = self.ctl.classes.get(asset.asset_class)
        return c.settle_s if c is not None and c.settle_s is not None else self.ctl.settle_s

    def _authorise(self, actor: Actor, asset: Asset) -> None:
        if not actor.may("setpoint"):
            raise ControlError(
                _("%(user)s (%(role)s) may not send setpoints")
                % {"user": actor.name, "role": actor.role}
            )
        if not actor.sees(asset.commune):
            raise ControlError(
                _("%(commune)s is outside %(user)s's communes")
                % {"commune": asset.commune, "user": actor.name}
            )

    # --- select-before-operate -----------------------------------------------------------

    def select(self, actor: Actor, tag: str) -> Selection:
        """Select a setpoint: current value, range, interlocks, other users; audited."""
        now = self.clock()
        try:
            spec, asset = self.target(tag)
            self._authorise(actor, asset)
            if self.collector_for(tag) is None:
                raise ControlError(_("no collector serves %(tag)s") % {"tag": tag})
        except ControlError as exc:
            self._audit(actor.name, "select", tag, "", "refused", refusal=exc.reason)
            raise
        sample = self.live.get(tag)
        with self._lock:
            self._purge(now)
            others = sorted(
                {
                    s.user
                    for s in self._selections.values()
                    if s.asset == asset.id and s.expires_at > now
                }
                - {actor.name}
            )
            for sid in [
                k for k, s in self._selections.items() if s.user == actor.name and s.tag == tag
            ]:
                del self._selections[sid]
            sel = Selection(
                id=secrets.token_urlsafe(12),
                user=actor.name,
                tag=tag,
                asset=asset.id,
                commune=asset.commune,
                signal=spec.signal,
                kind=spec.kind,
                unit=spec.unit,
                current=sample.value if sample is not None else None,
                current_ts=sample.ts if sample is not None else None,
                quality=sample.quality.label if sample is not None else "none",
                low=spec.low,
                high=spec.high,
                step=self.step(asset, spec),
                interlocks=self.interlocks.state(asset, spec, actor, now),
                others=others,
                selected_at=now,
                expires_at=now + timedelta(seconds=self.ctl.select_timeout_s),
            )
            self._selections[sel.id] = sel
        self._audit(
            actor.name,
            "select",
            tag,
            asset.commune,
            "ok",
            current=sel.current,
            others=others,
            interlocks=[i["rule"] for i in sel.interlocks if i["blocking"]],
        )
        return sel

    def selection(self, selection_id: str) -> Selection | None:
        """Return a live selection (None once expired or used)."""
        now = self.clock()
        with self._lock:
            sel = self._selections.get(selection_id)
            return sel if sel is not None and sel.expires_at > now else None

    def deselect(self, actor: Actor, selection_id: str) -> None:
        """Drop a selection without operating."""
        with self._lock:
            sel = self._selections.pop(selection_id, None)
        if sel is not None and sel.user == actor.name:
            self._audit(actor.name, "deselect", sel.tag, sel.commune, "ok")

    def _purge(self, now: datetime) -> None:
        # Expired selections are kept a while, so that operating one says "expired".
        old = now - timedelta(minutes=10)
        for sid in [k for k, s in self._selections.items() if s.expires_at <= old]:
            del self._selections[sid]

    async def operate(
        self, actor: Actor, selection_id: str, raw: Any, reason: str
    ) -> CommandResult:
        """Operate a selection with a value and a reason; the selection is used up."""
        now = self.clock()
        with self._lock:
            sel = self._selections.get(selection_id)
            expired = sel is not None and sel.expires_at <= now
            if sel is not None and sel.user == actor.name:
                del self._selections[selection_id]
        if sel is None or sel.user != actor.name or expired:
            why = _("selection expired: select again") if expired else _("no such selection")
            tag = sel.tag if sel is not None else ""
            self.refused += 1
            await self.queue.record(
                actor.name,
                "operate",
                target=tag,
                commune=sel.commune if sel else "",
                outcome="refused",
                value=raw,
                reason=reason,
                refusal=why,
            )
            return CommandResult(tag, raw, WriteStatus.REFUSED, why)
        return await self.command(actor, sel.tag, raw, reason, source="operator")

    # --- every command -------------------------------------------------------------------

    async def command(
        self,
        actor: Actor,
        tag: str,
        raw: Any,
        reason: str,
        *,
        source: str = "operator",
        wait_rate: bool = False,
        hold: str | None = None,
        context: dict[str, Any] | None = None,
    ) -> CommandResult:
        """Check, send, confirm and audit one command; `hold` keeps schedules off the tag."""
        forwarded = context is not None and "via" in context  # by the other node: no further
        if self.forward is not None and source == "operator" and not forwarded:
            if not self.acting():
                return await self.forward(actor, tag, raw, reason)  # checked and audited there
        context = context or {}
        commune, previous = "", None
        try:
            if not isinstance(reason, str) or len(reason.strip()) < self.ctl.min_reason_chars:
                raise ControlError(_("a reason is required"))
            try:
                check_text(reason, "reason", COMMENT_MAX)
            except ValueError as exc:
                raise ControlError(str(exc)) from None
            self._fence()
            spec, asset = self.target(tag)
            commune = asset.commune
            self._authorise(actor, asset)
            value = coerce(spec, raw)
            check_range(spec, value, self.step(asset, spec))
            self.interlocks.check(asset, spec, value, actor, self.clock())
            collector = self.collector_for(tag)
            if collector is None:
                raise ControlError(_("no collector serves %(tag)s") % {"tag": tag})
            wait = self.rates.take(asset)
            while wait > 0 and wait_rate:
                await asyncio.sleep(wait)
                wait = self.rates.take(asset)
            if wait > 0:
                raise ControlError(
                    _("%(asset)s was commanded less than %(interval)s s ago: wait %(wait)s s")
                    % {
                        "asset": asset.id,
                        "interval": fmt_number(self.ctl.classes[asset.asset_class].min_interval_s),
                        "wait": fmt_number(wait),
                    },
                    rule="rate",
                )
            sample = self.live.get(tag)
            previous = sample.value if sample is not None else None
            # No audit record, no command: an AuditError here refuses the command. Commands sent
            # together (lighting, a playbook step) share the transaction (see audit_queue.py).
            await self.queue.record(
                actor.name,
                "operate",
                target=tag,
                commune=commune,
                outcome="sent",
                value=value,
                previous=previous,
                reason=reason,
                source=source,
                **context,
            )
        except (ControlError, AuditError) as exc:
            self.refused += 1
            why = exc.reason if isinstance(exc, ControlError) else str(exc)
            rule = exc.rule if isinstance(exc, ControlError) else "audit"
            log.info("refused %s = %r by %s: %s", tag, raw, actor.name, why)
            if not isinstance(exc, AuditError):
                await self.queue.record_quietly(
                    actor.name,
                    "operate",
                    target=tag,
                    commune=commune,
                    outcome="refused",
                    # What was sent, but never more than a record should hold.
                    value=_bounded(raw),
                    reason=_bounded(reason),
                    refusal=why,
                    rule=rule,
                    source=source,
                    **context,
                )
            return CommandResult(tag, raw, WriteStatus.REFUSED, why, previous, rule=rule)
        try:  # the audit append took time: the lease may have gone meanwhile
            self._fence()
        except ControlError as exc:
            self.refused += 1
            await self.queue.record_quietly(
                actor.name, "result", target=tag, commune=commune, outcome="refused",
                value=value, refusal=exc.reason, rule=exc.rule, source=source, **context,
            )  # fmt: skip
            return CommandResult(tag, raw, WriteStatus.REFUSED, exc.reason, previous, rule=exc.rule)
        if hold is not None or source == "operator":  # before the write: schedules keep off
            self.hold(tag, hold or f"manual:{actor.name}")
        result = await self._execute(collector, asset, tag, value, previous)
        self.sent += 1
        # The command happened: a failing audit must not hide its result from the user.
        if not await self.queue.record_quietly(
            actor.name,
            "result",
            target=tag,
            commune=commune,
            outcome=result.outcome,
            value=value,
            detail=result.detail,
            reported=result.reported,
            source=source,
            **context,
        ):
            result.detail += _(" (not audited: the audit log failed)")
        return result

    def _fence(self) -> None:
        """Refuse unless this gateway may command (the standby of a pair may not)."""
        if not self.acting():
            raise ControlError(
                _("this gateway is the standby of its pair: commands are sent by the active node"),
                rule="standby",
            )

    async def _execute(
        self, collector: Any, asset: Asset, tag: str, value: Value, previous: Value | None
    ) -> CommandResult:
        """Write through the collector (read-back), then check what the equipment reports."""
        if self._sem is None:
            self._sem = asyncio.Semaphore(self.ctl.concurrency)
        try:
            async with self._sem:
                written = await asyncio.wait_for(
                    collector.write(tag, value), self.ctl.write_timeout_s
                )
        except TimeoutError:
            return CommandResult(
                tag,
                value,
                WriteStatus.UNCONFIRMED,
                _("no answer within %(s)s s") % {"s": fmt_number(self.ctl.write_timeout_s, 1)},
                previous,
            )
        except Exception as exc:  # a collector bug must not lose the result nor the audit
            log.exception("write of %s failed", tag)
            return CommandResult(
                tag, value, WriteStatus.UNCONFIRMED, _("write failed: %(e)s") % {"e": exc}, previous
            )
        if written.status is not WriteStatus.CONFIRMED:
            return CommandResult(
                tag, value, written.status, written.detail, previous, written.value
            )
        settle = self.settle_s(asset)
        if settle <= 0:
            return CommandResult(
                tag, value, WriteStatus.CONFIRMED, _("read back"), previous, written.value
            )
        await asyncio.sleep(settle)
        s = self.live.get(tag)
        if s is None:
            return CommandResult(
                tag, value, WriteStatus.CONFIRMED, _("read back"), previous, written.value
            )
        if s.quality is not Quality.GOOD:
            return CommandResult(
                tag,
                value,
                WriteStatus.UNCONFIRMED,
                _("equipment reports %(quality)s quality")
                % {"quality": _(QUALITY_WORDS[s.quality])},
                previous,
            )
        if not same_value(s.value, value):
            fault = self.live.get(asset.tag("fault"))
            why = _(" (equipment in fault)") if fault is not None and fault.value is True else ""
            return CommandResult(
                tag,
                value,
                WriteStatus.UNCONFIRMED,
                _("equipment reports %(value)s %(settle)s s after the write%(why)s")
                % {"value": shown_value(s.value), "settle": fmt_number(settle, 1), "why": why},
                previous,
                s.value,
            )
        return CommandResult(
            tag,
            value,
            WriteStatus.CONFIRMED,
            _("read back, held %(settle)s s") % {"settle": fmt_number(settle, 1)},
            previous,
            s.value,
        )

    # --- holds ---------------------------------------------------------------------------

    def restore_manual_holds(self) -> int:
        """Hold again what operators commanded within manual_hold_min, from the audit log: a
        restart, or the other node of a pair taking over, keeps schedules off those tags."""
        since = self.clock() - timedelta(minutes=self.ctl.manual_hold_min)
        rows = self.audit.fetch(
            "SELECT ts, user_name, action, outcome, target, detail FROM audit "
            "WHERE action IN ('operate', 'result') AND ts >= ? ORDER BY seq",
            [naive_utc(since)],
        )
        held: dict[str, tuple[str, datetime]] = {}
        for r in rows:
            if r["action"] == "result" and r["outcome"] == "refused":
                held.pop(r["target"], None)  # fenced before the write: never sent
            elif r["action"] == "operate" and r["outcome"] == "sent":
                if json.loads(r["detail"]).get("source") == "operator":
                    held[r["target"]] = (r["user_name"], aware_utc(r["ts"]))
        for tag, (user, at) in held.items():
            self.holds.hold(tag, f"manual:{user}", at)
        return len(held)

    def hold(self, tag: str, owner: str) -> None:
        """Hold a tag for an owner (see Holds.hold)."""
        self.holds.hold(tag, owner)

    def held(self, tag: str) -> Hold | None:
        """Return who holds a tag now (schedules leave held tags alone), or None."""
        return self.holds.held(tag)

    def release(self, tag: str, owner: str) -> bool:
        """Release a hold if `owner` still has it; return whether it did."""
        return self.holds.release(tag, owner)

    # --- audit ---------------------------------------------------------------------------

    def _audit(
        self, user: str, action: str, tag: str, commune: str, outcome: str, **detail: Any
    ) -> None:
        """Append to the audit log; AuditError propagates (callers refuse the command)."""
        self.audit.record(user, action, target=tag, commune=commune, outcome=outcome, **detail)

    def status(self) -> dict[str, Any]:
        """Return counters for /healthz."""
        with self._lock:
            return {
                "commands_sent": self.sent,
                "commands_refused": self.refused,
                "selections": sum(
                    1 for s in self._selections.values() if s.expires_at > self.clock()
                ),
                "holds": len(self.holds),
            }
