"""Inventory: the assets of the user's communes, those discovery found to place, retirements.

The register changes while the gateway runs (imports, discovery, confirmations, retirements):
the grids follow its `revision`, checked every refresh, and are sent again only when it or the
filters moved. Placing and retiring go through `Inventory`, which stores, applies and audits.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any

import dash
import dash_ag_grid as dag
import dash_leaflet as dl
from dash import Input, NoUpdate, Output, State, callback, ctx, dcc, html, no_update
from dash.development.base_component import Component
from dash.exceptions import PreventUpdate

from beffroi.core.limits import COMMENT_MAX, check_text
from beffroi.core.model import Asset
from beffroi.hmi.auth import current, ensure_may, ensure_sees, sees
from beffroi.hmi.components.communes import centre_of, commune_layer, commune_options
from beffroi.hmi.components.grids import grid_options
from beffroi.hmi.context import get_context, one_param
from beffroi.hmi.inventory_views import (
    STATE_LABELS,
    Filters,
    asset_row,
    click_place,
    coordinate,
    summary,
    to_place_row,
)
from beffroi.i18n import N_, _, fmt_number
from beffroi.inventory.service import Inventory

dash.register_page(
    __name__,
    path="/inventory",
    name=N_("Inventory"),
    title=lambda: _("Beffroi — Inventory"),  # called per request, in the user's language
    order=8,
)

log = logging.getLogger(__name__)

REFRESH_MS = 2000
PLACE_ZOOM = 15
COLUMNS = [
    {"field": "id", "pinned": "left", "width": 130},
    {"field": "name", "width": 200},
    {"field": "address", "width": 220},
    {"field": "class", "width": 170},
    {"field": "commune", "width": 140},
    {"field": "state", "width": 140},
    {"field": "model", "width": 120},
    {"field": "installed", "width": 110},
    {"field": "source", "width": 150},
    {"field": "origin", "width": 160},
    {"field": "attributes", "flex": 1, "minWidth": 200},
    {"field": "lat", "width": 100},
    {"field": "lon", "width": 100},
]
TO_PLACE_COLUMNS = [
    {"field": "id", "width": 130},
    {"field": "class", "width": 170},
    {"field": "commune", "width": 140},
    {"field": "origin", "flex": 1},
    {"field": "signals", "width": 90},
]
# The grids' column titles, by field, translated when a page is built.
HEADERS = {
    "id": N_("Id"),
    "name": N_("Name"),
    "address": N_("Address"),
    "class": N_("Class"),
    "commune": N_("Commune"),
    "state": N_("State"),
    "model": N_("Model"),
    "installed": N_("Installed"),
    "source": N_("Source"),
    "origin": N_("Origin"),
    "attributes": N_("Attributes"),
    "lat": N_("Latitude"),
    "lon": N_("Longitude"),
    "signals": N_("Signals"),
}
GRID_OPTIONS = {"rowSelection": "single", "animateRows": False}
DEFAULT_COL = {"sortable": True, "resizable": True, "filter": True}
_Text = str | NoUpdate


def _inventory() -> Inventory:
    """Return the living inventory; no update when it is not running (no forms then)."""
    inventory = get_context().inventory
    if inventory is None:
        raise PreventUpdate
    return inventory


def _visible() -> list[Asset]:
    """Return the assets of the user's communes, in service and retired, by id."""
    register = get_context().register
    # Retired first: an id taken back into service is then shown once, as it is now.
    everything = {**register.retired, **register.assets}
    return sorted((a for a in everything.values() if sees(a.commune)), key=lambda a: a.id)


def _headed(columns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return column definitions with their titles in the user's language."""
    return [{**c, "headerName": _(HEADERS[c["field"]])} for c in columns]


def _class_labels() -> dict[str, str]:
    # Class labels come from config.toml in English; the catalogue translates them.
    return {k: _(c.label) for k, c in get_context().cfg.asset_classes.items()}


def _toolbar() -> html.Div:
    hmi = get_context()
    return html.Div(
        className="inventory-toolbar",
        children=[
            dcc.Input(
                id="inventory-search",
                type="search",
                placeholder=_("Search id, name or address"),
                debounce=True,
                className="inventory-search",
            ),
            dcc.Dropdown(
                id="inventory-class",
                options=[{"label": lbl, "value": k} for k, lbl in _class_labels().items()],
                multi=True,
                placeholder=_("All classes"),
                className="inventory-filter",
            ),
            dcc.Dropdown(
                id="inventory-commune",
                options=commune_options(hmi.register.communes.values(), sees),
                multi=True,
                placeholder=_("All communes"),
                className="inventory-filter",
            ),
            dcc.Dropdown(
                id="inventory-state",
                options=[{"label": _(lbl), "value": s} for s, lbl in STATE_LABELS.items()],
                multi=True,
                placeholder=_("All states"),
                className="inventory-filter",
            ),
            html.Span(id="inventory-summary", className="inventory-summary"),
        ],
    )


def _retire_section(may: bool) -> html.Section:
    return html.Section(
        className="inventory-retire",
        hidden=not may,
        children=[
            html.H3(_("Retire")),
            html.Div(
                className="inventory-row",
                children=[
                    html.Span(
                        _("Select an asset in the grid."),
                        id="inventory-selected",
                        className="inventory-selected",
                    ),
                    dcc.Input(
                        id="inventory-reason",
                        placeholder=_("Reason (required)"),
                        className="inventory-wide",
                    ),
                    html.Button(_("Retire"), id="inventory-retire", n_clicks=0),
                ],
            ),
            html.Div(id="inventory-retire-feedback", className="inventory-feedback"),
        ],
    )


def _place_section(may: bool, chosen: Asset | None) -> html.Section:
    hmi = get_context()
    communes = [c for c in hmi.register.communes.values() if sees(c.id)]
    form = html.Div(
        hidden=not may,
        children=[
            html.Div(
                className="inventory-row",
                children=[
                    html.Span(
                        _placing_text(chosen) if chosen else _("Pick an asset in the list."),
                        id="inventory-placing",
                        className="inventory-selected",
                    ),
                    dcc.Input(id="inventory-lat", type="number", placeholder=_("latitude")),
                    dcc.Input(id="inventory-lon", type="number", placeholder=_("longitude")),
                    dcc.Input(id="inventory-name", placeholder=_("Name (optional)")),
                    dcc.Input(
                        id="inventory-address",
                        placeholder=_("Address (optional)"),
                        className="inventory-wide",
                    ),
                    html.Button(_("Confirm"), id="inventory-confirm", n_clicks=0),
                ],
            ),
            dl.MapContainer(
                id="inventory-map",
                center=[chosen.lat, chosen.lon] if chosen else centre_of(communes),
                zoom=PLACE_ZOOM if chosen else 12,
                className="inventory-map",
                style={"height": "260px"},
                children=[
                    commune_layer(communes, "inventory-map-communes"),
                    dl.LayerGroup(id="inventory-map-marker"),
                ],
            ),
            html.Div(id="inventory-confirm-feedback", className="inventory-feedback"),
        ],
    )
    return html.Section(
        className="inventory-place",
        children=[
            html.H3(_("To be placed")),
            html.P(
                _(
                    "Equipment a collector found on its server that no inventory lists: it is"
                    " shown at its commune's centre until someone places it (click the map or"
                    " give the latitude and longitude), then it joins the inventory."
                ),
                className="inventory-hint",
            ),
            dag.AgGrid(
                id="inventory-toplace",
                rowData=[],
                columnDefs=_headed(TO_PLACE_COLUMNS),
                getRowId="params.data.id",
                dashGridOptions=grid_options(**GRID_OPTIONS),
                style={"height": "180px"},
            ),
            form,
        ],
    )


def _placing_text(asset: Asset) -> str:
    commune = get_context().register.communes.get(asset.commune)
    return _("Placing %(asset)s (%(commune)s)") % {
        "asset": asset.id,
        "commune": commune.name if commune else asset.commune,
    }


def layout(asset: str | None = None, **_query: str) -> html.Div:
    """Render the inventory: filters, the grid, retirement, and the assets to be placed."""
    asset = one_param(asset)  # ?asset=a&asset=b comes as a list
    hmi = get_context()
    user = current()
    may = hmi.inventory is not None and user.may("inventory")
    chosen = hmi.register.assets.get(asset or "")
    if chosen is not None and (chosen.state != "to_place" or not sees(chosen.commune)):
        chosen = None
    parts: list[Component] = [
        html.H2(_("Inventory")),
        _toolbar(),
        dag.AgGrid(
            id="inventory-grid",
            rowData=[],
            columnDefs=_headed(COLUMNS),
            getRowId="params.data.id",
            dashGridOptions=grid_options(**GRID_OPTIONS),
            defaultColDef=DEFAULT_COL,
            style={"height": "44vh"},
        ),
    ]
    if hmi.inventory is None:
        parts.append(html.P(_("The inventory is not running in this gateway: read only.")))
    elif not may:
        parts.append(
            html.P(
                _(
                    "Placing and retiring equipment needs the inventory right"
                    " (supervisors, admins)."
                ),
                id="inventory-denied",
                className="inventory-hint",
            )
        )
    parts += [
        _retire_section(may),
        _place_section(may, chosen),
        dcc.Store(id="inventory-seen"),
        # The register's revision after this page's own changes: the grids follow at once.
        dcc.Store(id="inventory-retired"),
        dcc.Store(id="inventory-placed"),
        dcc.Store(id="inventory-place-id", data=chosen.id if chosen else None),
        dcc.Interval(id="inventory-interval", interval=REFRESH_MS),
    ]
    return html.Div(parts, className="inventory-page")


def _digest(obj: object) -> str:
    return hashlib.blake2b(json.dumps(obj, default=sorted).encode(), digest_size=12).hexdigest()


@callback(
    Output("inventory-grid", "rowData"),
    Output("inventory-toplace", "rowData"),
    Output("inventory-summary", "children"),
    Output("inventory-seen", "data"),
    Input("inventory-interval", "n_intervals"),
    Input("inventory-search", "value"),
    Input("inventory-class", "value"),
    Input("inventory-commune", "value"),
    Input("inventory-state", "value"),
    Input("inventory-retired", "data"),
    Input("inventory-placed", "data"),
    State("inventory-seen", "data"),
)
def refresh(
    _n: int | None,
    text: str | None,
    classes: list[str] | None,
    communes: list[str] | None,
    states: list[str] | None,
    _retired: int | None,
    _placed: int | None,
    seen: str | None,
) -> tuple[list[dict[str, Any]] | str | NoUpdate, ...]:
    """List the filtered assets and those to be placed, again only when something changed."""
    filters = Filters.of(text, classes, communes, states)
    for commune in filters.communes:
        ensure_sees(commune)  # a hand-built request for another commune's assets gets 403
    hmi = get_context()
    # Read before the assets: a change landing between the two reads is listed at the next
    # refresh (the revision moved), never missed.
    revision = hmi.register.revision
    key = _digest([revision, filters.text, filters.classes, filters.communes, filters.states])
    if key == seen:
        return no_update, no_update, no_update, no_update
    assets = _visible()
    communes_by_id, labels = hmi.register.communes, _class_labels()
    rows = [asset_row(a, communes_by_id, labels) for a in assets if filters.keeps(a)]
    to_place = [to_place_row(a, communes_by_id, labels) for a in assets if a.state == "to_place"]
    return rows, to_place, summary(assets, len(rows)), key


def _selected_id(rows: object) -> str:
    """Return the id of a grid's selected row ("" when none, or out of shape)."""
    if isinstance(rows, list) and rows and isinstance(rows[0], dict):
        value = rows[0].get("id")
        if isinstance(value, str):
            return value
    return ""


@callback(
    Output("inventory-selected", "children"),
    Input("inventory-grid", "selectedRows"),
    prevent_initial_call=True,
)
def show_selected(selected: list[dict[str, Any]] | None) -> str:
    """Name the asset the retire form applies to."""
    asset = get_context().register.assets.get(_selected_id(selected))
    if asset is None:
        return _("Select an asset in service in the grid.")
    ensure_sees(asset.commune)
    return f"{asset.id}" + (f" · {asset.name}" if asset.name else "")


@callback(
    Output("inventory-retire-feedback", "children"),
    Output("inventory-retired", "data"),
    Input("inventory-retire", "n_clicks"),
    State("inventory-grid", "selectedRows"),
    State("inventory-reason", "value"),
    prevent_initial_call=True,
)
def retire(
    _n: int | None, selected: list[dict[str, Any]] | None, reason: str | None
) -> tuple[str, int | NoUpdate]:
    """Take the selected asset out of service, with a reason, as the logged-in user; audited."""
    ensure_may("inventory")
    inventory = _inventory()
    asset_id = _selected_id(selected)
    asset = inventory.register.assets.get(asset_id)
    if asset is None:
        gone = inventory.register.retired.get(asset_id)
        if gone is not None:
            ensure_sees(gone.commune)
            return _("%(asset)s is already retired.") % {"asset": asset_id}, no_update
        return _("Select an asset in service in the grid first."), no_update
    ensure_sees(asset.commune)  # the register's commune, not the browser's claim
    if not isinstance(reason, str) or not reason.strip():
        return _("A reason is required."), no_update
    try:
        check_text(reason, "reason", COMMENT_MAX)
    except ValueError as exc:
        return _("Refused: %(error)s.") % {"error": exc}, no_update
    user = current().name
    try:
        inventory.retire(asset.id, user, reason.strip())
    except ValueError as exc:
        return _("Refused: %(error)s") % {"error": exc}, no_update
    log.info("%s retired %s: %s", user, asset.id, reason.strip())
    said = _("%(asset)s retired by %(user)s.") % {"asset": asset.id, "user": user}
    return said, inventory.register.revision


@callback(
    Output("inventory-place-id", "data"),
    Output("inventory-placing", "children"),
    Output("inventory-name", "value"),
    Output("inventory-address", "value"),
    Output("inventory-map", "viewport"),
    Input("inventory-toplace", "selectedRows"),
    Input("inventory-placed", "data"),
    prevent_initial_call=True,
)
def pick(
    selected: list[dict[str, Any]] | None, _placed: int | None
) -> tuple[_Text | None, _Text, _Text, _Text, dict[str, Any] | NoUpdate]:
    """Take the asset to place from the list and show its commune; clear the form once placed."""
    if ctx.triggered_id == "inventory-placed":
        return None, _("Pick an asset in the list."), "", "", no_update
    asset = get_context().register.assets.get(_selected_id(selected))
    if asset is None or asset.state != "to_place":
        return (no_update,) * 5
    ensure_sees(asset.commune)
    view = {"center": [asset.lat, asset.lon], "zoom": PLACE_ZOOM}
    return asset.id, _placing_text(asset), asset.name, asset.address, view


@callback(
    Output("inventory-lat", "value"),
    Output("inventory-lon", "value"),
    Input("inventory-map", "clickData"),
    Input("inventory-placed", "data"),
    prevent_initial_call=True,
)
def clicked(
    click: dict[str, Any] | None, _placed: int | None
) -> tuple[float | NoUpdate | None, float | NoUpdate | None]:
    """Take the place from a click on the small map; clear it once the asset is placed."""
    if ctx.triggered_id == "inventory-placed":
        return None, None
    place = click_place(click)
    if place is None:
        return no_update, no_update
    return place


@callback(
    Output("inventory-map-marker", "children"),
    Input("inventory-lat", "value"),
    Input("inventory-lon", "value"),
)
def marker(lat: float | None, lon: float | None) -> list[Component]:
    """Draw the chosen place on the small map."""
    la, lo = coordinate(lat, -90, 90), coordinate(lon, -180, 180)
    if la is None or lo is None:
        return []
    return [dl.CircleMarker(center=[la, lo], radius=7, color="#0fa3b1", fillOpacity=1)]


@callback(
    Output("inventory-confirm-feedback", "children"),
    Output("inventory-placed", "data"),
    Input("inventory-confirm", "n_clicks"),
    State("inventory-place-id", "data"),
    State("inventory-lat", "value"),
    State("inventory-lon", "value"),
    State("inventory-name", "value"),
    State("inventory-address", "value"),
    prevent_initial_call=True,
)
def confirm(
    _n: int | None,
    asset_id: str | None,
    lat: float | None,
    lon: float | None,
    name: str | None,
    address: str | None,
) -> tuple[str, int | NoUpdate]:
    """Place an asset found by discovery where the user says: it joins the inventory, audited."""
    ensure_may("inventory")
    inventory = _inventory()
    asset = inventory.register.assets.get(asset_id if isinstance(asset_id, str) else "")
    if asset is None or asset.state != "to_place":
        return _("Pick an asset to be placed in the list first."), no_update
    ensure_sees(asset.commune)
    la, lo = coordinate(lat, -90, 90), coordinate(lon, -180, 180)
    if la is None or lo is None:
        return _("Give the place: click the map, or a latitude and a longitude."), no_update
    texts = {"name": name, "address": address}
    for what, value in texts.items():
        if value is not None and not isinstance(value, str):
            return _("Refused: %(field)s: expected text.") % {"field": what}, no_update
    user = current().name
    try:
        placed = inventory.confirm(
            asset.id,
            user,
            lat=la,
            lon=lo,
            name=(name or "").strip(),
            address=(address or "").strip(),
        )
    except ValueError as exc:  # the record the inventory checks: text bounds, place
        return _("Refused: %(error)s") % {"error": exc}, no_update
    log.info("%s placed %s at %.6f, %.6f", user, placed.id, la, lo)
    said = _("%(asset)s placed at %(lat)s, %(lon)s by %(user)s: it is in the inventory now.") % {
        "asset": placed.id,
        "lat": fmt_number(la, 6),
        "lon": fmt_number(lo, 6),
        "user": user,
    }
    return said, inventory.register.revision
