"""Compose alarm e-mails: subject sortable by severity, plain text and HTML, links into the HMI.

E-mails are written in French (the teams of a French metropolis), with French dates and
numbers in the gateway's time zone; a composer for another locale writes in that one.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import quote
from zoneinfo import ZoneInfo

from babel.numbers import format_decimal

from beffroi.alerts.state import AlarmEvent
from beffroi.core.register import Register
from beffroi.i18n import N_, _, current_locale, fmt_datetime, in_locale, ngettext

SUBJECT_MAX = 160
# ISA-18.2 level names are the same in French; only the rate of change is translated.
LEVEL_LABELS = {"HIHI": "HiHi", "HI": "Hi", "LO": "Lo", "LOLO": "LoLo", "ROC": N_("rate")}


@dataclass(frozen=True, slots=True)
class Line:
    """One alarm in an e-mail, with how many activations it stands for."""

    event: AlarmEvent
    count: int = 1


class Composer:
    """Build the e-mails of one gateway: its HMI address, register and local time zone."""

    def __init__(
        self, register: Register, hmi_url: str, sender: str, timezone: str, locale: str = "fr"
    ):
        self.register, self.hmi_url, self.sender = register, hmi_url.rstrip("/"), sender
        self.tz = ZoneInfo(timezone)
        self.domain = sender.rsplit("@", 1)[-1]
        self.locale = locale

    def _local(self, ts: datetime | None) -> str:
        if ts is None:
            return "—"
        # The zone's abbreviation (CET, CEST) says which side of a clock change it was.
        return f"{fmt_datetime(ts, self.tz, seconds=True)} {ts.astimezone(self.tz):%Z}"

    @staticmethod
    def _num(x: float) -> str:
        return format_decimal(x, format="#,##0.######", locale=current_locale())

    @staticmethod
    def _level(level: str) -> str:
        label = LEVEL_LABELS.get(level)
        return _(label) if label is not None else level.lower() or _("limit")

    def _commune(self, cid: str) -> str:
        c = self.register.communes.get(cid)
        return c.name if c else cid

    def _unit(self, tag: str) -> str:
        spec = self.register.tags.get(tag)
        return f" {spec.unit}" if spec and spec.unit else ""

    def links(self, ev: AlarmEvent) -> tuple[str, str | None]:
        """Return the map link of the asset and the trend link of the tag (None for assets)."""
        map_url = f"{self.hmi_url}/?asset={quote(ev.asset)}"
        if ev.tag not in self.register.tags:
            return map_url, None
        return map_url, f"{self.hmi_url}/trends?tag={quote(ev.tag, safe='/')}"

    def value_text(self, ev: AlarmEvent) -> str:
        """Return `value vs limit` in the signal's unit."""
        unit = self._unit(ev.tag)
        if ev.kind == "stale":
            return _("no value for %(age)s s (limit %(limit)s s)") % {
                "age": ev.value or "?",
                "limit": ev.limit or "?",
            }
        if ev.kind == "commloss":
            return _("communication lost on the equipment's link")
        value = "—" if ev.value is None else f"{self._num(ev.value)}{unit}"
        if ev.limit is None:
            return _("value %(value)s") % {"value": value}
        return _("value %(value)s vs %(level)s limit %(limit)s") % {
            "value": value,
            "level": self._level(ev.level),
            "limit": f"{self._num(ev.limit)}{unit}",
        }

    def _title(self, ev: AlarmEvent) -> str:
        level = f" ({self._level(ev.level)})" if ev.level not in ("", "ON") else ""
        return f"{self._commune(ev.commune)} · {ev.asset} · {ev.message}{level}"

    def _text_block(self, line: Line, heading: str) -> list[str]:
        ev = line.event
        map_url, trend_url = self.links(ev)
        times = ""
        if line.count > 1:
            times = " — " + ngettext("%(n)d activation", "%(n)d activations", line.count) % {
                "n": line.count
            }
        where = _("%(commune)s (%(id)s), asset %(asset)s, %(domain)s") % {
            "commune": self._commune(ev.commune),
            "id": ev.commune,
            "asset": ev.asset,
            "domain": ev.domain,
        }
        rows = [
            (_("What:"), f"{ev.message} — {self.value_text(ev)}"),
            (_("Where:"), where),
            (_("Since:"), self._local(ev.since or ev.ts)),
            (_("Map:"), map_url),
        ]
        if trend_url:
            rows.append((_("Trend:"), trend_url))
        rows.append((_("Alarm:"), ev.alarm_id))
        width = max(len(k) for k, _v in rows) + 1  # the values aligned, whatever the language
        said = _("%(state)s: %(title)s") % {"state": heading, "title": self._title(ev)}
        out = [f"[P{ev.severity}] {said}{times}"]
        out += [f"  {k.ljust(width)} {v}" for k, v in rows]
        out.append("")
        return out

    def _html_rows(self, lines: Sequence[Line], heading: str) -> str:
        rows = []
        for line in lines:
            ev = line.event
            map_url, trend_url = self.links(ev)
            trend = (
                f' · <a href="{html.escape(trend_url)}">{html.escape(_("trend"))}</a>'
                if trend_url
                else ""
            )
            times = f" ({line.count}×)" if line.count > 1 else ""
            rows.append(
                "<tr>"
                f"<td><b>P{ev.severity}</b></td>"
                f"<td>{html.escape(heading)}</td>"
                f"<td>{html.escape(ev.message)}{times}<br><small>"
                f"{html.escape(self.value_text(ev))}</small></td>"
                f"<td>{html.escape(self._commune(ev.commune))}<br>"
                f'<a href="{html.escape(map_url)}">{html.escape(ev.asset)}</a>{trend}</td>'
                f"<td>{html.escape(self._local(ev.since or ev.ts))}</td>"
                f"<td><code>{html.escape(ev.alarm_id)}</code></td>"
                "</tr>"
            )
        return "".join(rows)

    def compose(
        self,
        recipients: Sequence[str],
        new: Sequence[Line] = (),
        returned: Sequence[Line] = (),
        escalation_min: float | None = None,
    ) -> EmailMessage:
        """Build one e-mail: new alarms, returns to normal, or an escalation."""
        with in_locale(self.locale):  # sent by a job, outside any user's request
            return self._compose(recipients, new, returned, escalation_min)

    def _compose(
        self,
        recipients: Sequence[str],
        new: Sequence[Line],
        returned: Sequence[Line],
        escalation_min: float | None,
    ) -> EmailMessage:
        new = sorted(new, key=lambda ln: (ln.event.severity, ln.event.ts))
        returned = sorted(returned, key=lambda ln: (ln.event.severity, ln.event.ts))
        first = (new or returned)[0].event
        worst = min(ln.event.severity for ln in (*new, *returned))
        normal = _("NORMAL")
        if escalation_min is not None:
            lead = _("ESCALATION, unacknowledged %(minutes)s min: ") % {
                "minutes": self._num(escalation_min)
            }
            heading = _("UNACKNOWLEDGED")
        elif new:
            lead, heading = "", _("ACTIVE")
        else:
            lead, heading = _("Return to normal: "), normal
        items = new or returned
        what = (
            self._title(first)
            if len(items) == 1
            else (
                _("%(n)d alarms: ") % {"n": len(items)}
                + ", ".join(f"{ln.event.asset} {ln.event.message}" for ln in items)
            )
        )
        if new and returned and escalation_min is None:
            what += " " + ngettext(
                "(+%(n)d back to normal)", "(+%(n)d back to normal)", len(returned)
            ) % {"n": len(returned)}
        subject = f"[Beffroi][P{worst}] {lead}{what}"
        if len(subject) > SUBJECT_MAX:
            subject = subject[: SUBJECT_MAX - 1] + "…"
        text: list[str] = []
        for line in new:
            text += self._text_block(line, heading)
        for line in returned:
            text += self._text_block(line, normal)
        ack = _("Acknowledge:")
        text.append(f"{ack} beffroi alarms ack ALARM_ID --user NAME --comment TEXT")
        heads = ("P", _("State"), _("What"), _("Where"), _("Since"), _("Alarm"))
        table = (
            '<table border="1" cellpadding="4" cellspacing="0"><tr>'
            + "".join(f"<th>{html.escape(h)}</th>" for h in heads)
            + f"</tr>{self._html_rows(new, heading)}{self._html_rows(returned, normal)}</table>"
        )
        msg = EmailMessage()
        msg["Subject"] = subject
        msg["From"] = self.sender
        msg["To"] = ", ".join(recipients)
        msg["Date"] = format_datetime(first.ts)
        # A stable Message-ID lets a receiving server drop a duplicate after a crash mid-send.
        msg["Message-ID"] = make_msgid("alarm", domain=self.domain)
        msg["X-Beffroi-Severity"] = str(worst)
        msg.set_content("\n".join(text))
        msg.add_alternative(
            f"<html><body><h3>{html.escape(subject)}</h3>{table}"
            f"<p>{html.escape(ack)} <code>beffroi alarms ack ALARM_ID --user NAME</code></p>"
            "</body></html>",
            subtype="html",
        )
        return msg
