"""Audit: browse the hash-chained log of commands, logins and changes; verify it; export it."""

from __future__ import annotations

import json
import logging
from collections.abc import Hashable
from datetime import timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dash
import dash_ag_grid as dag
import pandas as pd
from dash import Input, Output, State, callback, dcc, html
from dash.exceptions import PreventUpdate

from beffroi.control.audit import AuditLog
from beffroi.core.model import utcnow
from beffroi.hmi.auth import current, ensure_may, sees
from beffroi.hmi.components.grids import grid_options
from beffroi.hmi.context import get_context
from beffroi.hmi.figures import DISPLAY_TZ
from beffroi.i18n import N_, _, fmt_datetime, fmt_number

dash.register_page(
    __name__, path="/audit", name="Audit", title=lambda: "Beffroi — " + _("Audit"), order=6
)

log = logging.getLogger(__name__)
RANGES = {
    "1h": timedelta(hours=1),
    "24h": timedelta(days=1),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
RANGE_LABELS = {
    "1h": N_("last hour"),
    "24h": N_("last 24 hours"),
    "7d": N_("last 7 days"),
    "30d": N_("last 30 days"),
}
# Columns: (field, header, width or None for a flexible one); headers translated when shown.
COLUMNS = (
    ("seq", N_("No."), 90),
    ("time", N_("Time"), 170),
    ("user", N_("User"), 140),
    ("action", N_("Action"), 150),
    ("target", N_("Target"), None),
    ("commune", N_("Commune"), 130),
    ("outcome", N_("Outcome"), 120),
    ("source", N_("Source"), 90),
    ("detail", N_("Detail"), None),
    ("hash", N_("Hash"), 120),
)
# Outcomes as the grid shows them (the records keep the codes).
OUTCOMES = {
    "ok": N_("done"),
    "refused": N_("refused"),
    "failed": N_("failed"),
    "error": N_("error"),
    "sent": N_("sent"),
    "started": N_("started"),
    "restored": N_("restored"),
    "confirmed": N_("confirmed"),
    "rejected": N_("rejected"),
    "unconfirmed": N_("unconfirmed"),
}
# Columns of codes (action names, hashes): identifiers, the same in every language.
CODES = {"action", "hash"}


def columns() -> list[dict[str, Any]]:
    """Return the grid's columns, headed in the user's language."""
    out: list[dict[str, Any]] = []
    for field, header, width in COLUMNS:
        column: dict[str, Any] = {"field": field, "headerName": _(header)}
        column.update({"width": width} if width else {"flex": 2 if field == "detail" else 1})
        if field in CODES:
            column["cellClass"] = "beffroi-code"
        out.append(column)
    return out


def layout(**_query: str) -> html.Div:
    """Render the audit browser (auditors and administrators)."""
    hmi = get_context()
    if hmi.audit is None:
        return html.Div(html.P(_("The audit log is not running in this gateway.")))
    if not current().may("audit"):
        return html.Div(html.P(_("Your role may not read the audit log."), id="audit-denied"))
    return html.Div(
        className="audit-page",
        children=[
            html.Div(
                className="audit-actions",
                children=[
                    dcc.Dropdown(
                        id="audit-range",
                        value="24h",
                        clearable=False,
                        options=[{"label": _(RANGE_LABELS[k]), "value": k} for k in RANGES],
                    ),
                    dcc.Input(id="audit-user", placeholder=_("user"), debounce=True),
                    dcc.Input(
                        id="audit-action", placeholder=_("action (e.g. operate)"), debounce=True
                    ),
                    html.Button(_("Refresh"), id="audit-refresh", n_clicks=0),
                    html.Button(_("Verify chain"), id="audit-verify", n_clicks=0),
                    html.Button(_("Export CSV"), id="audit-export", n_clicks=0),
                    html.Span(id="audit-feedback", className="audit-feedback"),
                ],
            ),
            dag.AgGrid(
                id="audit-grid",
                columnDefs=columns(),
                rowData=[],
                style={"height": "70vh"},
                dashGridOptions=grid_options(animateRows=False),
            ),
            dcc.Download(id="audit-download"),
        ],
    )


def _audit() -> AuditLog:
    """Return the audit log; no update when it is not running (the page then shows no grid)."""
    audit = get_context().audit
    if audit is None:
        raise PreventUpdate
    return audit


def _frame(span: str | None, user: str | None, action: str | None) -> pd.DataFrame:
    end = utcnow()
    df = _audit().frame(
        end - RANGES.get(span or "", timedelta(days=1)),
        end + timedelta(seconds=1),
        users=[user.strip()] if user and user.strip() else (),
        actions=[action.strip()] if action and action.strip() else (),
    )
    # Records about another commune stay within the auditor's scope.
    return df[df["commune"].map(lambda c: not c or sees(c))]


@callback(
    Output("audit-grid", "rowData"),
    Input("audit-range", "value"),
    Input("audit-user", "value"),
    Input("audit-action", "value"),
    Input("audit-refresh", "n_clicks"),
)
def rows(
    span: str | None, user: str | None, action: str | None, _n: int | None
) -> list[dict[Hashable, Any]]:
    """Show the newest records first, times in local time."""
    ensure_may("audit")
    df = _frame(span, user, action).iloc[::-1].head(5000)
    if df.empty:
        return []
    out = df[["seq", "user", "action", "target", "commune", "outcome", "detail", "hash"]].copy()
    zone = ZoneInfo(DISPLAY_TZ)
    out.insert(1, "time", df["ts"].map(lambda ts: fmt_datetime(ts, zone, seconds=True)))
    out["outcome"] = out["outcome"].map(lambda o: _(OUTCOMES[o]) if o in OUTCOMES else o)
    # Where a command came from (api, cli, hmi), to tell them apart at a glance.
    at = out.columns.get_loc("detail")
    assert isinstance(at, int)  # the columns are unique: one position, not a mask
    out.insert(at, "source", df["detail"].map(_source))
    out["hash"] = out["hash"].str[:12]
    return out.to_dict("records")


def _source(detail: str) -> str:
    """Return the source a record's details name, else ""."""
    try:
        return str(json.loads(detail).get("source", ""))
    except (ValueError, AttributeError):
        return ""


@callback(
    Output("audit-feedback", "children"),
    Input("audit-verify", "n_clicks"),
    prevent_initial_call=True,
)
def verify(_n: int | None) -> str:
    """Check the whole chain and say where it breaks, if it does."""
    ensure_may("audit")
    r = _audit().verify()
    log.info("%s verified the audit chain: %s", current().name, "ok" if r.ok else r.problem)
    if r.ok:
        note = f" ({r.note})" if r.note else ""
        said = _("Chain intact: %(n)s records, head %(head)s…")
        return said % {"n": fmt_number(r.count), "head": r.head[:16]} + note
    if r.broken_seq is None:  # the chain holds; an anchor of its head does not verify
        return _("ANCHOR CHECK FAILED: %(problem)s") % {"problem": r.problem}
    said = _("CHAIN BROKEN at record %(seq)s: %(problem)s")
    return said % {"seq": r.broken_seq, "problem": r.problem}


@callback(
    Output("audit-download", "data"),
    Input("audit-export", "n_clicks"),
    State("audit-range", "value"),
    State("audit-user", "value"),
    State("audit-action", "value"),
    prevent_initial_call=True,
)
def export(
    _n: int | None, span: str | None, user: str | None, action: str | None
) -> dict[str, str]:
    """Download the shown records as CSV (with both hashes, to check them elsewhere)."""
    ensure_may("export")
    from beffroi.control.audit import to_csv

    hmi = get_context()
    text = to_csv(_frame(span, user, action), hmi.cfg.metropolis.timezone)
    _audit().record(current().name, "audit.export", outcome="ok", range=span)
    stamp = utcnow().strftime("%Y%m%dT%H%M%SZ")
    return {"content": text, "filename": f"beffroi-audit-{stamp}.csv", "type": "text/csv"}
