"""Incident playbooks: preview every command around a place, run the steps, roll them back.

A preview lists each command (asset, distance, value) and each e-mail; running it sends exactly
those, step by step, each step confirmed by the equipment (read-back) and audited. Setpoints a
run sends are held for it, so schedules leave them alone until the rollback restores the values
they had just before the run.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from beffroi.control.audit import AuditLog
from beffroi.control.config import ControlSite, PlaybookConfig, PlaybookStepConfig
from beffroi.control.geo import near
from beffroi.control.mail import Mailer
from beffroi.control.model import Actor, ControlError
from beffroi.control.runs import FINAL, PlannedCommand, PlaybookRun, RunStore, StepRun
from beffroi.control.setpoints import SetpointService
from beffroi.core.live import LiveValues
from beffroi.core.model import utcnow
from beffroi.core.register import Register
from beffroi.i18n import N_, _, fmt_number, ngettext

log = logging.getLogger(__name__)

# Why a run cannot be claimed, by its state (a preview is claimable).
RUN_IS = {
    "running": N_("this run is running"),
    "done": N_("this run is done"),
    "stopped": N_("this run is stopped"),
    "discarded": N_("this run is discarded"),
    "rolling_back": N_("this run is rolling back"),
    "rolled_back": N_("this run is rolled back"),
    "rollback_failed": N_("this run's rollback failed"),
}
RUN_CLOSED = N_("this run is closed")
PREVIEW_TTL_S = 600  # a preview older than this is stale: equipment may have changed since


class _Fields(dict):
    """Template fields for messages and e-mails; an unknown {field} stays as written."""

    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


class PlaybookEngine:
    """Preview, run and roll back playbooks; one engine per gateway, shared by HMI threads."""

    def __init__(
        self,
        cfg: ControlSite,
        register: Register,
        live: LiveValues,
        setpoints: SetpointService,
        audit: AuditLog,
        mailer: Mailer,
        *,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.cfg, self.register, self.live = cfg, register, live
        self.setpoints, self.audit, self.mailer, self.clock = setpoints, audit, mailer, clock
        self.playbooks = {p.name: p for p in cfg.control.playbooks}
        self.tz = ZoneInfo(cfg.metropolis.timezone)
        self.store = RunStore(audit)
        self._runs: dict[str, PlaybookRun] = {}
        self._lock = threading.Lock()

    def restore(self) -> int:
        """Reload runs left open by a previous gateway and hold their setpoints again."""
        runs = self.store.load_open()
        for run in runs:
            if run.state == "running":  # interrupted by a stop: what ran is what the steps say
                run.state = "stopped"
                run.log.append(_("interrupted by a gateway restart"))
            self._runs[run.id] = run
            for step in run.steps:
                for c in step.commands:
                    if c.status not in ("pending", "refused"):
                        self.setpoints.hold(c.tag, run.hold_owner)
        if runs:
            log.info("%d open playbook run(s) restored, to be rolled back", len(runs))
        return len(runs)

    # --- preview -------------------------------------------------------------------------

    def _fields(self, run: PlaybookRun, pb: PlaybookConfig) -> _Fields:
        return _Fields(
            playbook=_(pb.label),  # config texts are English, catalogued (fr/control.po)
            place=run.place or f"{run.lat:.5f}, {run.lon:.5f}",
            lat=f"{run.lat:.5f}",
            lon=f"{run.lon:.5f}",
            radius_m=f"{run.radius_m:.0f}",
            user=run.user,
            time=run.created.astimezone(self.tz).strftime("%d/%m/%Y %H:%M"),
            run=run.id,
        )

    def _plan_step(
        self, i: int, step: PlaybookStepConfig, run: PlaybookRun, actor: Actor, f: _Fields
    ) -> StepRun:
        out = StepRun(
            index=i,
            title=_(step.title).format_map(f),  # catalogued in fr/config.po
            action=step.action,
            on_rollback=step.on_rollback,
            stop_on_failure=step.stop_on_failure,
        )
        if step.action == "email":
            out.to = list(step.to)
            out.subject, out.body = step.subject.format_map(f), step.body.format_map(f)
            out.rollback_subject = step.rollback_subject.format_map(f)
            out.rollback_body = step.rollback_body.format_map(f)
            return out
        candidates = [a for a in self.register.assets.values() if a.asset_class == step.asset_class]
        within = step.within_m or run.radius_m
        found = near(candidates, run.lat, run.lon, within)
        hidden = sum(1 for a, _d in found if not actor.sees(a.commune))
        found = [(a, d) for a, d in found if actor.sees(a.commune)]
        if step.nearest:
            found = found[: step.nearest]
        value = step.value.format_map(f) if isinstance(step.value, str) else step.value
        assert value is not None
        for a, d in found:
            tag = a.tag(step.signal or "")
            s = self.live.get(tag)
            out.commands.append(
                PlannedCommand(tag, a.id, a.commune, round(d), value, s.value if s else None)
            )
        notes = []
        if not found:
            notes.append(
                _("no %(kind)s within %(m)s m")
                % {"kind": step.asset_class, "m": fmt_number(within)}
            )
        if hidden:
            notes.append(
                ngettext(
                    "%(n)s outside your communes left out",
                    "%(n)s outside your communes left out",
                    hidden,
                )
                % {"n": fmt_number(hidden)}
            )
        out.note = "; ".join(notes)
        return out

    def preview(
        self,
        actor: Actor,
        name: str,
        lat: float,
        lon: float,
        radius_m: float | None = None,
        place: str = "",
    ) -> PlaybookRun:
        """List every command and e-mail the playbook would send here; audited."""
        if not actor.may("playbook"):
            raise ControlError(
                _("%(user)s (%(role)s) may not run playbooks")
                % {"user": actor.name, "role": actor.role}
            )
        pb = self.playbooks.get(name)
        if pb is None:
            raise ControlError(_("unknown playbook %(name)s") % {"name": repr(name)})
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise ControlError(_("not a place on Earth"))
        run = PlaybookRun(
            id=secrets.token_hex(6),
            playbook=pb.name,
            label=pb.label,
            place=place.strip()[:120],
            lat=lat,
            lon=lon,
            radius_m=float(radius_m or pb.radius_m),
            user=actor.name,
            created=self.clock(),
            steps=[],
        )
        f = self._fields(run, pb)
        run.steps = [self._plan_step(i, s, run, actor, f) for i, s in enumerate(pb.steps)]
        with self._lock:
            self._runs[run.id] = run
        n = sum(len(s.commands) for s in run.steps)
        self.audit.record(
            actor.name,
            "playbook.preview",
            target=pb.name,
            outcome="ok",
            run=run.id,
            lat=lat,
            lon=lon,
            radius_m=run.radius_m,
            place=run.place,
            commands=n,
        )
        return run

    # --- run -----------------------------------------------------------------------------

    def get(self, run_id: str) -> PlaybookRun | None:
        """Return a run (preview, running, done, rolled back) by id."""
        with self._lock:
            return self._runs.get(run_id)

    def runs(self) -> list[PlaybookRun]:
        """Return the runs this gateway knows, newest first (previews excluded)."""
        with self._lock:
            out = [r for r in self._runs.values() if r.state != "preview"]
        return sorted(out, key=lambda r: r.created, reverse=True)

    def _check_actor(self, actor: Actor, run: PlaybookRun) -> None:
        if not actor.may("playbook"):
            raise ControlError(
                _("%(user)s (%(role)s) may not run playbooks")
                % {"user": actor.name, "role": actor.role}
            )
        outside = sorted(c for c in run.communes() if not actor.sees(c))
        if outside:
            raise ControlError(
                _("this run acts in %(communes)s, outside your communes")
                % {"communes": ", ".join(outside)}
            )

    def begin(self, actor: Actor, run_id: str) -> PlaybookRun:
        """Claim a fresh preview for running (at most once); the caller then awaits execute."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise ControlError(_("no such preview: preview again"))
            self._check_actor(actor, run)
            if run.state != "preview":
                raise ControlError(_(RUN_IS.get(run.state, RUN_CLOSED)))
            if self.clock() - run.created > timedelta(seconds=PREVIEW_TTL_S):
                raise ControlError(_("the preview is too old: preview again"))
            run.state, run.started = "running", self.clock()
        self.audit.record(
            actor.name,
            "playbook.run",
            target=run.playbook,
            outcome="started",
            run=run.id,
            lat=run.lat,
            lon=run.lon,
            place=run.place,
        )
        self.store.save(run)
        return run

    async def execute(self, actor: Actor, run: PlaybookRun) -> PlaybookRun:
        """Run the steps in order, each confirmed and audited; stop where a step says so."""
        reason = _("playbook %(label)s: %(place)s") % {
            "label": _(run.label),
            "place": run.place or f"{run.lat:.5f}, {run.lon:.5f}",
        }
        stopped = False
        for step in run.steps:
            if stopped:
                step.status, step.detail = "skipped", _("not run: an earlier step failed")
                continue
            step.status = "running"
            if step.action == "email":
                step.status, step.detail = await self._mail(run, step.to, step.subject, step.body)
            else:
                await asyncio.gather(
                    *(self._send(actor, run, step, c, reason) for c in step.commands)
                )
                step.status = step.summarise()
                step.detail = step.note
            run.log.append(f"step {step.index + 1} {step.title}: {step.status}")
            self._audit_step(actor, run, step, "run", step.status)
            self.store.save(run)
            if step.stop_on_failure and step.status not in ("confirmed", "sent", "skipped"):
                stopped = True
        run.state = "stopped" if stopped else "done"
        run.finished = self.clock()
        self.audit.record(
            actor.name,
            "playbook.run",
            target=run.playbook,
            outcome=run.state,
            run=run.id,
            steps=[s.status for s in run.steps],
        )
        self.store.save(run)
        return run

    async def _send(
        self, actor: Actor, run: PlaybookRun, step: StepRun, c: PlannedCommand, reason: str
    ) -> None:
        c.status = "sending"
        result = await self.setpoints.command(
            actor,
            c.tag,
            c.value,
            reason,
            source="playbook",
            wait_rate=True,
            hold=run.hold_owner,
            context={"run": run.id, "step": step.index + 1},
        )
        c.status, c.detail = result.outcome, result.detail
        if result.status.name != "REFUSED":
            c.previous = result.previous  # what to restore: the value just before the write

    async def _mail(self, run: PlaybookRun, to: list[str], subject: str, body: str) -> tuple:
        try:
            return await self.mailer.send(to, subject, body, run.id)
        except Exception as exc:  # the outbox itself failed: say so, the run goes on
            log.exception("playbook %s: e-mail failed", run.id)
            return "failed", str(exc)

    def _audit_step(
        self, actor: Actor, run: PlaybookRun, step: StepRun, phase: str, st: str
    ) -> None:
        commands = [
            {
                "tag": c.tag,
                "value": c.value,
                "previous": c.previous,
                "status": c.rollback_status if phase == "rollback" else c.status,
            }
            for c in step.commands
        ]
        self.audit.record(
            actor.name,
            "playbook.step",
            target=run.playbook,
            outcome=st,
            run=run.id,
            step=step.index + 1,
            title=step.title,
            phase=phase,
            commands=commands,
            to=step.to,
            detail=step.rollback_detail if phase == "rollback" else step.detail,
        )

    # --- rollback ------------------------------------------------------------------------

    def begin_rollback(self, actor: Actor, run_id: str) -> PlaybookRun:
        """Claim a finished run for rollback (once); the caller then awaits rollback."""
        with self._lock:
            run = self._runs.get(run_id)
            if run is None:
                raise ControlError(_("no such run"))
            self._check_actor(actor, run)
            if run.state == "preview":
                run.state = "discarded"
                return run
            if run.state in FINAL or run.state in ("running", "rolling_back"):
                raise ControlError(_(RUN_IS.get(run.state, RUN_CLOSED)))
            run.state = "rolling_back"
        self.audit.record(
            actor.name, "playbook.rollback", target=run.playbook, outcome="started", run=run.id
        )
        self.store.save(run)
        return run

    async def rollback(self, actor: Actor, run: PlaybookRun) -> PlaybookRun:
        """Undo the steps in reverse order: restore previous values, send closing e-mails."""
        if run.state == "discarded":
            return run
        reason = _("end of playbook %(label)s: %(place)s") % {
            "label": _(run.label),
            "place": run.place or run.id,
        }
        for step in reversed(run.steps):
            if step.action == "email":
                if step.rollback_subject and step.status in ("sent", "queued"):
                    st, step.rollback_detail = await self._mail(
                        run, step.to, step.rollback_subject, step.rollback_body or step.body
                    )
                    step.rollback_status = st
                else:
                    step.rollback_status = "nothing to undo"
            else:
                await asyncio.gather(
                    *(self._restore(actor, run, step, c, reason) for c in step.commands)
                )
                step.rollback_status = step.summarise("rollback_status")
            run.log.append(f"rollback {step.index + 1} {step.title}: {step.rollback_status}")
            self._audit_step(actor, run, step, "rollback", step.rollback_status)
            self.store.save(run)
        bad = [s for s in run.steps if s.rollback_status in ("failed", "partial")]
        run.state = "rollback_failed" if bad else "rolled_back"
        run.rolled_back, run.rolled_back_by = self.clock(), actor.name
        self.audit.record(
            actor.name, "playbook.rollback", target=run.playbook, outcome=run.state, run=run.id
        )
        self.store.save(run)
        return run

    async def _restore(
        self, actor: Actor, run: PlaybookRun, step: StepRun, c: PlannedCommand, reason: str
    ) -> None:
        if c.rollback_status in ("restored", "kept"):
            return  # a retried rollback does not undo twice
        if c.status in ("pending", "refused", "skipped"):
            c.rollback_status, c.rollback_detail = "kept", _("nothing was sent")
            return
        holder = self.setpoints.held(c.tag)
        if holder is not None and holder.owner != run.hold_owner:
            c.rollback_status, c.rollback_detail = (
                "kept",
                _("taken over by %(owner)s") % {"owner": holder.owner},
            )
            return
        if step.on_rollback == "keep" or c.previous is None:
            self.setpoints.release(c.tag, run.hold_owner)
            why = (
                _("kept by the playbook") if step.on_rollback == "keep" else _("no previous value")
            )
            c.rollback_status, c.rollback_detail = "kept", why
            return
        result = await self.setpoints.command(
            actor,
            c.tag,
            c.previous,
            reason,
            source="rollback",
            wait_rate=True,
            context={"run": run.id, "step": step.index + 1},
        )
        c.rollback_status = "restored" if result.ok else result.outcome
        c.rollback_detail = result.detail
        if result.ok:
            self.setpoints.release(c.tag, run.hold_owner)
