"""Synoptic page: the live mimic of one asset (cabinet, intersection, reservoir, …)."""

from __future__ import annotations

import dash
import plotly.graph_objects as go
from dash import Input, NoUpdate, Output, callback, dcc, html

from beffroi.core.model import utcnow
from beffroi.hmi.auth import ensure_sees, sees
from beffroi.hmi.context import get_context
from beffroi.hmi.synoptics import MIMICS, synoptic

dash.register_page(
    __name__, path="/synoptic", name="Synoptics", title="Beffroi — Synoptic", order=2
)

REFRESH_MS = 2000


def layout(asset: str | None = None, **_query: str) -> html.Div:
    """Render the page, preselecting ?asset=ID when the user may see it."""
    hmi = get_context()
    visible = [
        a for a in hmi.register.assets.values() if a.asset_class in MIMICS and sees(a.commune)
    ]
    chosen = hmi.register.assets.get(asset or "")
    value = (
        chosen.id
        if chosen is not None and sees(chosen.commune)
        else (visible[0].id if visible else None)
    )
    return html.Div(
        className="synoptic-page",
        children=[
            dcc.Dropdown(
                id="synoptic-asset",
                options=[
                    {
                        "label": f"{a.id} · {a.asset_class.replace('_', ' ')} · {a.commune}",
                        "value": a.id,
                    }
                    for a in visible
                ],
                value=value,
                clearable=False,
                className="synoptic-picker",
            ),
            dcc.Graph(id="synoptic-graph", config={"displayModeBar": False}),
            dcc.Interval(id="synoptic-interval", interval=REFRESH_MS),
        ],
    )


@callback(
    Output("synoptic-graph", "figure"),
    Input("synoptic-asset", "value"),
    Input("synoptic-interval", "n_intervals"),
)
def refresh(asset_id: str | None, _n: int | None) -> go.Figure | NoUpdate:
    """Redraw the mimic from live values."""
    hmi = get_context()
    asset = hmi.register.assets.get(asset_id or "")
    if asset is None:
        return dash.no_update
    ensure_sees(asset.commune)
    snapshot = hmi.live.snapshot([t.name for t in asset.tags])
    return synoptic(asset, snapshot, utcnow())
