"""System page: the gateway's runs, collectors' connections, the historian's write path."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dash
from dash import Input, Output, callback, dcc, html

from beffroi.hmi.context import get_context
from beffroi.hmi.figures import DISPLAY_TZ

dash.register_page(__name__, path="/system", name="System", title="Beffroi — System", order=9)

REFRESH_MS = 2000


def layout(**_query: str) -> html.Div:
    """Render the system page."""
    return html.Div(
        className="system-page",
        children=[
            html.H2("Gateway"),
            html.Div(id="system-gateway"),
            html.H2("Collectors"),
            html.Div(id="system-collectors"),
            html.H2("Historian"),
            html.Div(id="system-historian"),
            dcc.Interval(id="system-interval", interval=REFRESH_MS),
        ],
    )


def collectors_table(collectors: list[dict[str, Any]]) -> html.Table:
    """One row per collector: name, protocol, connection, tags, samples, last error."""
    head = html.Tr(
        [html.Th(h) for h in ("Collector", "Protocol", "State", "Tags", "Samples", "Last error")]
    )
    rows = [
        html.Tr(
            id=f"system-collector-{c.get('name')}",
            className="system-ok" if c.get("connected") else "system-down",
            children=[
                html.Td(c.get("name", "?")),
                html.Td(c.get("protocol", "?")),
                html.Td("connected" if c.get("connected") else "disconnected"),
                html.Td(f"{c.get('tags', 0):,}"),
                html.Td(f"{c.get('samples_received', 0):,}"),
                html.Td(c.get("last_error") or "—"),
            ],
        )
        for c in collectors
    ]
    return html.Table([html.Thead(head), html.Tbody(rows)], className="system-table")


def historian_table(hist: dict[str, Any]) -> html.Table:
    """The write path's state: back end, written, memory, spool, dropped, last error."""
    items = [
        ("Back end", hist.get("backend", "?")),
        ("Accepting writes", "yes" if hist.get("backend_ok", True) else "no — spooling"),
        ("Samples stored", f"{hist.get('written', 0):,}"),
        ("Waiting in memory", f"{hist.get('memory', 0):,}"),
        ("Waiting in spool", f"{hist.get('spooled', 0):,} ({hist.get('spool_bytes', 0):,} B)"),
        ("Dropped", f"{hist.get('dropped', 0):,}"),
        ("Last error", hist.get("last_error") or "—"),
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
    uptime = timedelta(seconds=round(st.get("uptime_s", 0)))
    items = [
        ("Running for", str(uptime)),
        ("Previous run", previous_run_text(st.get("previous_run"))),
    ]
    rows = [
        html.Tr([html.Th(k), html.Td(v, id=f"system-gateway-{i}")])
        for i, (k, v) in enumerate(items)
    ]
    return html.Table(rows, className="system-table")


def previous_run_text(previous: dict[str, Any] | None) -> str:
    """Say how the previous run ended, in display time."""
    if not previous:
        return "none recorded (first start in this data folder)"
    zone = ZoneInfo(DISPLAY_TZ)
    fmt = "%d/%m/%Y %H:%M:%S"
    if previous.get("stopped"):
        at = datetime.fromisoformat(previous["stopped"]).astimezone(zone)
        return f"stopped cleanly at {at:{fmt}}"
    at = datetime.fromisoformat(previous["alive"]).astimezone(zone)
    return (
        f"ended without a clean stop (crash, kill or power cut); last alive at {at:{fmt}}: "
        "values are marked CommLoss from then until this start"
    )


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
