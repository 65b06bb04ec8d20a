"""Synoptic page: the live mimic of one asset, and every signal of it with its quality."""

from __future__ import annotations

from collections.abc import Mapping

import dash
import plotly.graph_objects as go
from dash import Input, NoUpdate, Output, callback, dcc, html
from dash.development.base_component import Component
from flask import has_request_context
from flask_login import current_user

from beffroi.core.model import Sample, utcnow
from beffroi.core.privacy import PositionPolicy
from beffroi.hmi.auth import ensure_sees, sees
from beffroi.hmi.context import get_context, one_param
from beffroi.hmi.synoptics import (
    Reader,
    class_title,
    head_view,
    private_positions,
    signal_rows,
    synoptic,
)
from beffroi.i18n import _, current_locale

dash.register_page(
    __name__,
    path="/synoptic",
    name="Synoptics",
    title=lambda: "Beffroi — " + _("Synoptic"),
    order=2,
)

REFRESH_MS = 2000


def layout(asset: str | None = None, **_query: str) -> html.Div:
    """Render the page, preselecting ?asset=ID when the user may see it."""
    asset = one_param(asset)  # ?asset=a&asset=b comes as a list
    hmi = get_context()
    visible = sorted(
        (a for a in hmi.register.assets.values() if sees(a.commune)),
        key=lambda a: (a.asset_class, a.id),
    )
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
                    {"label": f"{class_title(a)} · {_commune_name(a.commune)}", "value": a.id}
                    for a in visible
                ],
                value=value,
                clearable=False,
                placeholder=_("Choose an asset"),
                className="synoptic-picker",
            ),
            html.Div(id="synoptic-head", className="synoptic-head"),
            html.Div(
                className="synoptic-body",
                children=[
                    dcc.Graph(
                        id="synoptic-graph",
                        config={"displayModeBar": False, "locale": current_locale()},
                        className="synoptic-graph",
                    ),
                    html.Div(id="synoptic-signals", className="synoptic-signals"),
                ],
            ),
            dcc.Interval(id="synoptic-interval", interval=REFRESH_MS),
        ],
    )


def _role() -> str | None:
    """Return the role of this request's user (None outside requests)."""
    if not has_request_context() or not current_user.is_authenticated:
        return None
    return str(current_user.user.role)


def _may_command() -> bool:
    """Tell whether the user of this request may send setpoints (the Control page's right)."""
    if not has_request_context() or not current_user.is_authenticated:
        return False
    return bool(current_user.user.may("setpoint"))


@callback(
    Output("synoptic-graph", "figure"),
    Output("synoptic-head", "children"),
    Output("synoptic-signals", "children"),
    Input("synoptic-asset", "value"),
    Input("synoptic-interval", "n_intervals"),
)
def refresh(
    asset_id: str | None, _n: int | None
) -> tuple[go.Figure, list[Component], html.Table] | NoUpdate:
    """Redraw the mimic and the signal list from live values."""
    hmi = get_context()
    asset = hmi.register.assets.get(asset_id or "")
    if asset is None:
        return dash.no_update
    ensure_sees(asset.commune)
    live: Mapping[str, Sample] = hmi.live.snapshot([t.name for t in asset.tags])
    # A staff vehicle's position leaves the server only as precisely as the role may see it.
    snapshot, coarse_m = private_positions(
        asset, live, PositionPolicy.from_config(hmi.cfg), _role()
    )
    now = utcnow()
    readings = Reader(asset, snapshot, now).readings()
    control_on, may = hmi.control is not None, _may_command()
    return (
        synoptic(asset, snapshot, now, coarse_m=coarse_m),
        head_view(asset, readings, control_on, may, _commune_name(asset.commune)),
        signal_rows(asset, readings, now, control_on, may),
    )


def _commune_name(commune_id: str) -> str:
    """Return a commune's name as people write it ("Chenôve", not "chenove")."""
    commune = get_context().register.communes.get(commune_id)
    return commune.name if commune is not None else commune_id
