"""Control: select-before-operate setpoints, and incident playbooks previewed, run, rolled back."""

from __future__ import annotations

import logging
from typing import Any

import dash
import dash_leaflet as dl
from dash import Input, NoUpdate, Output, State, callback, ctx, dcc, html, no_update
from dash.development.base_component import Component
from flask import has_request_context
from flask_login import current_user

from beffroi.control.playbooks import PlaybookEngine
from beffroi.control.service import ControlService
from beffroi.hmi.auth import current, ensure_may, ensure_sees, sees
from beffroi.hmi.components.communes import centre_of, commune_layer
from beffroi.hmi.context import get_context, one_param
from beffroi.hmi.control_views import result_view, run_state_text, run_view, selection_view
from beffroi.hmi.users import User
from beffroi.i18n import N_, _, ngettext

dash.register_page(
    __name__,
    path="/control",
    name=N_("Control"),
    title=lambda: _("Beffroi — Control"),  # called per request, in the user's language
    order=4,
)

log = logging.getLogger(__name__)
CENTRE = (47.32, 5.04)


def _user() -> User | None:
    """Return the logged-in user while a page is built (None outside requests)."""
    if has_request_context() and current_user.is_authenticated:
        return current_user.user
    return None


def _service() -> ControlService:
    control = get_context().control
    if control is None:
        raise dash.exceptions.PreventUpdate
    return control


def _playbooks(control: ControlService) -> PlaybookEngine:
    engine = control.playbooks
    assert engine is not None  # built at start, and control starts before the HMI
    return engine


def _asset_options(writable_only: bool) -> list[dict[str, str]]:
    hmi = get_context()
    out = []
    for a in sorted(hmi.register.assets.values(), key=lambda a: (a.commune, a.id)):
        if not sees(a.commune) or (writable_only and not any(t.writable for t in a.tags)):
            continue
        label = _(hmi.cfg.asset_classes[a.asset_class].label)  # config text, catalogued
        out.append({"label": f"{a.id} · {label} · {a.commune}", "value": a.id})
    return out


def _setpoint_section(asset: str | None) -> html.Section:
    return html.Section(
        className="control-setpoint",
        children=[
            html.H3(_("Setpoint (select, then operate)")),
            html.Div(
                className="control-row",
                children=[
                    dcc.Dropdown(
                        id="control-asset",
                        options=_asset_options(True),
                        value=asset,
                        placeholder=_("Asset"),
                        className="control-wide",
                    ),
                    dcc.Dropdown(
                        id="control-signal",
                        placeholder=_("Setpoint"),
                        className="control-narrow",
                    ),
                    html.Button(_("Select"), id="control-select", n_clicks=0),
                ],
            ),
            html.Div(id="control-selection"),
            html.Div(
                className="control-row",
                children=[
                    dcc.Input(id="control-value", placeholder=_("New value"), debounce=False),
                    dcc.Input(
                        id="control-reason",
                        placeholder=_("Reason (required)"),
                        className="control-wide",
                        debounce=False,
                    ),
                    html.Button(_("Operate"), id="control-operate", n_clicks=0),
                ],
            ),
            html.Div(id="control-result"),
            dcc.Store(id="control-selection-id"),
        ],
    )


def _place_options() -> list[dict[str, str]]:
    hmi = get_context()
    out = []
    if hmi.alarms is not None:
        for a in hmi.alarms.alarms():
            if sees(a["commune"]):
                msg = a["message"] or a["rule"]
                out.append(
                    {
                        "label": _("Alarm P%(severity)s · %(message)s · %(asset)s")
                        % {"severity": a["severity"], "message": msg, "asset": a["asset"]},
                        "value": f"asset:{a['asset']}",
                    }
                )
    return out + [{**o, "value": f"asset:{o['value']}"} for o in _asset_options(False)]


def _playbook_section(asset_id: str | None, control: ControlService) -> html.Section:
    hmi = get_context()
    asset = hmi.register.assets.get(asset_id or "")
    at = (asset.lat, asset.lon) if asset is not None and sees(asset.commune) else (None, None)
    playbooks = [{"label": _(p.label), "value": p.name} for p in hmi.cfg.control.playbooks]
    runs = [
        {"label": f"{_(r.label)} · {r.place or r.id} · {run_state_text(r.state)}", "value": r.id}
        for r in _playbooks(control).runs()
        if all(sees(c) for c in r.communes())
    ]
    return html.Section(
        className="control-playbooks",
        children=[
            html.H3(_("Incident playbooks")),
            html.Div(
                className="control-row",
                children=[
                    dcc.Dropdown(
                        id="control-playbook",
                        options=playbooks,
                        value=playbooks[0]["value"] if playbooks else None,
                        clearable=False,
                        className="control-narrow",
                    ),
                    dcc.Dropdown(
                        id="control-place-from",
                        options=_place_options(),
                        placeholder=_("Place: click the map, or pick an alarm or asset"),
                        className="control-wide",
                    ),
                ],
            ),
            html.Div(
                className="control-row",
                children=[
                    dcc.Input(
                        id="control-lat", type="number", placeholder=_("latitude"), value=at[0]
                    ),
                    dcc.Input(
                        id="control-lon", type="number", placeholder=_("longitude"), value=at[1]
                    ),
                    dcc.Input(id="control-radius", type="number", placeholder=_("radius (m)")),
                    dcc.Input(
                        id="control-place",
                        placeholder=_("Place (e.g. avenue du Drapeau)"),
                        className="control-wide",
                    ),
                    html.Button(_("Preview"), id="control-preview", n_clicks=0),
                ],
            ),
            dl.MapContainer(
                id="control-map",
                center=centre_of(get_context().register.communes.values()),
                zoom=12,
                className="control-map",
                style={"height": "260px"},
                children=[
                    # The background (tiles, schematic, commune labels) under the playbook.
                    commune_layer(
                        list(get_context().register.communes.values()), "control-map-communes"
                    ),
                    dl.LayerGroup(id="control-map-marker"),
                ],
            ),
            html.Div(id="control-preview-feedback", className="control-feedback"),
            html.Div(
                className="control-row",
                children=[
                    html.Button(_("Run"), id="control-run", n_clicks=0, disabled=True),
                    html.Button(_("Roll back"), id="control-rollback", n_clicks=0, disabled=True),
                    dcc.Dropdown(
                        id="control-runs",
                        options=runs,
                        placeholder=_("Earlier runs"),
                        className="control-wide",
                    ),
                    html.Span(id="control-run-feedback", className="control-feedback"),
                ],
            ),
            html.Div(id="control-run-view"),
            dcc.Store(id="control-run-id"),
            dcc.Interval(id="control-interval", interval=1000),
        ],
    )


def layout(asset: str | None = None, **_query: str) -> html.Div:
    """Render the setpoint form and, for supervisors, the playbooks."""
    asset = one_param(asset)  # ?asset=a&asset=b comes as a list
    hmi, user = get_context(), _user()
    if hmi.control is None:
        return html.Div(html.P(_("Control is disabled in this gateway's configuration.")))
    parts: list[Component] = []
    if user is not None and user.may("setpoint"):
        parts.append(_setpoint_section(asset))
    if user is not None and user.may("playbook"):
        parts.append(_playbook_section(asset, hmi.control))
    if not parts:
        parts.append(html.P(_("Your role may not send commands."), id="control-denied"))
    return html.Div(parts, className="control-page")


@callback(
    Output("control-signal", "options"),
    Output("control-signal", "value"),
    Input("control-asset", "value"),
)
def signals(asset_id: str | None) -> tuple[list[dict[str, str]], str | None]:
    """Offer the chosen asset's setpoints."""
    asset = get_context().register.assets.get(asset_id or "")
    if asset is None:
        return [], None
    ensure_sees(asset.commune)
    options = [{"label": t.signal, "value": t.name} for t in asset.tags if t.writable]
    return options, options[0]["value"] if len(options) == 1 else None


@callback(
    Output("control-selection", "children"),
    Output("control-selection-id", "data"),
    Input("control-select", "n_clicks"),
    State("control-signal", "value"),
    prevent_initial_call=True,
)
def select(_n: int | None, tag: str | None) -> tuple[html.Div, str | None]:
    """Select a setpoint as the logged-in user."""
    ensure_may("setpoint")
    spec = get_context().register.tags.get(tag or "")
    if spec is None:
        return html.Div(_("Choose an asset and a setpoint first.")), None
    ensure_sees(spec.commune)  # the register's commune, not the browser's claim
    from beffroi.control.model import ControlError

    try:
        sel = _service().select(current(), spec.name)
    except ControlError as exc:
        said = _("Refused: %(reason)s") % {"reason": exc.reason}
        return html.Div(said, className="control-result-refused"), None
    return selection_view(sel.as_dict()), sel.id


@callback(
    Output("control-result", "children"),
    Input("control-operate", "n_clicks"),
    State("control-selection-id", "data"),
    State("control-value", "value"),
    State("control-reason", "value"),
    prevent_initial_call=True,
)
def operate(
    _n: int | None, selection_id: str | None, value: str | None, reason: str | None
) -> html.Div:
    """Operate the selection and show what the equipment confirmed."""
    ensure_may("setpoint")
    service = _service()
    assert service.setpoints is not None  # built at start, and control starts before the HMI
    sel = service.setpoints.selection(selection_id or "")
    if sel is not None:
        ensure_sees(sel.commune)
    if value is None or str(value).strip() == "":
        return html.Div(_("Give a value."), className="control-result-refused")
    result = service.operate(current(), selection_id or "", value, reason or "")
    return result_view(result.as_dict())


@callback(
    Output("control-lat", "value"),
    Output("control-lon", "value"),
    Input("control-map", "clickData"),
    Input("control-place-from", "value"),
    prevent_initial_call=True,
)
def place(
    click: dict[str, Any] | None, chosen: str | None
) -> tuple[float | NoUpdate, float | NoUpdate]:
    """Take the place from a map click, or from the chosen alarm's or asset's location."""
    if ctx.triggered_id == "control-map":
        if not click or "latlng" not in click:
            return no_update, no_update
        lat, lon = (
            click["latlng"][:2]
            if isinstance(click["latlng"], list)
            else (click["latlng"]["lat"], click["latlng"]["lng"])
        )
        return round(lat, 6), round(lon, 6)
    asset = get_context().register.assets.get((chosen or "").removeprefix("asset:"))
    if asset is None:
        return no_update, no_update
    ensure_sees(asset.commune)
    return asset.lat, asset.lon


@callback(
    Output("control-map-marker", "children"),
    Input("control-lat", "value"),
    Input("control-lon", "value"),
    Input("control-radius", "value"),
    Input("control-run-id", "data"),
    State("control-playbook", "value"),
)
def marker(
    lat: float | None,
    lon: float | None,
    radius: float | None,
    run_id: str | None,
    name: str | None,
) -> list[Component]:
    """Draw the chosen place, the playbook's radius and the assets its preview acts on."""
    hmi = get_context()
    out: list[Component] = []
    if lat is not None and lon is not None:
        pb = next((p for p in hmi.cfg.control.playbooks if p.name == name), None)
        r = float(radius or (pb.radius_m if pb else 1000))
        out += [
            dl.Circle(center=[lat, lon], radius=r, color="#d7263d", weight=1, fillOpacity=0.08),
            dl.CircleMarker(center=[lat, lon], radius=6, color="#d7263d", fillOpacity=1),
        ]
    engine = hmi.control.playbooks if hmi.control is not None else None
    run = engine.get(run_id or "") if engine is not None and run_id else None
    if run is None:
        return out
    for commune in run.communes():
        ensure_sees(commune)
    seen: set[str] = set()
    for step in run.steps:
        for c in step.commands:
            asset = hmi.register.assets.get(c.asset)
            if asset is None or asset.id in seen:
                continue
            seen.add(asset.id)
            out.append(
                dl.CircleMarker(
                    center=[asset.lat, asset.lon],
                    radius=5,
                    color="#1f2933",
                    weight=1,
                    fillColor="#f46d25",
                    fillOpacity=0.95,
                    className="control-map-target",
                    children=dl.Tooltip(asset.id),
                )
            )
    return out


@callback(
    Output("control-run-id", "data"),
    Output("control-preview-feedback", "children"),
    Input("control-preview", "n_clicks"),
    State("control-playbook", "value"),
    State("control-lat", "value"),
    State("control-lon", "value"),
    State("control-radius", "value"),
    State("control-place", "value"),
    prevent_initial_call=True,
)
def preview(
    _n: int | None,
    name: str | None,
    lat: float | None,
    lon: float | None,
    radius: float | None,
    place_text: str | None,
) -> tuple[str | NoUpdate, str]:
    """List every command the playbook would send at this place."""
    ensure_may("playbook")
    from beffroi.control.model import ControlError

    if lat is None or lon is None:
        return no_update, _("Choose a place first: click the map or pick an alarm or asset.")
    try:
        run = _playbooks(_service()).preview(
            current(),
            name or "",  # none when no playbook is configured: refused as unknown
            float(lat),
            float(lon),
            float(radius) if radius else None,
            place_text or "",
        )
    except ControlError as exc:
        return no_update, _("Refused: %(reason)s") % {"reason": exc.reason}
    n = sum(len(s.commands) for s in run.steps)
    mails = sum(1 for s in run.steps if s.action == "email")
    commands = ngettext("%(n)d command", "%(n)d commands", n) % {"n": n}
    emails = ngettext("%(n)d e-mail", "%(n)d e-mails", mails) % {"n": mails}
    said = _("Preview: %(commands)s and %(emails)s. Check them, then Run.")
    return run.id, said % {"commands": commands, "emails": emails}


@callback(
    Output("control-run-id", "data", allow_duplicate=True),
    Input("control-runs", "value"),
    prevent_initial_call=True,
)
def pick_run(run_id: str | None) -> str | NoUpdate:
    """Show an earlier run (to follow or roll it back)."""
    ensure_may("playbook")
    return run_id or no_update


@callback(
    Output("control-run-feedback", "children"),
    Input("control-run", "n_clicks"),
    Input("control-rollback", "n_clicks"),
    State("control-run-id", "data"),
    prevent_initial_call=True,
)
def act(_run: int | None, _rollback: int | None, run_id: str | None) -> str:
    """Run the previewed playbook, or roll the shown run back, in the background."""
    ensure_may("playbook")
    from beffroi.control.model import ControlError

    service = _service()
    run = _playbooks(service).get(run_id or "")
    if run is None:
        return _("Preview a playbook first.")
    for commune in run.communes():
        ensure_sees(commune)
    try:
        if ctx.triggered_id == "control-run":
            service.start_run(current(), run.id)
            return _("Running %(playbook)s…") % {"playbook": _(run.label)}
        service.start_rollback(current(), run.id)
        return _("Rolling %(playbook)s back…") % {"playbook": _(run.label)}
    except ControlError as exc:
        return _("Refused: %(reason)s") % {"reason": exc.reason}


@callback(
    Output("control-run-view", "children"),
    Output("control-run", "disabled"),
    Output("control-rollback", "disabled"),
    Input("control-interval", "n_intervals"),
    Input("control-run-id", "data"),
)
def progress(_n: int | None, run_id: str | None) -> tuple[html.Div | list[Component], bool, bool]:
    """Show the run's steps and results live."""
    ensure_may("playbook")
    run = _playbooks(_service()).get(run_id or "")
    if run is None:
        return [], True, True
    for commune in run.communes():
        ensure_sees(commune)
    can_run = run.state == "preview"
    can_undo = run.state in ("done", "stopped", "rollback_failed")
    return run_view(run.as_dict()), not can_run, not can_undo
