"""Interventions: made from alarms, by operators and from residents' reports; followed to the end.

Every change is written to the store's history and to the audit log (who, from where: the
HMI, a field link, the gateway itself, the public page). Alarms become interventions by the
`[alarms]` routes (a duty job looks at the alarms needing attention, so nothing depends on a
listener having run: a restart or a failover picks up what was missed). A resident's address
is kept apart (`report_contacts`), never in the audit log, an export or a feed.

Refusals are said in the caller's language (the request's); what is stored (titles made from
a report) and the e-mails to teams and residents are in the metropolis's language, French.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid
from typing import Any

import pandas as pd

from beffroi.alerts.notifiers.email import route_matches
from beffroi.control.audit import AuditLog
from beffroi.control.geo import GridIndex, distance_m
from beffroi.core.model import utcnow
from beffroi.core.register import Register
from beffroi.i18n import DEFAULT_LOCALE, _, fmt_datetime, in_locale
from beffroi.interventions.config import InterventionsSite
from beffroi.interventions.links import FieldLink, FieldLinks
from beffroi.interventions.model import (
    CATEGORIES,
    CLOSED,
    STATE_LABELS,
    Intervention,
    State,
    Via,
    can_move,
)
from beffroi.interventions.store import InterventionStore
from beffroi.mail.smtp import SmtpSender

log = logging.getLogger(__name__)

EMAIL = re.compile(r"^[^@\s<>,;]{1,64}@[A-Za-z0-9.-]{1,253}\.[A-Za-z]{2,24}$")
DUPLICATE_DAYS = 7  # an open report of the same kind nearby within a week is a duplicate
NOTE_MAX = 2000


class InterventionError(ValueError):
    """A change that does not apply (unknown intervention, a move not allowed, bad input)."""


class InterventionService:
    """Create, route, move, merge and close interventions; take residents' reports."""

    def __init__(
        self,
        cfg: InterventionsSite,
        register: Register,
        store: InterventionStore,
        secret: bytes,
        *,
        audit: AuditLog | None = None,
        alarms: Callable[[], list[dict[str, Any]]] | None = None,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.cfg, self.ic, self.register, self.store = cfg, cfg.interventions, register, store
        self.audit, self.alarms, self.clock = audit, alarms, clock
        self.links = FieldLinks(store, secret, self.ic.field_link_hours)
        self.teams = {t.name: t for t in cfg.alarms.teams}
        email = cfg.alarms.email
        if email.ca_file:
            email = email.model_copy(update={"ca_file": str(cfg.resolve(email.ca_file))})
        self.email = email
        self.sender = SmtpSender(email, clock)
        self.hmi_url = (email.hmi_url or cfg.hmi_url()).rstrip("/")
        self.acting: Callable[[], bool] = lambda: True  # a pair: only the active node routes
        self._deliver_lock = threading.Lock()
        self._index: GridIndex | None = None
        self._indexed = -1

    # --- creation ---

    def create(
        self,
        actor: str,
        via: Via,
        *,
        title: str,
        commune: str,
        domain: str,
        lat: float | None = None,
        lon: float | None = None,
        assets: Sequence[str] = (),
        priority: int = 3,
        team: str = "",
        origin: str = "operator",
        alarms: Sequence[tuple[str, datetime]] = (),
        reports: Sequence[int] = (),
        alarms_free: bool = False,
    ) -> int:
        """Open an intervention (assigned at once when a team is named); return its id.
        With `alarms_free`, refuse an alarm already linked to an open intervention."""
        title = _clean(title)[:200]
        if not title:
            raise InterventionError(_("an intervention needs a title"))
        if commune not in self.cfg.commune_ids():
            raise InterventionError(_("unknown commune: %(commune)r") % {"commune": commune})
        if team and team not in self.teams:
            raise InterventionError(_("unknown team: %(team)r") % {"team": team})
        if not 1 <= priority <= 4:
            raise InterventionError(_("the priority goes from 1 (the most urgent) to 4"))
        if (lat is None or lon is None) and assets:
            first = self.register.assets.get(assets[0])
            if first is not None:
                lat, lon = first.lat, first.lon
        state = State.ASSIGNED if team else State.NEW
        row = {
            "title": title,
            "commune": commune,
            "domain": domain,
            "lat": lat,
            "lon": lon,
            "assets": list(assets),
            "priority": priority,
            "team": team,
            "state": state,
            "origin": origin,
        }
        with self.store.tx():  # checked under the lock: two operators never both take it
            for alarm_id, _since in alarms if alarms_free else ():
                linked = self.store.open_for(alarm=alarm_id)
                if linked is not None:
                    raise InterventionError(
                        _("alarm %(alarm)s is already linked to intervention no. %(id)s")
                        % {"alarm": alarm_id, "id": linked}
                    )
            iid = self.store.insert(row)
            self.store.event(iid, actor, via, "created", str(state), title)
            for alarm_id, since in alarms:
                self.store.link(iid, "alarm", alarm_id, since)
            for rid in reports:
                self._take_report(iid, rid)
        self._audit(
            actor,
            via,
            "intervention.create",
            iid,
            state=str(state),
            team=team,
            origin=origin,
            alarms=[a for a, _since in alarms],
            reports=list(reports),
        )
        if team:
            self._tell_team(iid, actor)
        return iid

    def route_alarms(self) -> list[int]:
        """Open interventions for the alarms the routes give a team (the duty job); return the
        new ids. An alarm already linked, or whose asset has an open intervention, is linked
        there instead of opening another."""
        if self.alarms is None or not self.ic.from_alarms or not self.acting():
            return []
        made: list[int] = []
        for view in self.alarms():
            if view["state"] not in ("unack_active", "ack_active"):
                continue
            if view["severity"] > self.ic.auto_severity or view["asset"] == "":
                continue
            alarm_id = view["alarm_id"]
            if self.store.open_for(alarm=alarm_id) is not None:
                continue
            team = self._team_for(view)
            if team is None:
                continue
            since = _parse(view["since"]) or self.clock()
            existing = self.store.open_for(asset=view["asset"])
            if existing is not None:
                self.store.link(existing, "alarm", alarm_id, since)
                self.store.event(existing, "system", Via.AUTO, "link", None, f"alarme {alarm_id}")
                continue
            asset = self.register.assets.get(view["asset"])
            title = f"{view['message'] or view['rule']} — {view['asset']}"
            made.append(
                self.create(
                    "system",
                    Via.AUTO,
                    title=title,
                    commune=view["commune"],
                    domain=view["domain"],
                    assets=[view["asset"]],
                    lat=asset.lat if asset else None,
                    lon=asset.lon if asset else None,
                    priority=min(4, int(view["severity"])),
                    team=team,
                    origin="alarm",
                    alarms=[(alarm_id, since)],
                )
            )
        if made:
            log.info("%d intervention(s) opened from alarms", len(made))
        return made

    def _team_for(self, view: dict[str, Any]) -> str | None:
        asset = self.register.assets.get(view["asset"])
        routed = _Routed(int(view["severity"]), view["domain"], view["commune"])
        for route in self.cfg.alarms.routes:
            if route_matches(route, routed, asset):
                return route.team
        return None

    # --- changes ---

    def get(self, iid: int) -> Intervention:
        """Return an intervention, or raise InterventionError."""
        item = self.store.get(iid)
        if item is None:
            raise InterventionError(_("no intervention no. %(id)s") % {"id": iid})
        return item

    def move(self, iid: int, state: State, actor: str, via: Via, note: str = "") -> Intervention:
        """Move an intervention to a later state (or cancel it), with an optional note."""
        note = _clean(note)[:NOTE_MAX]
        with self.store.tx():  # read and checked under the lock: two taps never close twice
            item = self.get(iid)
            if not can_move(item.state, state):
                raise InterventionError(
                    _("intervention no. %(id)s is %(state)s: it cannot move to “%(target)s”")
                    % {
                        "id": iid,
                        "state": _(STATE_LABELS[item.state]).lower(),
                        "target": _(STATE_LABELS[state]).lower(),
                    }
                )
            if state is not State.CANCELLED and not item.team:
                raise InterventionError(
                    _("intervention no. %(id)s has no team yet: assign it first") % {"id": iid}
                )
            self.store.set_state(iid, state)
            self.store.event(iid, actor, via, "state", str(state), note)
            if state in CLOSED:
                self.store.revoke_links(iid)
                self._close_reports(iid, state)
        self._audit(
            actor,
            via,
            "intervention.state",
            iid,
            state=str(state),
            was=str(item.state),
            note=bool(note),
        )
        return self.get(iid)

    def assign(self, iid: int, team: str, actor: str, via: Via = Via.HMI) -> Intervention:
        """Give an intervention to a team (it becomes assigned; its team is told)."""
        if team not in self.teams:
            raise InterventionError(_("unknown team: %(team)r") % {"team": team})
        with self.store.tx():
            item = self.get(iid)
            if not item.open:
                raise InterventionError(_("intervention no. %(id)s is closed") % {"id": iid})
            self.store.update(iid, team=team)
            self.store.event(iid, actor, via, "assign", None, team)
            if item.state is State.NEW:
                self.store.set_state(iid, State.ASSIGNED)
        self._audit(actor, via, "intervention.assign", iid, team=team, was=item.team)
        self._tell_team(iid, actor)
        return self.get(iid)

    def note(self, iid: int, text: str, actor: str, via: Via) -> None:
        """Add a note to an intervention's history."""
        text = _clean(text)[:NOTE_MAX]
        if not text:
            raise InterventionError(_("the note is empty"))
        self.get(iid)
        self.store.event(iid, actor, via, "note", None, text)
        self._audit(actor, via, "intervention.note", iid, chars=len(text))

    def merge(self, ids: Sequence[int], actor: str, via: Via = Via.HMI) -> int:
        """Fold duplicates into the oldest open one (links, reports, assets); return its id."""
        with self.store.tx():
            items = sorted({i: self.get(i) for i in ids}.values(), key=lambda x: x.id)
            items = [x for x in items if x.open]
            if len(items) < 2:
                raise InterventionError(_("merging needs at least two open interventions"))
            keep, others = items[0], items[1:]
            assets = list(dict.fromkeys([*keep.assets, *(a for o in others for a in o.assets)]))
            priority = min(x.priority for x in items)
            for other in others:
                self.store.move_links(other.id, keep.id)
                self.store.update(other.id, merged_into=keep.id)
                self.store.set_state(other.id, State.CANCELLED)
                self.store.event(
                    other.id, actor, via, "merge", str(State.CANCELLED), f"fusionnée dans {keep.id}"
                )
                self.store.revoke_links(other.id)
            self.store.update(keep.id, assets=",".join(assets), priority=priority)
            self.store.event(
                keep.id, actor, via, "merge", None, "reçoit " + ", ".join(str(o.id) for o in others)
            )
        self._audit(actor, via, "intervention.merge", keep.id, merged=[o.id for o in others])
        return keep.id

    def field_link(self, iid: int, actor: str) -> FieldLink:
        """Issue a field link to an intervention (audited)."""
        item = self.get(iid)
        if not item.open:
            raise InterventionError(_("intervention no. %(id)s is closed") % {"id": iid})
        link = self.links.issue(iid, actor)
        self._audit(actor, Via.HMI, "intervention.link", iid, expires=link.expires.isoformat())
        return link

    def revoke(self, iid: int, actor: str) -> int:
        """Revoke every field link of an intervention; return how many."""
        n = self.store.revoke_links(iid)
        self._audit(actor, Via.HMI, "intervention.revoke", iid, links=n)
        return n

    def field_url(self, link: FieldLink) -> str:
        """Return the address a crew opens."""
        return f"{self.hmi_url}/field/{link.token}"

    # --- residents' reports ---

    def report(
        self,
        category: str,
        lat: float,
        lon: float,
        text: str,
        *,
        address: str = "",
        email: str = "",
        consent: bool = False,
    ) -> dict[str, Any]:
        """Take a resident's report: checked, matched, kept for triage. Return what the
        resident may see (its number, and whether it joins a known problem)."""
        cat = CATEGORIES.get(category)
        if cat is None:
            raise InterventionError(_("unknown category"))
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise InterventionError(_("invalid position"))
        text = _clean(text)
        if not text or len(text) > self.ic.reports.max_text_chars:
            raise InterventionError(
                _("a description of 1 to %(max)s characters is required")
                % {"max": self.ic.reports.max_text_chars}
            )
        address = _clean(address)[:200]
        email = _clean(email)
        if email and not consent:
            raise InterventionError(_("an e-mail address is kept only with your consent"))
        if email and not EMAIL.match(email):
            raise InterventionError(_("invalid e-mail address"))
        commune = self._commune_at(lat, lon)
        if commune is None:
            raise InterventionError(_("this place is not in the metropolis"))
        matches = self._matches(cat.domain, cat.classes, lat, lon)
        dup = self._duplicate_of(category, lat, lon)
        row = {
            "category": category,
            "commune": commune,
            "lat": lat,
            "lon": lon,
            "address": address,
            "text": text,
            "duplicate_of": dup,
            "matches": json.dumps(matches),
        }
        rid = self.store.add_report(row, email or None)
        # The audit says a report came and whether an address was left, never the address.
        self._audit(
            "public",
            Via.PUBLIC,
            "report.create",
            None,
            report=rid,
            category=category,
            commune=commune,
            contact=bool(email),
            duplicate_of=dup,
        )
        return {
            "id": rid,
            "duplicate_of": dup,
            "known_problem": bool(matches["alarms"]) or bool(dup),
        }

    def _commune_at(self, lat: float, lon: float) -> str | None:
        """Return the commune of the nearest asset (or commune centre) within 10 km."""
        near = self._grid().within(lat, lon, 1500.0)
        if near:
            best = min(near, key=lambda a: distance_m(lat, lon, a.lat, a.lon))
            return best.commune
        centres = [(distance_m(lat, lon, c.lat, c.lon), c.id) for c in self.cfg.communes]
        d, cid = min(centres)
        return cid if d <= 10_000 else None

    def _grid(self) -> GridIndex:
        # Rebuilt when the register changes (assets imported or discovered while running).
        version = self.register.revision
        if self._index is None or version != self._indexed:
            self._index, self._indexed = GridIndex(self.register.assets.values()), version
        return self._index

    def _matches(
        self, domain: str | None, classes: Sequence[str], lat: float, lon: float
    ) -> dict[str, list[str]]:
        radius = self.ic.match_radius_m
        found = [
            a
            for a in self._grid().within(lat, lon, radius)
            if (classes and a.asset_class in classes) or (not classes and domain == a.domain)
        ]
        found.sort(key=lambda a: distance_m(lat, lon, a.lat, a.lon))
        ids = [a.id for a in found[:10]]
        alarms = []
        if self.alarms is not None and ids:
            wanted = set(ids)
            alarms = [v["alarm_id"] for v in self.alarms() if v["asset"] in wanted]
        return {"assets": ids, "alarms": alarms}

    def _duplicate_of(self, category: str, lat: float, lon: float) -> int | None:
        since = self.clock() - timedelta(days=DUPLICATE_DAYS)
        for r in self.store.open_reports_near(category, since):
            if distance_m(lat, lon, r["lat"], r["lon"]) <= self.ic.match_radius_m:
                return int(r["id"])
        return None

    def report_to(self, rid: int, iid: int | None, actor: str, via: Via = Via.HMI) -> int:
        """Triage a report: into an existing intervention, or a new one (None); return its id."""
        began = {v["alarm_id"]: _parse(v["since"]) for v in (self.alarms or list)()}
        with self.store.tx():  # checked under the lock: two operators never triage it twice
            rep = self._waiting(rid)
            if iid is None:
                cat = CATEGORIES[rep["category"]]
                matches = json.loads(rep["matches"])
                alarms = [(a, began.get(a) or self.clock()) for a in matches["alarms"]]
                with in_locale(DEFAULT_LOCALE):  # a stored title, read by everyone
                    label = _(cat.label)
                return self.create(
                    actor,
                    via,
                    title=f"{label} — {rep['address'] or rep['commune']}",
                    commune=rep["commune"],
                    domain=cat.domain or "other",
                    lat=rep["lat"],
                    lon=rep["lon"],
                    assets=matches["assets"][:1],
                    origin="report",
                    priority=1 if rep["category"] == "accident" else 3,
                    alarms=alarms,
                    reports=[rid],
                )
            item = self.get(iid)
            if not item.open:
                raise InterventionError(_("intervention no. %(id)s is closed") % {"id": iid})
            self._take_report(iid, rid)
            self.store.event(iid, actor, via, "link", None, f"signalement {rid}")
        self._audit(actor, via, "report.link", iid, report=rid)
        return iid

    def reject_report(self, rid: int, actor: str, why: str = "") -> None:
        """Refuse a report (not a problem for the city, spam); its address is kept no longer."""
        with self.store.tx():
            rep = self._waiting(rid)
            self.store.set_report(rid, state="rejected", closed_at=self.store.now())
        self._audit(
            actor,
            Via.HMI,
            "report.reject",
            None,
            report=rid,
            why=_clean(why)[:200],
            commune=rep["commune"],
        )

    def _waiting(self, rid: int) -> dict[str, Any]:
        """Return a report waiting for triage, or raise saying what became of it."""
        rep = self.store.report(rid)
        if rep is None:
            raise InterventionError(_("no report no. %(id)s") % {"id": rid})
        if rep["state"] != "new":
            raise InterventionError(
                _("report no. %(id)s is already handled (%(state)s)")
                % {"id": rid, "state": rep["state"]}
            )
        return rep

    def _take_report(self, iid: int, rid: int) -> None:
        rep = self._waiting(rid)
        self.store.link(iid, "report", str(rid), rep["created"])
        self.store.set_report(rid, state="linked", intervention=iid)

    def _close_reports(self, iid: int, state: State) -> None:
        """Close the reports of a closed intervention; tell the residents who asked."""
        now = self.store.now()
        for rid in self.store.reports_of(iid):
            self.store.set_report(rid, state="closed", closed_at=now)
            email = self.store.contact(rid)
            if email is not None and self.email.enabled:  # no promise made without sending
                self._tell_resident(rid, email, state)

    def contact(self, rid: int, role: str, actor: str) -> str | None:
        """Return a report author's address to a role that needs it (audited, never shown to
        others); raise InterventionError for the others."""
        if role not in self.ic.contact_roles:
            raise InterventionError(_("this role does not see residents' contact details"))
        email = self.store.contact(rid)
        rep = self.store.report(rid)
        commune = rep["commune"] if rep is not None else ""
        self._audit(
            actor,
            Via.HMI,
            "report.contact",
            None,
            report=rid,
            found=email is not None,
            commune=commune,
        )
        return email

    # --- personal data ---

    def forget_contacts(self) -> int:
        """Delete the addresses of reports closed longer ago than the retention (duty job)."""
        if not self.acting():
            return 0
        before = self.clock() - timedelta(days=self.ic.contact_retention_days)
        expired = self.store.expired_contacts(before)
        if expired:
            self.store.forget_contacts(expired)
            self._audit(
                "system",
                Via.AUTO,
                "report.forget_contacts",
                None,
                reports=expired,
                retention_days=self.ic.contact_retention_days,
            )
            log.info("residents' contacts deleted (retention): %d report(s)", len(expired))
        return len(expired)

    # --- e-mails ---

    def _compose(self, to: Sequence[str], subject: str, body: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"] = self.email.sender
        msg["To"] = ", ".join(to)
        msg["Subject"] = subject
        msg["Date"] = format_datetime(self.clock())
        msg["Message-ID"] = make_msgid("beffroi-iv", self.email.sender.split("@")[-1])
        msg.set_content(body)
        return msg

    def _queue(self, about: str, to: Sequence[str], subject: str, body: str) -> None:
        msg = self._compose(to, subject, body)
        self.store.put_mail(
            msg["Message-ID"], about, to, subject, msg.as_string(policy=SMTP_POLICY)
        )

    def _tell_team(self, iid: int, actor: str) -> None:
        item = self.get(iid)
        team = self.teams.get(item.team)
        if team is None or not self.email.enabled:
            return
        to = list(team.addresses) or [a for w in team.on_call for a in w.addresses]
        if not to:
            return
        link = self.links.issue(iid, actor)
        place = f"{item.lat:.5f}, {item.lon:.5f}" if item.lat is not None else item.commune
        with in_locale(DEFAULT_LOCALE):  # teams read the metropolis's language
            values = {
                "id": iid,
                "team": item.team,
                "priority": item.priority,
                "title": item.title,
                "commune": item.commune,
                "place": place,
                "assets": ", ".join(item.assets) or "—",
                "until": fmt_datetime(link.expires),
                "url": self.field_url(link),
            }
            body = (
                _(
                    "Intervention no. %(id)s for team %(team)s (priority %(priority)s).\n\n"
                    "%(title)s\nCommune: %(commune)s\nPlace: %(place)s\nAssets: %(assets)s\n\n"
                    "Follow and update the intervention (personal link, valid until %(until)s UTC):"
                    "\n%(url)s\n"
                )
                % values
            )
            subject = _("[Beffroi] Intervention %(id)s: %(title)s") % values
        self._queue(f"intervention:{iid}", to, subject, body)

    def _tell_resident(self, rid: int, email: str, state: State) -> None:
        with in_locale(DEFAULT_LOCALE):  # residents are written to in French
            if state is State.DONE:
                said = _("Your report no. %(id)s has been dealt with by the metropolis's services.")
            else:
                said = _("Your report no. %(id)s has been closed by the metropolis's services.")
            body = (
                _("Hello,")
                + "\n\n"
                + said % {"id": rid}
                + "\n\n"
                + _("Thank you for your help.")
                + "\n\n"
                + _(
                    "You receive this e-mail because you asked for it; your address will be"
                    " deleted after the announced retention period."
                )
                + "\n"
            )
            subject = _("Your report no. %(id)s") % {"id": rid}
        self._queue(f"report:{rid}", [email], subject, body)

    def deliver(self) -> int:
        """Send what waits in the outbox (after each change, and by the retry job)."""
        if not self.acting() or not self.email.enabled:
            return 0
        with self._deliver_lock:  # the change and the retry job never send one twice
            return self.sender.deliver(self.store)

    # --- views ---

    def table(
        self, communes: Sequence[str] | None = None, team: str | None = None, open_only: bool = True
    ) -> pd.DataFrame:
        """Return interventions for a list (newest first within priority)."""
        return self.store.table(open_only=open_only, communes=communes, team=team)

    def reports(
        self, states: Sequence[str] = ("new",), communes: Sequence[str] | None = None
    ) -> pd.DataFrame:
        """Return reports for triage (never their authors' addresses)."""
        return self.store.reports(states, communes=communes)

    def _audit(self, actor: str, via: Via, action: str, iid: int | None, **detail: Any) -> None:
        if self.audit is None:
            return
        target = f"intervention:{iid}" if iid is not None else "reports"
        commune = str(detail.pop("commune", ""))
        if iid is not None and not commune:
            found = self.store.get(iid)
            commune = found.commune if found is not None else ""
        self.audit.record(actor, action, target=target, commune=commune, via=str(via), **detail)


class _Routed:
    """What a route looks at of an alarm (severity, domain, commune)."""

    def __init__(self, severity: int, domain: str, commune: str):
        self.severity, self.domain, self.commune = severity, domain, commune


def _clean(text: str) -> str:
    """Return text without NUL characters (PostgreSQL refuses them) and outer spaces."""
    return text.replace("\x00", "").strip()


def _parse(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
