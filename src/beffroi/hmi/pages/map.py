"""Home page: every asset on a map of the metropolis, coloured by state, with a detail panel.

The background is the configured tile layers and/or the offline schematic (hmi/basemap.py);
commune labels sit on a pane below the markers and move off them (assets/map.js). Vehicles
(every class reporting lat and lon: buses, the municipal fleet) move in place; the selected
one, or all of them on demand, draws its trail of the last 15 minutes from the historian.
Staff vehicles are shown through the privacy policy: coarse positions and no trail for roles
without the need to know.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

import dash
import dash_leaflet as dl
from dash import (
    ClientsideFunction,
    Input,
    NoUpdate,
    Output,
    State,
    callback,
    clientside_callback,
    ctx,
    dcc,
    html,
    no_update,
)
from dash.development.base_component import Component

from beffroi.core.model import Sample, utcnow
from beffroi.core.privacy import PositionPolicy
from beffroi.hmi.auth import current, ensure_sees, sees
from beffroi.hmi.components.asset_panel import (
    SPARK_WINDOW,
    alarm_list,
    asset_panel,
    primary_tag,
    sparkline,
)
from beffroi.hmi.components.communes import centre_of, commune_layer, commune_options
from beffroi.hmi.components.labels import domain_label
from beffroi.hmi.config import HmiSite
from beffroi.hmi.context import get_context, one_param
from beffroi.hmi.state import (
    STATE_COLOURS,
    STATES,
    alarm_marks,
    asset_rows,
    count_states,
    filter_assets,
    layer_geojson,
    layer_hideout,
    map_frame,
    mobile_classes,
    shown_positions,
    state_label,
    trail_allowed,
    vehicle_trails,
)
from beffroi.hmi.trend_data import trend_frame
from beffroi.i18n import _, current_locale

dash.register_page(__name__, path="/", name="Map", title=lambda: "Beffroi — " + _("Map"), order=0)

log = logging.getLogger(__name__)

REFRESH_MS = 2000
TRAIL_REFRESH_MS = 10_000  # a trail grows by a few metres a refresh: no need to redraw it faster
ASSET_MARKER = {"variable": "dashExtensions.beffroi.assetMarker"}
VEHICLE_MARKER = {"variable": "dashExtensions.beffroiMap.vehicleMarker"}
# Trails on a pane below the markers' (overlay pane, 400) and above the labels: a trail never
# covers a marker.
TRAIL_PANE = "beffroi-trails"
TRAIL_Z = 390
TRAIL_COLOUR = "#3559a8"
MAX_TRAILS = 60  # "all trails" draws at most this many vehicles (those in the filters)
POSITION_SIGNALS = ("lat", "lon")
CLUSTER_MARKER = {"variable": "dashExtensions.beffroi.clusterMarker"}
# Fixed assets group into clusters up to this zoom; closer in, every asset is its own marker.
CLUSTER = {"radius": 60, "maxZoom": 15}
EMPTY = {"type": "FeatureCollection", "features": []}


def legend(counts: Mapping[str, int]) -> list[html.Span]:
    """Render one legend item per state: dot, label and count."""
    return [
        html.Span(
            className="map-legend-item" + ("" if counts.get(s) else " map-legend-zero"),
            id=f"map-legend-{s}",
            children=[
                html.Span(className="map-legend-dot", style={"background": STATE_COLOURS[s]}),
                html.Span(state_label(s)),
                html.Span(str(counts.get(s, 0)), className="map-legend-count", id=f"map-count-{s}"),
            ],
        )
        for s in STATES
    ]


def _role() -> str | None:
    """Return the logged-in user's role (None outside a logged-in request)."""
    try:
        return current().role
    except Exception:
        return None


def _vehicle_kinds(cfg: HmiSite) -> dict[str, tuple[str, bool]]:
    """Return each moving class's label and whether it is of the municipal fleet."""
    return {
        k: (_(cfg.asset_classes[k].label), cfg.asset_classes[k].family == "fleet")
        for k in mobile_classes(cfg)
    }


def layout(asset: str | None = None, **_query: str) -> html.Div:
    """Render the map page; `?asset=ID` opens centred on that asset with its panel."""
    asset = one_param(asset)  # ?asset=a&asset=b comes as a list
    hmi = get_context()
    domains = sorted({c.domain for c in hmi.cfg.asset_classes.values()})
    communes = list(hmi.register.communes.values())
    chosen = hmi.register.assets.get(asset or "")
    if chosen is not None and not sees(chosen.commune):
        chosen = None  # another commune's asset: the map opens as if nothing was asked
    centre, zoom = centre_of(communes), hmi.cfg.hmi.map.zoom
    if chosen is not None:
        centre, zoom = [chosen.lat, chosen.lon], 16
    return html.Div(
        className="map-page",
        children=[
            html.Div(
                className="map-toolbar",
                children=[
                    dcc.Dropdown(
                        id="map-commune",
                        options=commune_options(communes, sees),
                        multi=True,
                        placeholder=_("All communes"),
                        className="map-filter",
                    ),
                    dcc.Dropdown(
                        id="map-domain",
                        options=[{"label": domain_label(d), "value": d} for d in domains],
                        multi=True,
                        placeholder=_("All domains"),
                        className="map-filter",
                    ),
                    dcc.Checklist(
                        id="map-cluster",
                        options=[{"label": _("Group markers"), "value": "on"}],
                        value=["on"],
                        persistence=True,
                        className="map-cluster-toggle",
                    ),
                    dcc.Checklist(
                        id="map-trails-all",
                        options=[{"label": _("All vehicle trails"), "value": "on"}],
                        value=[],
                        persistence=True,
                        className="map-cluster-toggle",
                    ),
                    html.Div(id="map-legend", className="map-legend", children=legend({})),
                ],
            ),
            html.Div(
                className="map-body",
                children=[
                    dl.MapContainer(
                        id="map-leaflet",
                        center=centre,
                        zoom=zoom,
                        minZoom=9,
                        maxZoom=19,
                        className="map-leaflet",
                        children=[
                            commune_layer(communes, "map-communes"),
                            dl.Pane(
                                name=TRAIL_PANE,
                                style={"zIndex": TRAIL_Z, "pointerEvents": "none"},
                                children=dl.LayerGroup(id="map-trails"),
                            ),
                            dl.GeoJSON(
                                id="map-fixed",
                                data=EMPTY,
                                pointToLayer=ASSET_MARKER,
                                cluster=True,
                                clusterToLayer=CLUSTER_MARKER,
                                superClusterOptions=CLUSTER,
                                zoomToBoundsOnClick=True,
                                spiderfyOnMaxZoom=True,
                            ),
                            dl.GeoJSON(id="map-moving", data=EMPTY, pointToLayer=VEHICLE_MARKER),
                            dl.ScaleControl(position="bottomleft", imperial=False),
                        ],
                    ),
                    html.Aside(
                        id="map-panel",
                        className="map-panel",
                        children=html.P(
                            _("Click an asset to see its live values."),
                            className="map-panel-hint",
                        ),
                    ),
                ],
            ),
            dcc.Store(id="map-selected", data=chosen.id if chosen else None),
            dcc.Store(id="map-digest"),
            dcc.Store(id="map-frame"),
            dcc.Store(id="map-painted"),
            dcc.Interval(id="map-interval", interval=REFRESH_MS),
            dcc.Interval(id="map-trail-interval", interval=TRAIL_REFRESH_MS),
        ],
    )


def _digest(obj: object) -> str:
    return hashlib.blake2b(json.dumps(obj).encode(), digest_size=12).hexdigest()


@callback(
    Output("map-fixed", "data"),
    Output("map-fixed", "hideout"),
    Output("map-moving", "data"),
    Output("map-moving", "hideout"),
    Output("map-frame", "data"),
    Output("map-legend", "children"),
    Output("map-digest", "data"),
    Input("map-interval", "n_intervals"),
    Input("map-commune", "value"),
    Input("map-domain", "value"),
    State("map-digest", "data"),
)
def refresh_markers(
    _n: int | None,
    communes: list[str] | None,
    domains: list[str] | None,
    digest: dict[str, Any] | None,
) -> tuple[dict[str, Any] | list[html.Span] | NoUpdate, ...]:
    """Recompute states from live values; redraw layers when the filters or the register change."""
    hmi = get_context()
    # Read before the assets: a change landing between the two reads is drawn at the next
    # refresh (its revision moves the key), never missed.
    revision = hmi.register.revision
    for commune in communes or []:
        ensure_sees(commune)  # a hand-built request for another commune's data gets 403
    if not communes:
        communes = [c for c in hmi.register.communes if sees(c)]
    assets = filter_assets(hmi.register, communes, domains)
    marks = alarm_marks(hmi.alarms.alarms(communes=communes)) if hmi.alarms is not None else {}
    rows = asset_rows(assets, hmi.live.snapshot(), marks=marks)
    # Every position leaves the server as the user's role may see it (staff vehicles coarse).
    shown_positions(rows, PositionPolicy.from_config(hmi.cfg), _role())
    moving = mobile_classes(hmi.cfg)
    fixed_rows = [r for r in rows if r["class"] not in moving]
    moving_rows = [r for r in rows if r["class"] in moving]
    key = _digest([sorted(communes or []), sorted(domains or []), revision])
    frame = map_frame(fixed_rows, moving_rows, key)
    counts = count_states(rows)
    old = digest or {}
    new = {"filter": key, "frame": _digest(frame), "counts": counts}
    # The browser keeps whichever of a layer's hideout and the newest frame is newer.
    stamp = time.time_ns() // 1_000_000
    frame["t"] = stamp
    if key != old.get("filter"):
        # A new set of markers (other filters, assets added, moved, placed or retired while
        # the gateway runs): draw both layers from scratch, already in their current state.
        layers: tuple[dict[str, Any] | NoUpdate, ...] = (
            layer_geojson(fixed_rows),
            {**layer_hideout("fixed", fixed_rows, key), "t": stamp},
            layer_geojson(moving_rows, _vehicle_kinds(hmi.cfg)),
            {**layer_hideout("moving", moving_rows, key), "t": stamp},
        )
    else:
        layers = (no_update,) * 4
    if new == old:
        return (*layers, no_update, no_update, no_update)
    frame_out = frame if new["frame"] != old.get("frame") else no_update
    legend_out = legend(counts) if counts != old.get("counts") else no_update
    return (*layers, frame_out, legend_out, new)


# Restyle and move markers in the browser, in place: no layer rebuild every refresh.
clientside_callback(
    ClientsideFunction(namespace="beffroi", function_name="applyFrame"),
    Output("map-painted", "data"),
    Input("map-frame", "data"),
)

# Grouping is a view preference: switched in the browser, no round trip to the server.
clientside_callback(
    "function (value) { return (value || []).indexOf('on') >= 0; }",
    Output("map-fixed", "cluster"),
    Input("map-cluster", "value"),
)


@callback(
    Output("map-selected", "data"),
    Input("map-fixed", "clickData"),
    Input("map-moving", "clickData"),
    prevent_initial_call=True,
)
def select_asset(
    fixed_click: dict[str, Any] | None, moving_click: dict[str, Any] | None
) -> str | NoUpdate:
    """Remember the asset the user clicked on."""
    click = fixed_click if ctx.triggered_id == "map-fixed" else moving_click
    if not click or "properties" not in click:
        return no_update
    return click["properties"].get("id")


@callback(
    Output("map-panel", "children"),
    Input("map-selected", "data"),
    Input("map-interval", "n_intervals"),
    prevent_initial_call=True,
)
def render_panel(asset_id: str | None, _n: int | None) -> list[Component] | html.P | NoUpdate:
    """Show the selected asset's live values, refreshed with the map."""
    if not asset_id:
        return no_update
    hmi = get_context()
    asset = hmi.register.assets.get(asset_id)
    if asset is None:
        gone = hmi.register.retired.get(asset_id)
        if gone is not None:  # retired while its panel was open
            ensure_sees(gone.commune)
            return html.P(
                _("%(asset)s is retired: out of the inventory, its history kept in the trends.")
                % {"asset": asset_id},
                className="map-panel-hint",
            )
        return html.P(
            _("Unknown asset %(asset)s") % {"asset": asset_id}, className="map-panel-hint"
        )
    ensure_sees(asset.commune)
    now = utcnow()
    snapshot = _shown_snapshot(
        hmi.live.snapshot([t.name for t in asset.tags]),
        asset.asset_class,
        PositionPolicy.from_config(hmi.cfg),
        _role(),
    )
    alarms: list[dict[str, Any]] = []
    if hmi.alarms is not None:
        alarms = [a for a in hmi.alarms.alarms(communes=[asset.commune]) if a["asset"] == asset.id]
    children = asset_panel(asset, snapshot, hmi.cfg, hmi.register, now, alarms)
    if hmi.control is not None and any(t.writable for t in asset.tags):
        link = dcc.Link(_("Commands, playbooks →"), href=f"/control?asset={asset.id}")
        children.append(html.Div(link, id="map-panel-control"))
    if hmi.interventions is not None and current().may("interventions"):
        href = "/interventions?" + urlencode({"asset": asset.id})
        link = dcc.Link(_("Open an intervention"), href=href)
        children.append(html.Div(link, id="map-panel-intervention"))
    if hmi.alarms is not None:
        children.append(alarm_list(alarms))
    tag = primary_tag(asset)
    if tag.rsplit("/", 1)[-1] in POSITION_SIGNALS:
        # A latitude curve tells nothing an operator needs, and a staff vehicle's would tell
        # where a person went: show its speed (or nothing) instead.
        speed = next((t.name for t in asset.tags if t.signal == "speed_kmh"), None)
        if speed is None:
            return children
        tag = speed
    try:
        window = (now - SPARK_WINDOW, now)
        df, _shown, held = trend_frame(hmi.historian, snapshot, [tag], window, 300, live_view=True)
    except Exception:
        log.exception("map: sparkline query failed for %s", tag)
    else:
        children.append(
            dcc.Graph(
                id="map-panel-spark",
                figure=sparkline(df, tag, hmi.register.tags[tag].unit, window, held),
                config={"displayModeBar": False, "staticPlot": True, "locale": current_locale()},
            )
        )
    return children


def _shown_snapshot(
    snapshot: dict[str, Sample], asset_class: str, policy: PositionPolicy, role: str | None
) -> dict[str, Sample]:
    """Return live values with a staff vehicle's position as coarse as the role must see it."""
    if policy.exact_for(role, asset_class):
        return snapshot
    out = dict(snapshot)
    for tag, s in snapshot.items():
        signal = tag.rsplit("/", 1)[-1]
        if signal in POSITION_SIGNALS:  # whatever the quality: a CommLoss may carry a value
            out[tag] = dataclasses.replace(s, value=policy.shown_value(signal, s.value))
    return out


@callback(
    Output("map-trails", "children"),
    Input("map-selected", "data"),
    Input("map-trails-all", "value"),
    Input("map-trail-interval", "n_intervals"),
    State("map-commune", "value"),
    State("map-domain", "value"),
)
def draw_trails(
    selected: str | None,
    all_trails: list[str] | None,
    _n: int | None,
    communes: list[str] | None,
    domains: list[str] | None,
) -> list[Component]:
    """Draw the last 15 minutes of the selected vehicle, or of every vehicle shown."""
    hmi = get_context()
    moving = mobile_classes(hmi.cfg)
    policy, role = PositionPolicy.from_config(hmi.cfg), _role()
    if "on" in (all_trails or []):
        for commune in communes or []:
            ensure_sees(commune)
        chosen = communes or [c for c in hmi.register.communes if sees(c)]
        vehicles = [
            a for a in filter_assets(hmi.register, chosen, domains) if a.asset_class in moving
        ]
    else:
        asset = hmi.register.assets.get(selected or "")
        vehicles = [asset] if asset is not None and asset.asset_class in moving else []
    # A coarse trail still follows a person: none at all for a role without the need to know.
    vehicles = [
        a for a in vehicles if sees(a.commune) and trail_allowed(policy, role, a.asset_class)
    ][:MAX_TRAILS]
    if not vehicles:
        return []
    try:
        trails = vehicle_trails(hmi.historian, vehicles, utcnow())
    except Exception:
        log.exception("map: trail query failed")
        return []
    return [
        dl.Polyline(
            positions=points,
            color=TRAIL_COLOUR,
            weight=4 if asset_id == selected else 2,
            opacity=0.75,
            interactive=False,
            className=f"map-trail map-trail-{asset_id}",
            pane=TRAIL_PANE,
            id=f"map-trail-{asset_id}",
        )
        for asset_id, points in trails.items()
    ]
