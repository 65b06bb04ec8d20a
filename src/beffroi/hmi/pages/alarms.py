"""Alarm console: what needs action now, acknowledge and shelve with a comment, and history."""

from __future__ import annotations

import logging
from collections.abc import Hashable
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dash
import dash_ag_grid as dag
from dash import Input, NoUpdate, Output, State, callback, dcc, html, no_update

from beffroi.alerts.service import AlarmService
from beffroi.alerts.state import AlarmCommandError
from beffroi.control.audit import record_command
from beffroi.core.limits import COMMENT_MAX, check_text
from beffroi.core.model import utcnow
from beffroi.hmi.auth import current, ensure_may, ensure_sees, sees
from beffroi.hmi.components.alarm_states import state_name
from beffroi.hmi.components.communes import commune_options
from beffroi.hmi.components.grids import grid_options
from beffroi.hmi.context import get_context
from beffroi.hmi.figures import DISPLAY_TZ
from beffroi.i18n import N_, _, fmt_datetime, ngettext

dash.register_page(
    __name__, path="/alarms", name="Alarms", title=lambda: "Beffroi — " + _("Alarms"), order=3
)

log = logging.getLogger(__name__)
REFRESH_MS = 2000
SEVERITY_STYLE = {
    "styleConditions": [
        {
            "condition": "params.value == 1",
            "style": {"backgroundColor": "#d7263d", "color": "#fff"},
        },
        {
            "condition": "params.value == 2",
            "style": {"backgroundColor": "#f08a24", "color": "#fff"},
        },
        {"condition": "params.value == 3", "style": {"backgroundColor": "#f6c945"}},
    ]
}
# Header names are message ids, translated when a grid is drawn (see `translated`).
ACTIVE_COLUMNS: list[dict[str, Any]] = [
    {
        "field": "severity",
        "headerName": "P",
        "width": 70,
        "cellStyle": SEVERITY_STYLE,
        "checkboxSelection": True,
        "headerCheckboxSelection": True,
    },
    {"field": "state", "headerName": N_("State"), "width": 190},
    {"field": "since", "headerName": N_("Since"), "width": 170},
    {"field": "commune", "headerName": N_("Commune"), "width": 150},
    {"field": "asset", "headerName": N_("Asset"), "width": 110},
    {"field": "message", "headerName": N_("Message"), "flex": 1},
    {"field": "value", "headerName": N_("Value"), "width": 100},
    {"field": "limit", "headerName": N_("Limit"), "width": 90},
    {"field": "alarm_id", "hide": True},
]
HISTORY_COLUMNS: list[dict[str, Any]] = [
    {"field": "ts", "headerName": N_("Time"), "width": 170},
    {"field": "state", "headerName": N_("State"), "width": 190},
    {"field": "severity", "headerName": "P", "width": 70},
    {"field": "commune", "headerName": N_("Commune"), "width": 140},
    {"field": "alarm_id", "headerName": N_("Alarm"), "flex": 1},
    {"field": "value", "headerName": N_("Value"), "width": 100},
    {"field": "user", "headerName": N_("User"), "width": 120},
    {"field": "comment", "headerName": N_("Comment"), "flex": 1},
]
HISTORY_RANGE_LABELS = {
    "1h": N_("last hour"),
    "24h": N_("last 24 hours"),
    "7d": N_("last 7 days"),
}


def translated(columns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return grid columns with their headers in the user's language ("P" is a symbol)."""
    return [
        {**c, "headerName": _(c["headerName"])} if c.get("headerName", "P") != "P" else c
        for c in columns
    ]


def local(iso: str | None) -> str:
    """Show an ISO UTC time in local time, to the second, the user's way."""
    if not iso:
        return ""
    return fmt_datetime(datetime.fromisoformat(iso), ZoneInfo(DISPLAY_TZ), seconds=True)


def visible_alarms() -> list[dict[str, Any]]:
    """Return the alarms needing attention in the user's communes, times in local time."""
    service = get_context().alarms
    if service is None:
        return []
    # Only what the grid shows: a console of a thousand alarms stays a small payload.
    rows = [{k: r[k] for k in _ACTIVE_FIELDS} for r in service.alarms() if sees(r["commune"])]
    for r in rows:
        r["since"] = local(r["since"])
        r["state"] = state_name(r["state"])
    return rows


_ACTIVE_FIELDS: tuple[str, ...] = tuple(c["field"] for c in ACTIVE_COLUMNS)


def layout(**_query: str) -> html.Div:
    """Render the console and the history."""
    hmi = get_context()
    if hmi.alarms is None:
        return html.Div(
            html.P(_("Alarms are disabled in this gateway's configuration.")),
            className="alarms-page",
        )
    communes = commune_options(hmi.register.communes.values(), sees)
    return html.Div(
        className="alarms-page",
        children=[
            html.Div(
                className="alarms-actions",
                children=[
                    dcc.Input(
                        id="alarms-comment",
                        placeholder=_("Comment (required)"),
                        className="alarms-comment",
                        debounce=False,
                    ),
                    html.Button(_("Acknowledge"), id="alarms-ack", n_clicks=0),
                    html.Button(_("Shelve 1 h"), id="alarms-shelve", n_clicks=0),
                    html.Span(id="alarms-feedback", className="alarms-feedback"),
                ],
            ),
            dag.AgGrid(
                id="alarms-active",
                columnDefs=translated(ACTIVE_COLUMNS),
                rowData=[],
                getRowId="params.data.alarm_id",
                dashGridOptions=grid_options(rowSelection="multiple", animateRows=False),
                style={"height": "45vh"},
            ),
            html.H3(_("History")),
            html.Div(
                className="alarms-history-filters",
                children=[
                    dcc.Dropdown(
                        id="alarms-history-commune",
                        options=communes,
                        multi=True,
                        placeholder=_("All my communes"),
                    ),
                    dcc.Dropdown(
                        id="alarms-history-range",
                        value="24h",
                        clearable=False,
                        options=[
                            {"label": _(HISTORY_RANGE_LABELS[k]), "value": k}
                            for k in HISTORY_RANGES
                        ],
                    ),
                ],
            ),
            dag.AgGrid(
                id="alarms-history",
                columnDefs=translated(HISTORY_COLUMNS),
                rowData=[],
                style={"height": "35vh"},
            ),
            dcc.Interval(id="alarms-interval", interval=REFRESH_MS),
        ],
    )


HISTORY_RANGES = {"1h": timedelta(hours=1), "24h": timedelta(days=1), "7d": timedelta(days=7)}


@callback(Output("alarms-active", "rowData"), Input("alarms-interval", "n_intervals"))
def refresh_active(_n: int | None) -> list[dict[str, Any]]:
    """Redraw the console from the running engine."""
    return visible_alarms()


@callback(
    Output("alarms-feedback", "children"),
    Output("alarms-comment", "value"),
    Input("alarms-ack", "n_clicks"),
    Input("alarms-shelve", "n_clicks"),
    State("alarms-active", "selectedRows"),
    State("alarms-comment", "value"),
    prevent_initial_call=True,
)
def act(
    _ack: int | None,
    _shelve: int | None,
    selected: list[dict[str, Any]] | None,
    comment: str | None,
) -> tuple[str, str | NoUpdate]:
    """Acknowledge or shelve the selected alarms, as the logged-in user, with the comment."""
    action = dash.ctx.triggered_id
    right = "ack" if action == "alarms-ack" else "shelve"
    ensure_may(right)
    if not selected:
        return _("Select alarms first."), no_update
    if not isinstance(comment, str) or not comment.strip():
        return _("A comment is required."), no_update
    try:
        check_text(comment, "comment", COMMENT_MAX)
    except ValueError:
        said = _("The comment: at most %(n)d characters, without control characters.")
        return said % {"n": COMMENT_MAX}, no_update
    service = get_context().alarms
    if service is None:
        return _("Alarms are not running in this gateway."), no_update
    known = {r["alarm_id"]: r for r in service.alarms(include_normal=True)}
    ids = []
    for row in selected:
        alarm = known.get(row.get("alarm_id"))
        if alarm is None:
            continue
        ensure_sees(alarm["commune"])  # the engine's commune, not the browser's claim
        ids.append(alarm["alarm_id"])
    user, text = current().name, (comment or "").strip()
    refused = _apply(service, right, ids, user, text)
    log.info("%s: %s %d alarm(s), %d refused", user, right, len(ids), len(refused))
    # As the API's records, marked as made at the console.
    detail: dict[str, Any] = {
        "source": "hmi",
        "comment": text,
        **({"minutes": 60} if right == "shelve" else {}),
    }
    action, audit = f"alarm.{right}", get_context().audit
    done = {i: known[i]["commune"] for i in ids if i not in refused}
    # Sent to the active node of the pair, which audited it as it acted.
    recorded = service.forwards() or record_command(audit, user, action, done, **detail)
    for alarm_id, why in refused.items():
        target = {alarm_id: known[alarm_id]["commune"]}
        record_command(audit, user, action, target, "refused", reason=why, **detail)
    if right == "ack":
        said = ngettext(
            "%(n)d alarm acknowledged by %(user)s.",
            "%(n)d alarms acknowledged by %(user)s.",
            len(done),
        )
    else:
        said = ngettext(
            "%(n)d alarm shelved for 1 h by %(user)s.",
            "%(n)d alarms shelved for 1 h by %(user)s.",
            len(done),
        )
    said %= {"n": len(done), "user": user}
    if refused:
        said += " " + _("Refused: %(why)s") % {"why": "; ".join(dict.fromkeys(refused.values()))}
    if not recorded:
        said += " " + _("The audit log cannot record it: tell the administrator.")
    return said, no_update if refused else ""


def _apply(
    service: AlarmService, right: str, ids: list[str], user: str, comment: str
) -> dict[str, str]:
    """Acknowledge the alarms (all or none) or shelve each for 1 h; return the refused, with why."""
    if right == "ack":
        try:
            service.ack(ids, user, comment)
        except AlarmCommandError as exc:  # acknowledged meanwhile, from elsewhere: none was
            return dict.fromkeys(ids, str(exc))
        return {}
    refused: dict[str, str] = {}
    for alarm_id in ids:
        try:
            service.shelve(alarm_id, user, comment, minutes=60)
        except AlarmCommandError as exc:
            refused[alarm_id] = str(exc)
    return refused


@callback(
    Output("alarms-history", "rowData"),
    Input("alarms-history-commune", "value"),
    Input("alarms-history-range", "value"),
    Input("alarms-interval", "n_intervals"),
)
def refresh_history(
    communes: list[str] | None, span: str | None, _n: int | None
) -> list[dict[Hashable, Any]]:
    """Show journaled transitions of the chosen communes (within the user's scope)."""
    hmi = get_context()
    for c in communes or []:
        ensure_sees(c)
    if hmi.alarms is None:  # as the console: nothing to show when alarms are not running
        return []
    allowed = communes or [c for c in hmi.register.communes if sees(c)]
    end = utcnow()
    df = hmi.alarms.events(
        start=end - HISTORY_RANGES.get(span or "", timedelta(days=1)),
        end=end,
        communes=allowed,
        limit=1000,
    )
    if df.empty:
        return []
    df = df.iloc[::-1].copy()
    zone = ZoneInfo(DISPLAY_TZ)
    df["ts"] = df["ts"].map(lambda ts: fmt_datetime(ts, zone, seconds=True))
    df["state"] = df["state"].map(lambda s: state_name(s) if isinstance(s, str) else s)
    cols = [c["field"] for c in HISTORY_COLUMNS if c["field"] in df.columns]
    return df[cols].astype(object).where(df[cols].notna(), None).to_dict("records")
