"""Compose alarm e-mails: subject sortable by severity, plain text and HTML, links into the HMI."""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from urllib.parse import quote
from zoneinfo import ZoneInfo

from beffroi.alerts.state import AlarmEvent
from beffroi.core.register import Register

SUBJECT_MAX = 160
LEVEL_LABELS = {"HIHI": "HiHi", "HI": "Hi", "LO": "Lo", "LOLO": "LoLo", "ROC": "rate"}


@dataclass(frozen=True, slots=True)
class Line:
    """One alarm in an e-mail, with how many activations it stands for."""

    event: AlarmEvent
    count: int = 1


class Composer:
    """Build the e-mails of one gateway: its HMI address, register and local time zone."""

    def __init__(self, register: Register, hmi_url: str, sender: str, timezone: str):
        self.register, self.hmi_url, self.sender = register, hmi_url.rstrip("/"), sender
        self.tz = ZoneInfo(timezone)
        self.domain = sender.rsplit("@", 1)[-1]

    def _local(self, ts: datetime | None) -> str:
        if ts is None:
            return "—"
        return ts.astimezone(self.tz).strftime("%Y-%m-%d %H:%M:%S %Z")

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
            return f"no value for {ev.value or '?'} s (limit {ev.limit or '?'} s)"
        if ev.kind == "commloss":
            return "CommLoss quality from the equipment's link"
        value = "—" if ev.value is None else f"{ev.value:g}{unit}"
        if ev.limit is None:
            return f"value {value}"
        level = LEVEL_LABELS.get(ev.level, ev.level.lower() or "limit")
        return f"value {value} vs {level} limit {ev.limit:g}{unit}"

    def _title(self, ev: AlarmEvent) -> str:
        level = f" ({LEVEL_LABELS.get(ev.level, ev.level)})" if ev.level not in ("", "ON") else ""
        return f"{self._commune(ev.commune)} · {ev.asset} · {ev.message}{level}"

    def _text_block(self, line: Line, heading: str) -> list[str]:
        ev = line.event
        map_url, trend_url = self.links(ev)
        times = f" — {line.count} activations" if line.count > 1 else ""
        out = [
            f"[P{ev.severity}] {heading}: {self._title(ev)}{times}",
            f"  What:   {ev.message} — {self.value_text(ev)}",
            f"  Where:  {self._commune(ev.commune)} ({ev.commune}), asset {ev.asset}, {ev.domain}",
            f"  Since:  {self._local(ev.since or ev.ts)}",
            f"  Map:    {map_url}",
        ]
        if trend_url:
            out.append(f"  Trend:  {trend_url}")
        out += [f"  Alarm:  {ev.alarm_id}", ""]
        return out

    def _html_rows(self, lines: Sequence[Line], heading: str) -> str:
        rows = []
        for line in lines:
            ev = line.event
            map_url, trend_url = self.links(ev)
            trend = f' · <a href="{html.escape(trend_url)}">trend</a>' if trend_url else ""
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
        new = sorted(new, key=lambda ln: (ln.event.severity, ln.event.ts))
        returned = sorted(returned, key=lambda ln: (ln.event.severity, ln.event.ts))
        first = (new or returned)[0].event
        worst = min(ln.event.severity for ln in (*new, *returned))
        if escalation_min is not None:
            lead, heading = f"ESCALATION, unacknowledged {escalation_min:g} min: ", "UNACKNOWLEDGED"
        elif new:
            lead, heading = "", "ACTIVE"
        else:
            lead, heading = "Return to normal: ", "NORMAL"
        items = new or returned
        what = (
            self._title(first)
            if len(items) == 1
            else (
                f"{len(items)} alarms: "
                + ", ".join(f"{ln.event.asset} {ln.event.message}" for ln in items)
            )
        )
        if new and returned and escalation_min is None:
            what += f" (+{len(returned)} back to normal)"
        subject = f"[Beffroi][P{worst}] {lead}{what}"
        if len(subject) > SUBJECT_MAX:
            subject = subject[: SUBJECT_MAX - 1] + "…"
        text: list[str] = []
        for line in new:
            text += self._text_block(line, heading)
        for line in returned:
            text += self._text_block(line, "NORMAL")
        text.append("Acknowledge: beffroi alarms ack ALARM_ID --user NAME --comment TEXT")
        table = (
            '<table border="1" cellpadding="4" cellspacing="0">'
            "<tr><th>P</th><th>State</th><th>What</th><th>Where</th><th>Since</th><th>Alarm</th></tr>"
            f"{self._html_rows(new, heading)}{self._html_rows(returned, 'NORMAL')}</table>"
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
            "<p>Acknowledge: <code>beffroi alarms ack ALARM_ID --user NAME</code></p>"
            "</body></html>",
            subtype="html",
        )
        return msg
