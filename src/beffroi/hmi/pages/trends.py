"""Trends page: pick tags, a time range, and follow their stored values live."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dash
import pandas as pd
import plotly.graph_objects as go
from dash import (
    ClientsideFunction,
    Input,
    NoUpdate,
    Output,
    State,
    callback,
    clientside_callback,
    dcc,
    html,
    no_update,
)
from dash.exceptions import PreventUpdate

from beffroi.api.query import coarse_positions
from beffroi.core.csv_safe import CRLF, safe_cell
from beffroi.core.model import Quality, utcnow
from beffroi.core.register import Register
from beffroi.hmi.auth import ensure_sees, sees
from beffroi.hmi.components.history_banner import shade_simulated
from beffroi.hmi.context import get_context
from beffroi.hmi.figures import DISPLAY_TZ, empty_figure, quality_name, trend_figure
from beffroi.hmi.trend_data import request_viewer, trend_frame
from beffroi.i18n import N_, _, current_locale, fmt_datetime, fmt_number, ngettext

dash.register_page(
    __name__,
    path="/trends",
    name=N_("Trends"),
    title=lambda: _("Beffroi — Trends"),  # called per request, in the user's language
    order=1,
)

log = logging.getLogger(__name__)

REFRESH_MS = 2000
MAX_POINTS = 2000
MAX_OPTIONS = 50
RANGES: dict[str, timedelta] = {
    "15m": timedelta(minutes=15),
    "1h": timedelta(hours=1),
    "6h": timedelta(hours=6),
    "24h": timedelta(hours=24),
    "7d": timedelta(days=7),
    "30d": timedelta(days=30),
}
RANGE_LABELS = {
    "15m": N_("15 min"),
    "1h": N_("1 h"),
    "6h": N_("6 h"),
    "24h": N_("24 h"),
    "7d": N_("7 d"),
    "30d": N_("30 d"),
}
# Column headers of the CSV download (its first row), in the user's language.
CSV_COLUMNS = (N_("time"), N_("tag"), N_("value"), N_("unit"), N_("quality"))
DEFAULT_RANGE = "1h"


def parse_tags(raw: str | Sequence[str] | None, register: Register) -> list[str]:
    """Read tags from a query-string value (repeated or comma-separated), keeping known ones."""
    if not raw:
        return []
    items = [raw] if isinstance(raw, str) else list(raw)
    out: list[str] = []
    for item in items:
        for tag in item.split(","):
            tag = tag.strip()
            if tag in register.tags and tag not in out:
                out.append(tag)
            elif tag:
                log.info("trends: ignoring unknown tag %r from the URL", tag)
    return out


def search_tags(tags: Iterable[str], query: str, limit: int = MAX_OPTIONS) -> list[str]:
    """Return up to limit tags containing every word of the query (case-insensitive)."""
    words = query.lower().split()
    if not words:
        return []
    out: list[str] = []
    for tag in tags:
        low = tag.lower()
        if all(w in low for w in words):
            out.append(tag)
            if len(out) >= limit:
                break
    return out


def _option(tag: str, register: Register) -> dict[str, str]:
    spec = register.tags.get(tag)
    label = f"{tag} ({spec.unit})" if spec and spec.unit else tag
    return {"label": label, "value": tag}


def layout(tag: str | list[str] | None = None, range: str | None = None, **_query: str) -> html.Div:
    """Render the trends page, preselecting tags from ?tag=… and a range from ?range=…."""
    register = get_context().register
    tags = [t for t in parse_tags(tag, register) if sees(register.tags[t].commune)]
    chosen = range if range in RANGES else DEFAULT_RANGE
    return html.Div(
        className="trends-page",
        children=[
            html.Div(
                className="trends-controls",
                children=[
                    dcc.Dropdown(
                        id="trends-tags",
                        options=[_option(t, register) for t in tags],
                        value=tags,
                        multi=True,
                        searchable=True,
                        placeholder=_("Search tags, e.g. dijon power_kw"),
                        className="trends-tags",
                    ),
                    dcc.RadioItems(
                        id="trends-range",
                        options=[{"label": _(RANGE_LABELS[k]), "value": k} for k in RANGES],
                        value=chosen,
                        inline=True,
                        className="trends-range",
                    ),
                    dcc.Checklist(
                        id="trends-follow",
                        options=[{"label": _("Live follow"), "value": "follow"}],
                        value=["follow"],
                        inline=True,
                        className="trends-follow",
                    ),
                    html.Button(_("Download CSV"), id="trends-download-button", n_clicks=0),
                    dcc.Download(id="trends-download"),
                    dcc.Store(id="trends-zoom"),
                ],
            ),
            dcc.Graph(
                id="trends-graph",
                className="trends-graph",
                figure=empty_figure(_("Loading…") if tags else _("Pick a tag to plot")),
                config={"displaylogo": False, "locale": current_locale()},
            ),
            html.Div(id="trends-status", className="trends-status"),
            dcc.Interval(id="trends-interval", interval=REFRESH_MS),
        ],
    )


@callback(
    Output("trends-tags", "options"),
    Input("trends-tags", "search_value"),
    State("trends-tags", "value"),
    prevent_initial_call=True,
)
def update_options(search: str | None, selected: list[str] | None) -> list[dict[str, str]]:
    """Offer the selected tags plus those matching what the user types."""
    if not search:
        raise PreventUpdate
    register = get_context().register
    selected = selected or []
    visible = (t for t, spec in register.tags.items() if sees(spec.commune))
    found = search_tags(visible, search)
    return [_option(t, register) for t in dict.fromkeys([*selected, *found])]


# The zoom window lives in the browser (assets/beffroi.js): see update_graph.
clientside_callback(
    ClientsideFunction(namespace="beffroi", function_name="trendZoom"),
    Output("trends-zoom", "data"),
    Input("trends-graph", "relayoutData"),
    Input("trends-tags", "value"),
    Input("trends-range", "value"),
    prevent_initial_call=True,
)

# A zoomed window is history: the refresh pauses, as it does when live follow is off.
clientside_callback(
    "function (follow, zoom) { return (follow || []).indexOf('follow') < 0 || !!zoom; }",
    Output("trends-interval", "disabled"),
    Input("trends-follow", "value"),
    Input("trends-zoom", "data"),
)


def status_text(n_points: int, start: datetime, end: datetime) -> str:
    """Describe what the figure shows, in display time."""
    zone = ZoneInfo(DISPLAY_TZ)
    points = ngettext("%(n)s point", "%(n)s points", n_points) % {"n": fmt_number(n_points)}
    return (
        f"{points} · {fmt_datetime(start, zone, seconds=True)} → "
        f"{fmt_datetime(end, zone, seconds=True)} ({DISPLAY_TZ})"
    )


def _window(range_key: str | None, zoom: dict[str, Any] | None) -> tuple[datetime, datetime]:
    """Return the zoomed window when there is one, else the chosen range up to now."""
    window = zoom_window(zoom)
    if window:
        return window
    end = utcnow()
    return end - RANGES.get(range_key or DEFAULT_RANGE, RANGES[DEFAULT_RANGE]), end


def _scoped_tags(tags: list[str] | None) -> list[str]:
    """Keep known tags, refusing (403) any outside the user's communes."""
    register = get_context().register
    tags = [t for t in (tags or []) if t in register.tags]
    for t in tags:
        ensure_sees(register.tags[t].commune)  # hand-built requests included
    return tags


def zoom_window(zoom: dict[str, Any] | None) -> tuple[datetime, datetime] | None:
    """Return the UTC window of the chart's zoom (`{lo, hi}` on its axis), None if none.

    The axis shows wall-clock times of the display zone. Around a clock change some do not
    exist (spring) and some happen twice (autumn): the window is widened to cover them all.
    Raises PreventUpdate for a window that is not two times in order (a hand-built request).
    """
    if not zoom:
        return None
    try:
        lo, hi = (pd.Timestamp(str(zoom[k])) for k in ("lo", "hi"))
        if lo.tzinfo is not None or hi.tzinfo is not None:
            raise ValueError("axis times have no offset")
        # Earliest reading of the start, latest of the end; a missing hour maps to its end.
        start = lo.tz_localize(DISPLAY_TZ, ambiguous=True, nonexistent="shift_forward")
        end = hi.tz_localize(DISPLAY_TZ, ambiguous=False, nonexistent="shift_forward")
    except (KeyError, TypeError, ValueError):
        raise PreventUpdate from None
    if not start < end:
        raise PreventUpdate
    return start.tz_convert(UTC).to_pydatetime(), end.tz_convert(UTC).to_pydatetime()


@callback(
    Output("trends-download", "data"),
    Input("trends-download-button", "n_clicks"),
    State("trends-tags", "value"),
    State("trends-range", "value"),
    State("trends-zoom", "data"),
    prevent_initial_call=True,
)
def download(
    _n: int | None,
    tags: list[str] | None,
    range_key: str | None,
    zoom: dict[str, Any] | None,
) -> dict[str, Any]:
    """Send what the chart shows as CSV: local time with offset, tag, value, unit, quality.

    Headers and quality names follow the user's language; times stay ISO 8601 and numbers
    keep a decimal point, so that any spreadsheet or script reads them back unchanged.
    """
    tags = _scoped_tags(tags)
    if not tags:
        raise PreventUpdate
    start, end = _window(range_key, zoom)
    hmi = get_context()
    # Staff positions as this user may see them, as on the chart (core/privacy.py).
    df = coarse_positions(
        hmi.historian.query(tags, start, end, max_points=MAX_POINTS), request_viewer()
    )
    columns = [
        df["ts"].dt.tz_convert(DISPLAY_TZ).map(lambda t: t.isoformat()),
        df["tag"],
        df["value"],
        df["tag"].map(lambda t: hmi.register.tags[t].unit),
        df["quality"].map(lambda q: quality_name(Quality(int(q)))),
    ]
    out = pd.DataFrame(
        {_(name): col.to_numpy() for name, col in zip(CSV_COLUMNS, columns, strict=True)}
    )
    # String tags carry text from equipment (panel messages): no live formulas in a spreadsheet.
    # A numeric value is not a text cell, so a negative one stays a number.
    for c in out.select_dtypes(include=["object", "string"]).columns:
        out[c] = out[c].map(safe_cell)
    name = f"beffroi-trend-{start.astimezone(ZoneInfo(DISPLAY_TZ)):%Y%m%d-%H%M}.csv"
    # CRLF lines, so that a message's own CR is quoted too, not a row break before a formula.
    return dcc.send_data_frame(out.to_csv, name, index=False, lineterminator=CRLF)


@callback(
    Output("trends-graph", "figure"),
    Output("trends-status", "children"),
    Input("trends-tags", "value"),
    Input("trends-range", "value"),
    Input("trends-interval", "n_intervals"),
    Input("trends-zoom", "data"),
)
def update_graph(
    tags: list[str] | None,
    range_key: str | None,
    _n: int | None,
    zoom: dict[str, Any] | None,
) -> tuple[go.Figure | dict[str, Any], str | NoUpdate]:
    """Query the historian for the chosen tags and window and draw the trend.

    Every input is the browser's whole state, so a request that overtakes another (Dash keeps
    only the newest answer of a callback) still draws what the user last asked for.
    """
    hmi = get_context()
    if zoom and "trends-zoom.data" not in dash.ctx.triggered_prop_ids:
        raise PreventUpdate  # a zoomed window is history: nothing new to follow
    tags = _scoped_tags(tags)
    if not tags:
        return empty_figure(_("Pick a tag to plot")), ""
    start, end = _window(range_key, zoom)
    try:
        live = hmi.live.snapshot(tags)
        df, stored, held = trend_frame(
            hmi.historian, live, tags, (start, end), MAX_POINTS, live_view=not zoom
        )
    except Exception as exc:
        log.exception("trends: historian query failed for %s", tags)
        return empty_figure(_("Historian query failed: %(error)s") % {"error": exc}), no_update
    specs = hmi.register.tags
    fig = trend_figure(
        df,
        tags,
        units={t: specs[t].unit for t in tags},
        # On/off states and setpoints hold until the next change: drawn as steps, not slopes.
        step_tags={t for t in tags if specs[t].kind == "bool" or specs[t].writable},
        x_range=(start, end),
        held=held,
    )
    fig["layout"]["uirevision"] = "|".join(tags) + "|" + (range_key or DEFAULT_RANGE)
    shade_simulated(fig, hmi.cfg, DISPLAY_TZ, (start, end))  # a demo's past is not measured
    text = status_text(stored, start, end)
    if zoom:
        text += " · " + _("zoomed: live follow paused (double-click the chart to return)")
    return fig, text
