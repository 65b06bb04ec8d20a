"""KPIs page: lighting savings toward the target, energy, availability, mobility and services.

Figures come from the stored KPI series (`_kpi/...`), only for the communes the user sees; the
metropolis-wide ones only for users who see every commune. The CSV download of what is shown
needs the "export" right (auditors, administrators).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import dash
import numpy as np
import pandas as pd
import plotly.graph_objects as go
from dash import Input, Output, State, callback, dcc, html
from dash.exceptions import PreventUpdate

from beffroi.core.model import Quality, utcnow
from beffroi.hmi.auth import current, ensure_may, ensure_sees, sees
from beffroi.hmi.components.communes import commune_options
from beffroi.hmi.context import get_context
from beffroi.hmi.figures import empty_figure
from beffroi.kpi.definitions import BY_NAME, COVERAGE, METROPOLIS, series_tag
from beffroi.kpi.engine import active_kpis
from beffroi.kpi.export import ExportQuery, iter_csv
from beffroi.kpi.periods import Resolution, day_of, month_of

dash.register_page(__name__, path="/kpis", name="KPIs", title="Beffroi — KPIs", order=3)

log = logging.getLogger(__name__)

REFRESH_MS = 60_000  # KPIs move every 15 minutes
PERIODS = {
    "today": "Today",
    "yesterday": "Yesterday",
    "month": "This month",
    "last-month": "Last month",
}
SHOWN = (
    "lighting_savings_pct",
    "lighting_progress_pct",
    "lighting_kwh",
    "lighting_baseline_kwh",
    "energy_kwh",
    "availability_pct",
    "mttr_h",
    "mtbf_h",
    "bus_delay_s",
    "bus_priority_requests",
    "bus_priority_granted_pct",
    "car_park_occupancy_pct",
    "car_park_full_h",
    "reservoir_compliance_pct",
    "waste_collections",
    "waste_early_pct",
)
SERVICES = (
    "bus_delay_s",
    "bus_priority_requests",
    "bus_priority_granted_pct",
    "car_park_occupancy_pct",
    "car_park_full_h",
    "reservoir_compliance_pct",
    "waste_collections",
    "waste_early_pct",
)
DOMAIN_COLOURS = {"lighting": "#f5a623", "buildings": "#3e7cb1"}


def period_bounds(key: str, now: datetime, tz: ZoneInfo) -> tuple[datetime, datetime, Resolution]:
    """Return the UTC bounds and resolution of a period choice."""
    if key == "yesterday":
        d0, d1 = day_of(now - timedelta(days=1), tz)
        return d0, d1, "day"
    if key == "month":
        m0, m1 = month_of(now, tz)
        return m0, m1, "month"
    if key == "last-month":
        m0, _ = month_of(now, tz)
        p0, p1 = month_of(m0 - timedelta(hours=1), tz)
        return p0, p1, "month"
    d0, d1 = day_of(now, tz)
    return d0, d1, "day"


def visible_scopes(communes: list[str] | None) -> list[str]:
    """Return the scopes (communes, and the metropolis for users who see all) to show."""
    ctx = get_context()
    ids = [c for c in ctx.register.communes if sees(c)]
    if communes:
        for c in communes:
            ensure_sees(c)  # hand-built requests included
        ids = [c for c in ids if c in communes]
    everywhere = all(sees(c) for c in ctx.register.communes)
    return ([METROPOLIS] if everywhere and not communes else []) + ids


def load_values(scopes: list[str], start: datetime, resolution: Resolution) -> pd.DataFrame:
    """Return the stored values of the shown KPIs for scopes and their breakdowns."""
    hist = get_context().historian
    tags: dict[str, tuple[str, str, str]] = {}
    for kpi in SHOWN:
        breakdowns = [""] + (
            [f"/class-{c}" for c in get_context().cfg.asset_classes]
            if kpi in ("availability_pct", "mttr_h", "mtbf_h")
            else [f"/domain-{d}" for d in DOMAIN_COLOURS]
            if kpi == "energy_kwh"
            else []
        )
        for scope in scopes:
            for b in breakdowns:
                for fld in ("", COVERAGE):
                    tags[series_tag(kpi, resolution, scope + b, fld)] = (kpi, scope + b, fld)
    df = hist.query(list(tags), start, start + timedelta(seconds=1))
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for tag, v, q in zip(df["tag"], df["value"], df["quality"], strict=True):
        kpi, scope, fld = tags[tag]
        row = rows.setdefault((kpi, scope), {"kpi": kpi, "scope": scope})
        if fld:
            row["coverage"] = float(v)
        else:
            row["value"], row["filled"] = float(v), int(q) == Quality.UNCERTAIN
    cols = ["kpi", "scope", "value", "coverage", "filled"]
    return pd.DataFrame(list(rows.values()), columns=cols)


def _name(scope: str) -> str:
    ctx = get_context()
    c = ctx.register.communes.get(scope.split("/", 1)[0])
    return "Métropole" if scope.startswith(METROPOLIS) else (c.name if c else scope)


def _pick(values: pd.DataFrame, kpi: str, scopes: list[str]) -> pd.DataFrame:
    out = values[(values["kpi"] == kpi) & values["scope"].isin(scopes)]
    return out.set_index("scope").reindex([s for s in scopes if s in set(out["scope"])])


def savings_figure(values: pd.DataFrame, scopes: list[str], target: float) -> go.Figure:
    """Bars of lighting savings per scope against the target line."""
    rows = _pick(values, "lighting_savings_pct", scopes)
    if rows.empty:
        return _nothing_yet("No lighting savings computed for this period yet")
    fig = go.Figure(
        go.Bar(
            x=[_name(s) for s in rows.index],
            y=rows["value"].tolist(),
            marker_color=["#2a9d55" if v >= target else "#f5a623" for v in rows["value"].fillna(0)],
            customdata=np.stack([rows["coverage"].fillna(0)], axis=-1) if len(rows) else None,
            hovertemplate="%{x}: %{y:.1f} % (coverage %{customdata[0]:.0f} %)<extra></extra>",
        )
    )
    fig.add_hline(y=target, line_dash="dash", annotation_text=f"target {target:g} %")
    fig.update_layout(
        template="plotly_white",
        height=300,
        margin={"l": 40, "r": 20, "t": 20, "b": 60},
        yaxis_title="savings %",
    )
    return fig


def energy_figure(values: pd.DataFrame, scopes: list[str]) -> go.Figure:
    """Stacked bars of energy per scope by domain."""
    fig = go.Figure()
    for domain, colour in DOMAIN_COLOURS.items():
        rows = _pick(values, "energy_kwh", [f"{s}/domain-{domain}" for s in scopes])
        if rows.empty:
            continue
        fig.add_trace(
            go.Bar(
                name=domain,
                x=[_name(s) for s in rows.index],
                y=rows["value"].tolist(),
                marker_color=colour,
            )
        )
    fig.update_layout(
        template="plotly_white",
        barmode="stack",
        height=300,
        yaxis_title="kWh",
        margin={"l": 50, "r": 20, "t": 20, "b": 60},
    )
    return fig if fig.data else _nothing_yet("No energy computed for this period yet")


def _nothing_yet(message: str) -> go.Figure:
    """Say so instead of drawing empty axes: KPIs appear after their first computation."""
    fig = empty_figure(message + " (KPIs are computed every 15 minutes)")
    fig.update_layout(height=300)
    return fig


def _cell(row: pd.Series | None, decimals: int = 1) -> html.Td:
    if row is None or pd.isna(row.get("value")):
        return html.Td("—", className="num")
    mark = " *" if row.get("filled") else ""
    title = f"coverage {row.get('coverage', 0):.0f} %" + (", gap-filled" if mark else "")
    return html.Td(f"{row['value']:.{decimals}f}{mark}", title=title, className="num")


def _row(index: pd.DataFrame, key: tuple[str, str]) -> pd.Series | None:
    """Return the values of one (KPI, scope), None when there are none."""
    if key not in index.index:
        return None
    row = index.loc[key]
    assert isinstance(row, pd.Series)  # load_values keeps one row per (KPI, scope)
    return row


def kpi_table(
    values: pd.DataFrame, kpis: tuple[str, ...], scopes: list[str], tid: str
) -> html.Table:
    """A table: one row per scope, one column per KPI (hover: coverage)."""
    index = values.set_index(["kpi", "scope"])
    head = html.Tr(
        [html.Th("")] + [html.Th(f"{BY_NAME[k].label} ({BY_NAME[k].unit})") for k in kpis]
    )
    body = []
    for s in scopes:
        cells = [_row(index, (k, s)) for k in kpis]
        if all(c is None for c in cells):
            continue
        body.append(html.Tr([html.Td(_name(s) + _suffix(s))] + [_cell(c) for c in cells]))
    return html.Table([html.Thead(head), html.Tbody(body)], id=tid, className="system-table")


def _suffix(scope: str) -> str:
    return f" · {scope.split('/class-', 1)[1]}" if "/class-" in scope else ""


def layout(**_query: str) -> html.Div:
    """Render the KPIs page."""
    ctx = get_context()
    communes = commune_options(ctx.register.communes.values(), sees)
    return html.Div(
        className="system-page",
        children=[
            html.Div(
                style={
                    "display": "flex",
                    "gap": "16px",
                    "alignItems": "center",
                    "flexWrap": "wrap",
                },
                children=[
                    dcc.RadioItems(
                        id="kpis-period",
                        options=PERIODS,
                        value="today",
                        inline=True,
                        inputStyle={"marginLeft": "10px"},
                    ),
                    dcc.Dropdown(
                        id="kpis-communes",
                        options=communes,
                        multi=True,
                        placeholder="All my communes",
                        style={"minWidth": "280px"},
                    ),
                    html.Button("Download CSV", id="kpis-download-button", n_clicks=0),
                    dcc.Download(id="kpis-download"),
                    html.Span(id="kpis-status", style={"color": "#52606d"}),
                ],
            ),
            html.H2("Public lighting: savings against the baseline"),
            html.Div(id="kpis-lighting-headline"),
            dcc.Graph(id="kpis-savings", config={"displaylogo": False}),
            html.H2("Energy"),
            dcc.Graph(id="kpis-energy", config={"displaylogo": False}),
            html.H2("Availability"),
            html.Div(id="kpis-availability"),
            html.H2("Mobility, water and waste"),
            html.Div(id="kpis-services"),
            html.P(
                "* includes gap-filled inputs; hover a value for its coverage.",
                style={"color": "#7b8794"},
            ),
            dcc.Interval(id="kpis-interval", interval=REFRESH_MS),
        ],
    )


@callback(
    Output("kpis-lighting-headline", "children"),
    Output("kpis-savings", "figure"),
    Output("kpis-energy", "figure"),
    Output("kpis-availability", "children"),
    Output("kpis-services", "children"),
    Output("kpis-status", "children"),
    Input("kpis-period", "value"),
    Input("kpis-communes", "value"),
    Input("kpis-interval", "n_intervals"),
)
def refresh(
    period: str | None, communes: list[str] | None, _n: int | None
) -> tuple[html.Div, go.Figure, go.Figure, html.Table, html.Table, str]:
    """Read the KPI series of the chosen period and draw every section."""
    ctx = get_context()
    tz = ZoneInfo(ctx.cfg.metropolis.timezone)
    start, end, res = period_bounds(period or "today", utcnow(), tz)
    scopes = visible_scopes(communes)
    values = load_values(scopes, start, res)
    target = ctx.cfg.kpi.lighting.target_pct if ctx.cfg.kpi.lighting else 65.0
    head = _headline(values, scopes, target)
    classes = [f"{s}/class-{c}" for s in scopes[:1] for c in ctx.cfg.asset_classes]
    availability = kpi_table(
        values,
        ("availability_pct", "mttr_h", "mtbf_h"),
        scopes + classes,
        "kpis-availability-table",
    )
    # Only the KPIs this config has inputs for (no granted counter: no granted column).
    active = {k.name for k in active_kpis(ctx.cfg)}
    shown = tuple(k for k in SERVICES if k in active)
    services = kpi_table(values, shown, scopes, "kpis-services-table")
    when = f"{start.astimezone(tz):%d/%m/%Y %H:%M} → {end.astimezone(tz):%d/%m/%Y %H:%M}"
    return (
        head,
        savings_figure(values, scopes, target),
        energy_figure(values, scopes),
        availability,
        services,
        f"{when} ({tz.key}) · {len(values)} values",
    )


def _headline(values: pd.DataFrame, scopes: list[str], target: float) -> html.Div:
    first = scopes[0] if scopes else None
    rows = _pick(values, "lighting_savings_pct", [first] if first else [])
    if first is None or rows.empty or pd.isna(rows["value"].iloc[0]):
        return html.Div("No lighting figures for this period yet.", id="kpis-savings-value")
    v, cov = rows["value"].iloc[0], rows["coverage"].iloc[0]
    return html.Div(
        [
            html.Strong(f"{_name(first)}: {v:.1f} % saved", id="kpis-savings-value"),
            html.Span(
                f" — {100 * v / target:.0f} % of the way to the {target:g} % target "
                f"(coverage {cov:.0f} %)"
            ),
        ]
    )


@callback(
    Output("kpis-download", "data"),
    Input("kpis-download-button", "n_clicks"),
    State("kpis-period", "value"),
    State("kpis-communes", "value"),
    prevent_initial_call=True,
)
def download(
    n_clicks: int | None, period: str | None, communes: list[str] | None
) -> dict[str, Any]:
    """Send the figures shown as CSV, for users with the export right."""
    if not n_clicks:
        raise PreventUpdate
    ensure_may("export")
    ctx = get_context()
    tz = ZoneInfo(ctx.cfg.metropolis.timezone)
    start, end, res = period_bounds(period or "today", utcnow(), tz)
    scopes = visible_scopes(communes)
    mine = tuple(s for s in scopes if s != METROPOLIS)
    everywhere = METROPOLIS in scopes
    query = ExportQuery(start, end, res, SHOWN, () if everywhere else mine, everywhere)
    text = "".join(iter_csv(ctx.historian, query, ctx.cfg.metropolis.timezone))
    log.info("KPI CSV downloaded by %s: %s %s", current().name, res, start.isoformat())
    name = f"beffroi-kpis-{res}-{start.astimezone(tz):%Y-%m-%d}.csv"
    return dcc.send_string(text, name, type="text/csv")
