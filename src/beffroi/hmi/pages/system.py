"""System page: the gateway's runs, collectors' connections, the historian's write path."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dash
from dash import Input, Output, callback, dcc, html

from beffroi.hmi.context import get_context
from beffroi.hmi.figures import DISPLAY_TZ
from beffroi.i18n import _, fmt_datetime, fmt_number

dash.register_page(
    __name__, path="/system", name="System", title=lambda: "Beffroi — " + _("System"), order=9
)

REFRESH_MS = 2000


def layout(**_query: str) -> html.Div:
    """Render the system page."""
    return html.Div(
        className="system-page",
        children=[
            html.H2(_("Gateway")),
            html.Div(id="system-gateway"),
            html.H2(_("Collectors")),
            html.Div(id="system-collectors"),
            html.H2(_("Historian")),
            html.Div(id="system-historian"),
            dcc.Interval(id="system-interval", interval=REFRESH_MS),
        ],
    )


def collectors_table(collectors: list[dict[str, Any]]) -> html.Table:
    """One row per collector: name, protocol, connection, tags, samples, last error."""
    head = html.Tr(
        [
            html.Th(h)
            for h in (
                _("Collector"),
                _("Protocol"),
                _("State"),
                _("Tags"),
                _("Samples"),
                _("Last error"),
            )
        ]
    )
    rows = [
        html.Tr(
            id=f"system-collector-{c.get('name')}",
            className="system-ok" if c.get("connected") else "system-down",
            children=[
                html.Td(c.get("name", "?")),
                html.Td(c.get("protocol", "?")),
                html.Td(_("connected") if c.get("connected") else _("disconnected")),
                html.Td(fmt_number(c.get("tags", 0))),
                html.Td(fmt_number(c.get("samples_received", 0))),
                html.Td(c.get("last_error") or "—"),
            ],
        )
        for c in collectors
    ]
    return html.Table([html.Thead(head), html.Tbody(rows)], className="system-table")


def historian_table(hist: dict[str, Any]) -> html.Table:
    """The write path's state: back end, written, memory, spool, dropped, last error."""
    spool = _("%(n)s (%(bytes)s B)") % {
        "n": fmt_number(hist.get("spooled", 0)),
        "bytes": fmt_number(hist.get("spool_bytes", 0)),
    }
    items = [
        (_("Back end"), hist.get("backend", "?")),
        (
            _("Accepting writes"),
            _("yes") if hist.get("backend_ok", True) else _("no — spooling"),
        ),
        (_("Samples stored"), fmt_number(hist.get("written", 0))),
        (_("Waiting in memory"), fmt_number(hist.get("memory", 0))),
        (_("Waiting in spool"), spool),
        (_("Dropped"), fmt_number(hist.get("dropped", 0))),
        (_("Last error"), hist.get("last_error") or "—"),
    ]
    return html.Table(
        [
            html.Tr([html.Th(k), html.Td(v, id=f"system-historian-{i}")])
            for i, (k, v) in enumerate(items)
        ],
        className="system-table",
    )


def gateway_table(st: dict[str, Any]) -> html.Table:
    """How long the gateway has run, and how its previous run ended (its downtime marked)."""
    items = [
        (_("Running for"), uptime_text(st.get("uptime_s", 0))),
        (_("Previous run"), previous_run_text(st.get("previous_run"))),
    ]
    rows = [
        html.Tr([html.Th(k), html.Td(v, id=f"system-gateway-{i}")])
        for i, (k, v) in enumerate(items)
    ]
    return html.Table(rows, className="system-table")


def uptime_text(seconds: float) -> str:
    """Say how long the gateway has run: days, then hours, minutes and seconds."""
    uptime = timedelta(seconds=round(seconds))
    clock = str(timedelta(seconds=uptime.seconds))
    if uptime.days:
        return _("%(days)s d %(clock)s") % {"days": fmt_number(uptime.days), "clock": clock}
    return clock


def previous_run_text(previous: dict[str, Any] | None) -> str:
    """Say how the previous run ended, in display time."""
    if not previous:
        return _("none recorded (first start in this data folder)")
    zone = ZoneInfo(DISPLAY_TZ)
    if previous.get("stopped"):
        at = datetime.fromisoformat(previous["stopped"])
        return _("stopped cleanly at %(at)s") % {"at": fmt_datetime(at, zone, seconds=True)}
    at = datetime.fromisoformat(previous["alive"])
    return _(
        "ended without a clean stop (crash, kill or power cut); last alive at %(at)s: "
        "values are marked as communication lost from then until this start"
    ) % {"at": fmt_datetime(at, zone, seconds=True)}


@callback(
    Output("system-gateway", "children"),
    Output("system-collectors", "children"),
    Output("system-historian", "children"),
    Input("system-interval", "n_intervals"),
)
def refresh(_n: int | None) -> tuple[html.Table, html.Table, html.Table]:
    """Read the runtime's status and redraw both tables."""
    status = get_context().status
    st = status() if status is not None else {}
    return (
        gateway_table(st),
        collectors_table(st.get("collectors", [])),
        historian_table(st.get("historian", {})),
    )
