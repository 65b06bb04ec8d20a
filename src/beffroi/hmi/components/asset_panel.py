"""The map's asset panel: identity, inventory record, state, live values, alarms and trend."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

import pandas as pd
from dash import dcc, html
from dash.development.base_component import Component

from beffroi.core.model import Asset, Quality, Sample
from beffroi.core.register import Register
from beffroi.hmi.components.alarm_states import state_name
from beffroi.hmi.components.labels import domain_label
from beffroi.hmi.config import HmiSite
from beffroi.hmi.figures import trend_figure
from beffroi.hmi.state import STATE_COLOURS, STATE_LABELS, alarm_marks, asset_state
from beffroi.i18n import MISSING, N_, _, fmt_date, fmt_number

# Qualities as operators read them (OPC UA's Good / Uncertain / Bad, and a lost link).
QUALITY_LABELS = {
    Quality.GOOD: N_("good"),
    Quality.UNCERTAIN: N_("uncertain"),
    Quality.BAD: N_("bad"),
    Quality.COMM_LOSS: N_("communication lost"),
}


def quality_label(quality: Quality) -> str:
    """Return a value's quality in the user's language."""
    return _(QUALITY_LABELS[quality])


def format_age(seconds: float | None) -> str:
    """Format an age in seconds as a short human string."""
    if seconds is None:
        return MISSING
    seconds = max(seconds, 0.0)
    if seconds < 90:
        return _("%(n)s s") % {"n": fmt_number(seconds)}
    if seconds < 90 * 60:
        return _("%(n)s min") % {"n": fmt_number(seconds / 60)}
    if seconds < 48 * 3600:
        return _("%(n)s h") % {"n": fmt_number(seconds / 3600, 1)}
    return _("%(n)s d") % {"n": fmt_number(seconds / 86400, 1)}


def format_value(value: object, unit: str = "") -> str:
    """Format a live value with its unit, numbers the user's way ("12,5 kW" in French)."""
    if isinstance(value, bool):
        text = _("true") if value else _("false")
    elif isinstance(value, float):
        text = f"{value:.6g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.3g}"
        if "e" not in text and "n" not in text:  # not tiny, huge, inf or nan: the locale's digits
            decimals = len(text.partition(".")[2])
            text = fmt_number(float(text), decimals)
    elif isinstance(value, int):
        text = fmt_number(value)
    else:
        text = str(value)
    return f"{text}\u00a0{unit}" if unit else text


def trend_href(tag: str) -> str:
    """Return the trends page URL preselecting one tag."""
    return "/trends?tag=" + quote(tag, safe="/")


SPARK_WINDOW = timedelta(hours=1)


def sparkline(
    df: pd.DataFrame,
    tag: str,
    unit: str,
    window: tuple[datetime, datetime],
    held: Mapping[str, datetime] | None = None,
) -> dict[str, Any]:
    """Draw the last hour of one tag, small, for the asset panel."""
    fig = trend_figure(df, [tag], units={tag: unit}, x_range=window, held=held)
    layout = fig["layout"]
    layout.update(height=140, showlegend=False, margin={"l": 35, "r": 5, "t": 5, "b": 20})
    for axis in ("xaxis", "yaxis"):
        layout.setdefault(axis, {})["title"] = None
    return fig


def primary_tag(asset: Asset) -> str:
    """Pick the tag whose trend best represents the asset (first measured number)."""
    for spec in asset.tags:
        if spec.kind == "float" and not spec.writable:
            return spec.name
    for spec in asset.tags:
        if spec.kind == "float":
            return spec.name
    return asset.tags[0].name


def asset_panel(
    asset: Asset,
    snapshot: Mapping[str, Sample],
    cfg: HmiSite,
    register: Register,
    now: datetime,
    alarms: Sequence[Mapping[str, Any]] = (),
) -> list[Component]:
    """Render the side panel of one asset: identity, state (with its alarms) and live values."""
    state = asset_state(asset, snapshot, now, mark=alarm_marks(alarms).get(asset.id))
    cls = cfg.asset_classes.get(asset.asset_class)
    commune = register.communes.get(asset.commune)
    rows = []
    for spec in asset.tags:
        s = snapshot.get(spec.name)
        age = (now - s.ts).total_seconds() if s else None
        rows.append(
            html.Tr(
                [
                    html.Td(dcc.Link(spec.signal, href=trend_href(spec.name))),
                    html.Td(format_value(s.value, spec.unit) if s else MISSING, className="num"),
                    html.Td(quality_label(s.quality) if s else MISSING),
                    html.Td(format_age(age), className="num"),
                ]
            )
        )
    return [
        html.H3(
            [
                html.Span(asset.id, id="map-panel-id"),
                html.Span(
                    _(STATE_LABELS[state]),
                    className="map-state-badge",
                    style={"background": STATE_COLOURS[state]},
                ),
            ]
        ),
        html.Div(
            [
                html.Span(_(cls.label) if cls else asset.asset_class, id="map-panel-class"),
                " · ",
                html.Span(commune.name if commune else asset.commune, id="map-panel-commune"),
                " · ",
                html.Span(domain_label(asset.domain)),
            ],
            className="map-panel-meta",
        ),
        *record_view(asset),
        dcc.Link(
            _("Trend of %(signal)s →") % {"signal": primary_tag(asset).rsplit("/", 1)[-1]},
            href=trend_href(primary_tag(asset)),
            id="map-panel-trend",
        ),
        dcc.Link(_("Synoptic →"), href=f"/synoptic?asset={asset.id}", id="map-panel-synoptic"),
        html.Table(
            [
                html.Thead(
                    html.Tr(
                        [
                            html.Th(_("signal")),
                            html.Th(_("value")),
                            html.Th(_("quality")),
                            html.Th(_("age")),
                        ]
                    )
                ),
                html.Tbody(rows),
            ],
            id="map-panel-values",
        ),
    ]


SOURCE_LABELS = {
    "generated": N_("generated register"),
    "inventory": N_("inventory"),
    "discovery": N_("found by discovery"),
}


def source_text(asset: Asset) -> str:
    """Say where an asset's record comes from: the source, and the file, operator or collector."""
    said = _(SOURCE_LABELS[asset.source]) if asset.source in SOURCE_LABELS else asset.source
    return f"{said} · {asset.origin}" if asset.origin else said


def record_view(asset: Asset) -> list[Component]:
    """Render what the inventory knows of an asset: name, address, model, dates, attributes."""
    out: list[Component] = []
    if asset.name:
        out.append(html.Div(asset.name, id="map-panel-name", className="map-panel-name"))
    if asset.address:
        out.append(html.Div(asset.address, id="map-panel-address", className="map-panel-meta"))
    if asset.state == "to_place":
        out.append(
            html.Div(
                [
                    _(
                        "Found by discovery, not in the inventory: shown at its commune's centre"
                        " until placed."
                    ),
                    " ",
                    dcc.Link(_("Place it →"), href=f"/inventory?asset={asset.id}"),
                ],
                id="map-panel-toplace",
                className="map-panel-note",
            )
        )
    elif asset.state == "removed":
        out.append(
            html.Div(
                _(
                    "Its server no longer offers it (removed at source): its values are the"
                    " last known. Retire it on the Inventory page if it is gone for good."
                ),
                id="map-panel-removed",
                className="map-panel-note",
            )
        )
    rows = [
        (_("model"), asset.model),
        (_("installed"), fmt_date(asset.installed) if asset.installed else ""),
        (_("source"), source_text(asset)),
        *sorted(asset.attributes.items()),
    ]
    out.append(
        html.Table(
            html.Tbody([html.Tr([html.Th(k), html.Td(v)]) for k, v in rows if v]),
            id="map-panel-record",
            className="map-panel-record",
        )
    )
    return out


def alarm_list(alarms: list[dict[str, Any]]) -> html.Div:
    """List an asset's alarms needing attention, most urgent first."""
    if not alarms:
        return html.Div(_("No active alarm"), id="map-panel-alarms", className="map-panel-hint")
    return html.Div(
        id="map-panel-alarms",
        children=[
            html.H4(_("Alarms")),
            html.Ul(
                [
                    html.Li(
                        " · ".join(
                            (f"P{a['severity']}", a["message"] or a["rule"], state_name(a["state"]))
                        ),
                        className=f"map-alarm-p{a['severity']}",
                    )
                    for a in alarms
                ]
            ),
            dcc.Link(_("Alarm console →"), href="/alarms"),
        ],
    )
