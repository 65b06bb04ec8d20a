"""KPIs page: lighting savings toward the target, energy, availability, mobility and services.

Figures come from the stored KPI series (`_kpi/...`), only for the communes the user sees; the
metropolis-wide ones only for users who see every commune. The page opens on the last 30 days
of lighting: daily energy against the baseline, the daily savings and the target. The CSV
download of what is shown needs the "export" right (auditors, administrators).
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
from beffroi.hmi.components.history_banner import simulated_band, simulated_history
from beffroi.hmi.context import get_context
from beffroi.hmi.figures import empty_figure
from beffroi.i18n import N_, _, current_locale, fmt_datetime, fmt_number, fmt_percent, ngettext
from beffroi.kpi.definitions import BY_NAME, COVERAGE, METROPOLIS, series_tag
from beffroi.kpi.engine import active_kpis
from beffroi.kpi.export import ExportQuery, iter_csv
from beffroi.kpi.periods import Resolution, day_of, local_midnight, month_of

dash.register_page(
    __name__,
    path="/kpis",
    name=N_("KPIs"),
    title=lambda: "Beffroi — " + _("KPIs"),  # called per request, in the user's language
    order=3,
)

log = logging.getLogger(__name__)

REFRESH_MS = 60_000  # KPIs move every 15 minutes
MONTH_DAYS = 30  # the lighting chart's window: a month of days, today included
DEFAULT_TARGET_PCT = 65.0  # [kpi.lighting] target_pct's default, when lighting is not configured
PERIODS = {
    "today": N_("Today"),
    "yesterday": N_("Yesterday"),
    "month": N_("This month"),
    "last-month": N_("Last month"),
}
# The KPI catalogue's labels and units (kpi/definitions.py), as the page shows them.
LABELS = {
    "lighting_savings_pct": N_("Lighting savings"),
    "lighting_progress_pct": N_("Progress toward the savings target"),
    "lighting_kwh": N_("Public lighting, measured"),
    "lighting_baseline_kwh": N_("Public lighting, baseline"),
    "energy_kwh": N_("Energy"),
    "availability_pct": N_("Availability"),
    "mttr_h": N_("Mean time to repair"),
    "mtbf_h": N_("Mean time between failures"),
    "bus_delay_s": N_("Mean bus delay"),
    "bus_priority_requests": N_("Bus priority requests"),
    "bus_priority_granted_pct": N_("Bus priority granted"),
    "car_park_occupancy_pct": N_("Car-park occupancy"),
    "car_park_full_h": N_("Car-park hours full"),
    "reservoir_compliance_pct": N_("Reservoir level compliance"),
    "waste_collections": N_("Waste collections"),
    "waste_early_pct": N_("Collections below the full threshold"),
}
UNITS = {"requests": N_("requests"), "collections": N_("collections")}
DOMAINS = {"lighting": N_("Public lighting"), "buildings": N_("Buildings")}
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
    return _("Metropolis") if scope.startswith(METROPOLIS) else (c.name if c else scope)


def _label(kpi: str) -> str:
    """Return a KPI's name and unit in the user's language."""
    d = BY_NAME[kpi]
    unit = _(UNITS[d.unit]) if d.unit in UNITS else d.unit
    return f"{_(LABELS.get(kpi, d.label))} ({unit})"


def _separators() -> str:
    """Return plotly's decimal and thousands separators in the user's language."""
    return ", " if current_locale() == "fr" else ".,"


def _pick(values: pd.DataFrame, kpi: str, scopes: list[str]) -> pd.DataFrame:
    out = values[(values["kpi"] == kpi) & values["scope"].isin(scopes)]
    return out.set_index("scope").reindex([s for s in scopes if s in set(out["scope"])])


def target_pct() -> float:
    """Return the lighting savings target of the config."""
    lighting = get_context().cfg.kpi.lighting
    return lighting.target_pct if lighting else DEFAULT_TARGET_PCT


# --- the month of lighting -------------------------------------------------------------------


def month_window(now: datetime, tz: ZoneInfo, days: int = MONTH_DAYS) -> tuple[datetime, datetime]:
    """Return the UTC bounds of the last `days` local days, today included."""
    today = now.astimezone(tz).date()
    return local_midnight(today - timedelta(days=days - 1), tz), local_midnight(
        today + timedelta(days=1), tz
    )


def lighting_days(scopes: list[str], start: datetime, end: datetime) -> pd.DataFrame:
    """Return per local day the measured and baseline kWh of the scopes summed, and savings %.

    Savings of several communes are taken from their summed energies, as the KPI engine
    takes every ratio last: a commune's share weighs by its baseline, not one vote each.
    """
    tags = {
        series_tag(kpi, "day", scope): kpi
        for kpi in ("lighting_kwh", "lighting_baseline_kwh")
        for scope in scopes
    }
    df = get_context().historian.query(list(tags), start, end)
    cols = ["day", "lighting_kwh", "lighting_baseline_kwh", "savings_pct"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df.assign(kpi=df["tag"].map(tags), value=pd.to_numeric(df["value"], errors="coerce"))
    wide = df.pivot_table(index="ts", columns="kpi", values="value", aggfunc="sum")
    wide = wide.reindex(columns=cols[1:3]).dropna(how="any").sort_index()
    base = wide["lighting_baseline_kwh"]
    wide["savings_pct"] = np.where(base > 0, 100.0 * (1 - wide["lighting_kwh"] / base), np.nan)
    wide.index = pd.DatetimeIndex(wide.index)
    out = wide.reset_index(names="day")
    return out[cols]


def month_savings(days: pd.DataFrame) -> float | None:
    """Return the savings % over the days shown, from their summed energies."""
    base = float(days["lighting_baseline_kwh"].sum()) if not days.empty else 0.0
    if base <= 0:
        return None
    return 100.0 * (1 - float(days["lighting_kwh"].sum()) / base)


def lighting_scopes(scopes: list[str]) -> list[str]:
    """Return the scopes the month's lighting sums: the metropolis, or the user's communes."""
    return [METROPOLIS] if METROPOLIS in scopes else [s for s in scopes if "/" not in s]


def scope_title(scopes: list[str]) -> str:
    """Name what the lighting month covers: the metropolis, one commune, or several."""
    if len(scopes) == 1:
        return _name(scopes[0])
    return ngettext("%(n)s commune", "%(n)s communes", len(scopes)) % {"n": fmt_number(len(scopes))}


def month_figure(days: pd.DataFrame, target: float, tz: str) -> go.Figure:
    """Daily lighting kWh against the baseline (bars), the daily savings and the target (lines)."""
    if days.empty:
        return _nothing_yet(_("No lighting savings computed for these 30 days yet"))
    # Local midnights, each bar spanning its day: the simulated band then covers whole days.
    x = [t.tz_convert(tz).tz_localize(None).isoformat() for t in days["day"]]
    period = {"xperiod": 86_400_000, "xperiodalignment": "middle"}
    measured, baseline = _("measured"), _("baseline")
    savings, goal = _("savings"), _("target %(target)s") % {"target": fmt_percent(target)}
    fig = go.Figure(
        [
            go.Bar(
                x=x,
                y=days["lighting_baseline_kwh"].round(1).tolist(),
                name=baseline,
                marker_color="#c3cad3",
                hovertemplate=f"%{{x|%d/%m}} · {baseline}: %{{y:,.0f}} kWh<extra></extra>",
                **period,
            ),
            go.Bar(
                x=x,
                y=days["lighting_kwh"].round(1).tolist(),
                name=measured,
                marker_color="#f5a623",
                hovertemplate=f"%{{x|%d/%m}} · {measured}: %{{y:,.0f}} kWh<extra></extra>",
                **period,
            ),
            go.Scatter(
                x=x,
                y=days["savings_pct"].round(2).tolist(),
                name=savings,
                yaxis="y2",
                mode="lines+markers",
                line={"color": "#2a9d55", "width": 2},
                hovertemplate=f"%{{x|%d/%m}} · {savings}: %{{y:.1f}} %<extra></extra>",
                **period,
            ),
            go.Scatter(
                x=[x[0], x[-1]],
                y=[target, target],
                name=goal,
                yaxis="y2",
                mode="lines",
                line={"color": "#d7263d", "dash": "dash", "width": 1.5},
                hoverinfo="skip",
                meta="target",
                **period,
            ),
        ]
    )
    fig.update_layout(
        template="plotly_white",
        barmode="group",
        height=340,
        separators=_separators(),
        margin={"l": 55, "r": 55, "t": 30, "b": 40},
        legend={"orientation": "h", "y": -0.15},
        # A label per day, under its bars (ticks at midnights, labels mid-period).
        xaxis={
            "type": "date",
            "tickformat": "%d/%m",
            "tick0": x[0],
            "dtick": 86_400_000 * max(1, len(x) // 10),
            "ticklabelmode": "period",
        },
        yaxis={"title": {"text": "kWh"}, "rangemode": "tozero"},
        yaxis2={
            "title": {"text": _("savings %")},
            "overlaying": "y",
            "side": "right",
            "range": [0, 100],
            "tickmode": "linear",
            "tick0": 0,
            "dtick": 20,
            "showgrid": False,
        },
    )
    return fig


def _shade(fig: go.Figure, window: tuple[datetime, datetime], tz: str) -> None:
    """Shade the days of a simulated history on the month's chart."""
    history = simulated_history(get_context().cfg)
    band = simulated_band(history, tz, window) if history is not None else None
    if band is not None:
        fig.add_shape(band[0])
        fig.add_annotation(band[1])


def month_headline(scopes: list[str], value: float | None, target: float) -> html.Div:
    """Say the month's savings against the target, in one sentence."""
    if value is None:
        text = _("No lighting savings for these 30 days yet.")
        return html.Div(text, id="kpis-month-value", className="kpis-month")
    said = _("Lighting savings over 30 days: %(value)s (target %(target)s)") % {
        "value": fmt_percent(value),
        "target": fmt_percent(target),
    }
    reached = value >= target
    return html.Div(
        [
            html.Strong(said, id="kpis-month-value"),
            html.Span(" · " + scope_title(scopes), id="kpis-month-scope"),
        ],
        className="kpis-month kpis-month-" + ("reached" if reached else "below"),
        style={"fontSize": "18px", "margin": "6px 0"},
    )


@callback(
    Output("kpis-month-headline", "children"),
    Output("kpis-month", "figure"),
    Input("kpis-communes", "value"),
    Input("kpis-interval", "n_intervals"),
)
def refresh_month(communes: list[str] | None, _n: int | None) -> tuple[html.Div, go.Figure]:
    """Draw the last 30 days of lighting for the chosen scope, or say they are being computed."""
    ctx = get_context()
    tz = ZoneInfo(ctx.cfg.metropolis.timezone)
    scopes = lighting_scopes(visible_scopes(communes))
    history = simulated_history(ctx.cfg)
    if history is not None and history.kpis_pending:
        # A first start: the month's KPIs are computed in the background, minutes at most.
        computing = _("Computing this month's indicators…")
        note = html.Div(computing, id="kpis-month-value", className="kpis-month-pending")
        return note, _nothing_yet(computing, hint=False)
    target = target_pct()
    window = month_window(utcnow(), tz)
    days = lighting_days(scopes, *window)
    fig = month_figure(days, target, tz.key)
    if not days.empty:
        _shade(fig, window, tz.key)
    return month_headline(scopes, month_savings(days), target), fig


# --- the period's figures ----------------------------------------------------------------------


def savings_figure(values: pd.DataFrame, scopes: list[str], target: float) -> go.Figure:
    """Bars of lighting savings per scope against the target line."""
    rows = _pick(values, "lighting_savings_pct", scopes)
    if rows.empty:
        return _nothing_yet(_("No lighting savings computed for this period yet"))
    coverage = _("coverage")
    fig = go.Figure(
        go.Bar(
            x=[_name(s) for s in rows.index],
            y=rows["value"].tolist(),
            marker_color=["#2a9d55" if v >= target else "#f5a623" for v in rows["value"].fillna(0)],
            customdata=np.stack([rows["coverage"].fillna(0)], axis=-1) if len(rows) else None,
            hovertemplate="%{x}: %{y:.1f} % ("
            + coverage
            + " %{customdata[0]:.0f} %)<extra></extra>",
        )
    )
    fig.add_hline(
        y=target,
        line_dash="dash",
        annotation_text=_("target %(target)s") % {"target": fmt_percent(target)},
    )
    fig.update_layout(
        template="plotly_white",
        height=300,
        separators=_separators(),
        margin={"l": 40, "r": 20, "t": 20, "b": 60},
        yaxis_title=_("savings %"),
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
                name=_(DOMAINS.get(domain, domain)),
                x=[_name(s) for s in rows.index],
                y=rows["value"].tolist(),
                marker_color=colour,
            )
        )
    fig.update_layout(
        template="plotly_white",
        barmode="stack",
        height=300,
        separators=_separators(),
        yaxis_title="kWh",
        margin={"l": 50, "r": 20, "t": 20, "b": 60},
    )
    return fig if fig.data else _nothing_yet(_("No energy computed for this period yet"))


def _reading() -> go.Figure:
    """Say the figures are being read until the first refresh draws them (no bare axes)."""
    fig = empty_figure(_("Reading the indicators…"))
    fig.update_layout(height=300)
    return fig


def _nothing_yet(message: str, hint: bool = True) -> go.Figure:
    """Say so instead of drawing empty axes: KPIs appear after their first computation."""
    said = _("%(message)s (KPIs are computed every 15 minutes)") % {"message": message}
    fig = empty_figure(said if hint else message)
    fig.update_layout(height=300)
    return fig


def _cell(row: pd.Series | None, decimals: int = 1) -> html.Td:
    if row is None or pd.isna(row.get("value")):
        return html.Td("—", className="num")
    mark = " *" if row.get("filled") else ""
    title = _("coverage %(coverage)s") % {"coverage": fmt_percent(row.get("coverage", 0))}
    if mark:
        title += ", " + _("gap-filled")
    return html.Td(fmt_number(row["value"], decimals) + mark, title=title, className="num")


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
    head = html.Tr([html.Th("")] + [html.Th(_label(k)) for k in kpis])
    body = []
    for s in scopes:
        cells = [_row(index, (k, s)) for k in kpis]
        if all(c is None for c in cells):
            continue
        body.append(html.Tr([html.Td(_name(s) + _suffix(s))] + [_cell(c) for c in cells]))
    return html.Table([html.Thead(head), html.Tbody(body)], id=tid, className="system-table")


def _suffix(scope: str) -> str:
    if "/class-" not in scope:
        return ""
    cls = scope.split("/class-", 1)[1]
    spec = get_context().cfg.asset_classes.get(cls)
    return " · " + (_(spec.label) if spec else cls)  # config text, catalogued


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
                    dcc.Dropdown(
                        id="kpis-communes",
                        options=communes,
                        multi=True,
                        placeholder=_("All my communes"),
                        style={"minWidth": "280px"},
                    ),
                    html.Button(_("Download CSV"), id="kpis-download-button", n_clicks=0),
                    dcc.Download(id="kpis-download"),
                ],
            ),
            html.H2(_("Public lighting: savings against the baseline, last 30 days")),
            html.Div(id="kpis-month-headline"),
            dcc.Graph(
                id="kpis-month",
                figure=_reading(),
                config={"displaylogo": False, "locale": current_locale()},
            ),
            html.Div(
                style={
                    "display": "flex",
                    "gap": "16px",
                    "alignItems": "center",
                    "flexWrap": "wrap",
                    "marginTop": "12px",
                },
                children=[
                    dcc.RadioItems(
                        id="kpis-period",
                        options={k: _(v) for k, v in PERIODS.items()},
                        value="today",
                        inline=True,
                        inputStyle={"marginLeft": "10px"},
                    ),
                    html.Span(id="kpis-status", style={"color": "#52606d"}),
                ],
            ),
            html.H2(_("Lighting savings by commune")),
            html.Div(id="kpis-lighting-headline"),
            dcc.Graph(
                id="kpis-savings",
                figure=_reading(),
                config={"displaylogo": False, "locale": current_locale()},
            ),
            html.H2(_("Energy")),
            dcc.Graph(
                id="kpis-energy",
                figure=_reading(),
                config={"displaylogo": False, "locale": current_locale()},
            ),
            html.H2(_("Availability")),
            html.Div(id="kpis-availability"),
            html.H2(_("Mobility, water and waste")),
            html.Div(id="kpis-services"),
            html.P(
                _("* includes gap-filled inputs; hover a value for its coverage."),
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
    target = target_pct()
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
    n = ngettext("%(n)s value", "%(n)s values", len(values)) % {"n": fmt_number(len(values))}
    status = f"{fmt_datetime(start, tz)} → {fmt_datetime(end, tz)} ({tz.key}) · {n}"
    return (
        head,
        savings_figure(values, scopes, target),
        energy_figure(values, scopes),
        availability,
        services,
        status,
    )


def _headline(values: pd.DataFrame, scopes: list[str], target: float) -> html.Div:
    first = scopes[0] if scopes else None
    rows = _pick(values, "lighting_savings_pct", [first] if first else [])
    if first is None or rows.empty or pd.isna(rows["value"].iloc[0]):
        return html.Div(_("No lighting figures for this period yet."), id="kpis-savings-value")
    v, cov = rows["value"].iloc[0], rows["coverage"].iloc[0]
    saved = _("%(scope)s: %(value)s saved") % {"scope": _name(first), "value": fmt_percent(v, 1)}
    way = _(" — %(progress)s of the way to the %(target)s target (coverage %(coverage)s)") % {
        "progress": fmt_percent(100 * v / target),
        "target": fmt_percent(target),
        "coverage": fmt_percent(cov),
    }
    return html.Div([html.Strong(saved, id="kpis-savings-value"), html.Span(way)])


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
