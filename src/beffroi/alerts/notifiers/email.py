"""Alarm e-mails to maintenance teams: routing, on-call, digests, chatter and escalation.

`on_event` is called by the engine for every transition and only files it in memory; the
service calls `collect(now)` to turn what is due into e-mails, which go to the durable outbox.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from email.message import EmailMessage
from fnmatch import fnmatchcase
from typing import Protocol
from zoneinfo import ZoneInfo

from beffroi.alerts.config import AlarmsConfig, OnCallConfig, RouteConfig, TeamConfig
from beffroi.alerts.notifiers.message import Composer, Line
from beffroi.alerts.state import MASKED, Alarm, AlarmEvent
from beffroi.core.config import DAYS
from beffroi.core.model import Asset
from beffroi.core.register import Register

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Mail:
    """An e-mail ready for the outbox."""

    message: EmailMessage
    recipients: list[str]
    kind: str
    team: str
    alarm_ids: list[str]


@dataclass(slots=True)
class _Digest:
    opened: datetime
    new: dict[str, Line] = field(default_factory=dict)
    returned: dict[str, Line] = field(default_factory=dict)


def in_window(w: OnCallConfig, local: datetime) -> bool:
    """Tell whether a local time falls in an on-call window (end before start: overnight)."""
    day, hhmm = DAYS[local.weekday()], local.strftime("%H:%M")
    if w.start <= w.end:
        return day in w.days and w.start <= hhmm < w.end
    yesterday = DAYS[(local.weekday() - 1) % 7]
    return (day in w.days and hhmm >= w.start) or (yesterday in w.days and hhmm < w.end)


class Routed(Protocol):
    """What a route looks at of an alarm."""

    @property
    def severity(self) -> int: ...

    @property
    def domain(self) -> str: ...

    @property
    def commune(self) -> str: ...


def route_matches(route: RouteConfig, ev: Routed, asset: Asset | None = None) -> bool:
    """Tell whether a route takes an alarm: domain, commune, severity, its asset's class and
    attributes (a route that names classes or attributes takes no alarm without an asset)."""
    if not (
        ev.severity <= route.min_severity
        and (not route.domains or ev.domain in route.domains)
        and (not route.communes or ev.commune in route.communes)
    ):
        return False
    if not route.classes and not route.attributes:
        return True
    if asset is None or (route.classes and asset.asset_class not in route.classes):
        return False
    return all(
        key in asset.attributes and any(fnmatchcase(asset.attributes[key], p) for p in patterns)
        for key, patterns in route.attributes.items()
    )


class EmailNotifier:
    """Decide who is told what, and when, about alarm transitions."""

    def __init__(
        self,
        cfg: AlarmsConfig,
        register: Register,
        *,
        hmi_url: str,
        timezone: str = "Europe/Paris",
        clock: Callable[[], datetime] | None = None,
    ):
        self.cfg, self.email, self.register = cfg, cfg.email, register
        self.tz = ZoneInfo(timezone)
        self.teams: dict[str, TeamConfig] = {t.name: t for t in cfg.teams}
        self.composer = Composer(
            register, self.email.hmi_url or hmi_url, self.email.sender, timezone
        )
        self.window = timedelta(seconds=self.email.digest_window_s)
        self.chatter = timedelta(seconds=cfg.chatter_window_s)
        self._lock = threading.Lock()
        self._digests: dict[str, _Digest] = {}
        self._quiet_until: dict[str, datetime] = {}
        self._repeats: dict[str, int] = {}
        self._unacked: dict[str, tuple[AlarmEvent, set[str]]] = {}
        self._nobody: set[str] = set()
        self.folded = 0

    def teams_for(self, ev: AlarmEvent, returning: bool = False) -> list[str]:
        """Return the teams whose routes take this alarm (for a return: notify_return ones)."""
        names: list[str] = []
        # The register as it is now: an asset imported or changed while running routes so.
        asset = self.register.assets.get(ev.asset)
        for route in self.cfg.routes:
            if route_matches(route, ev, asset) and (route.notify_return or not returning):
                if route.team not in names:
                    names.append(route.team)
        return names

    def recipients(self, team: TeamConfig, now: datetime) -> list[str]:
        """Return a team's addresses plus those on call now (windows in local time)."""
        local = now.astimezone(self.tz)
        out = list(team.addresses)
        for w in team.on_call:
            if in_window(w, local):
                out += [a for a in w.addresses if a not in out]
        return out

    def on_event(self, ev: AlarmEvent) -> None:
        """File one transition: an annunciation, a return to normal, or an acknowledgement."""
        with self._lock:
            if ev.acked or ev.state in MASKED:
                self._unacked.pop(ev.alarm_id, None)
            if ev.annunciate:
                self._announce(ev)
            elif ev.event == "clear" and ev.state not in MASKED:
                self._returned(ev)

    def _announce(self, ev: AlarmEvent) -> None:
        teams = self.teams_for(ev)
        if ev.severity <= self.email.escalate_severity:
            escalating = {t for t in teams if self.teams[t].escalation}
            if escalating:
                self._unacked[ev.alarm_id] = (ev, escalating)
        quiet = self._quiet_until.get(ev.alarm_id)
        self._quiet_until[ev.alarm_id] = ev.ts + self.chatter
        if quiet is not None and ev.ts < quiet:
            # Again within the chatter window of its last activation: a chattering alarm is
            # told once; later activations only raise the count of a pending e-mail.
            self._repeats[ev.alarm_id] = self._repeats.get(ev.alarm_id, 0) + 1
            self.folded += 1
            for digest in self._digests.values():
                line = digest.new.get(ev.alarm_id)
                if line is not None:
                    digest.new[ev.alarm_id] = Line(ev, line.count + 1)
            return
        self._repeats.pop(ev.alarm_id, None)
        for team in teams:
            digest = self._digests.setdefault(team, _Digest(ev.ts))
            digest.new[ev.alarm_id] = Line(ev)

    def _returned(self, ev: AlarmEvent) -> None:
        if self._repeats.get(ev.alarm_id):
            return  # chattering: its returns would be as many e-mails as its activations
        for team in self.teams_for(ev, returning=True):
            digest = self._digests.setdefault(team, _Digest(ev.ts))
            digest.returned[ev.alarm_id] = Line(ev)

    def collect(self, now: datetime, flush: bool = False) -> list[Mail]:
        """Return the e-mails due now: digests whose window closed, and escalations."""
        mails: list[Mail] = []
        with self._lock:
            for name in list(self._digests):
                digest = self._digests[name]
                if flush or now - digest.opened >= self.window:
                    del self._digests[name]
                    mail = self._mail(
                        name, now, list(digest.new.values()), list(digest.returned.values())
                    )
                    if mail is not None:
                        mails.append(mail)
            mails += self._escalations(now)
            self._forget(now)
        return mails

    def _mail(
        self,
        team_name: str,
        now: datetime,
        new: list[Line],
        returned: list[Line],
        escalation_min: float | None = None,
    ) -> Mail | None:
        team = self.teams[team_name]
        if escalation_min is not None:
            to = list(team.escalation)
        else:
            to = self.recipients(team, now)
        if not to:
            if team_name not in self._nobody:
                log.warning("alarm e-mail for team %s: nobody on call now; not sent", team_name)
                self._nobody.add(team_name)
            return None
        self._nobody.discard(team_name)
        msg = self.composer.compose(to, new, returned, escalation_min)
        kind = "escalation" if escalation_min is not None else ("alarm" if new else "return")
        ids = [ln.event.alarm_id for ln in (*new, *returned)]
        return Mail(msg, to, kind, team_name, ids)

    def _escalations(self, now: datetime) -> list[Mail]:
        due: dict[str, list[Line]] = {}
        for alarm_id, (ev, teams) in list(self._unacked.items()):
            for name in sorted(teams):
                if now - ev.ts >= timedelta(minutes=self.teams[name].escalate_after_min):
                    due.setdefault(name, []).append(Line(ev))
                    teams.discard(name)
            if not teams:
                del self._unacked[alarm_id]
        mails = []
        for name, lines in due.items():
            mail = self._mail(name, now, lines, [], self.teams[name].escalate_after_min)
            if mail is not None:
                mails.append(mail)
        return mails

    def _forget(self, now: datetime) -> None:
        """Drop chatter memory of alarms quiet for a while (bounded memory)."""
        if len(self._quiet_until) < 10_000:
            return
        for alarm_id, until in list(self._quiet_until.items()):
            if until < now:
                del self._quiet_until[alarm_id]
                self._repeats.pop(alarm_id, None)

    def reset(self) -> None:
        """Forget pending digests and watched escalations (the node stands by, or takes over
        and re-tells from the journal what no e-mail named)."""
        with self._lock:
            self._digests.clear()
            self._unacked.clear()

    def restore(self, alarms: Iterable[Alarm], escalated: Callable[[str, datetime], bool]) -> int:
        """Watch again the unacknowledged urgent alarms restored at start, for escalation."""
        n = 0
        with self._lock:
            for a in alarms:
                if a.acked or a.masked or a.annunciated_at is None:
                    continue
                if a.severity > self.email.escalate_severity:
                    continue
                ev = a.event("activate", a.annunciated_at)
                teams = {t for t in self.teams_for(ev) if self.teams[t].escalation}
                if teams and not escalated(a.id, a.annunciated_at):
                    self._unacked[a.id] = (ev, teams)
                    n += 1
        return n

    def status(self) -> dict:
        """Return what waits in memory, for /healthz."""
        with self._lock:
            return {
                "digests": {k: len(d.new) + len(d.returned) for k, d in self._digests.items()},
                "watching_escalation": len(self._unacked),
                "folded_repeats": self.folded,
            }
