"""The Interventions page's rows, details and messages, built by pure functions.

The store keeps times as naive UTC; everything shown here is in local time. Labels are
English message ids translated where they are shown (French by default), and so are the
service's refusals (report states in words here).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import pandas as pd
from dash import html

from beffroi.alerts.config import TeamConfig
from beffroi.hmi.components.labels import DOMAIN_LABELS, domain_label
from beffroi.hmi.figures import DISPLAY_TZ
from beffroi.hmi.users import RIGHTS
from beffroi.i18n import N_, _, current_locale, fmt_datetime
from beffroi.interventions.model import (
    CATEGORIES,
    EVENT_LABELS,
    STATE_LABELS,
    Intervention,
    State,
)
from beffroi.interventions.service import InterventionService

# Roles that triage reports and move interventions; viewers and auditors only look.
# The playbook an "accident" report offers to start at its place (config.toml's name).
ACCIDENT_PLAYBOOK = "accident"
SELECTION_MAX = 500  # rows one action may take: more is a hand-built request, not a click
FRENCH_TIME = "%d/%m/%Y %H:%M"  # what fmt_datetime writes in French, for a whole column

ORIGIN_LABELS = {
    "alarm": N_("alarm"),
    "operator": N_("operator"),
    "report": N_("report"),
}
VIA_LABELS = {
    "hmi": N_("command post"),
    "field": N_("field"),
    "auto": N_("automatic"),
    "public": N_("public"),
}
REPORT_STATE_LABELS = {
    "new": N_("to triage"),
    "linked": N_("attached"),
    "rejected": N_("rejected"),
    "closed": N_("closed"),
}
PRIORITY_LABELS = {
    1: N_("P1 — the most urgent"),
    2: "P2",
    3: "P3",
    4: N_("P4 — the least urgent"),
}
# States an intervention may be moved to from the page (it is created "new").
MOVE_TARGETS = [s for s in State if s is not State.NEW]
_STATE_TEXT = {str(s): label for s, label in STATE_LABELS.items()}  # by the stored value
_ZONE = ZoneInfo(DISPLAY_TZ)


def state_label(state: str) -> str:
    """Return an intervention state's name in the user's language, by its stored value."""
    return _(_STATE_TEXT[state]) if state in _STATE_TEXT else state


def report_state(state: str) -> str:
    """Return a report state in words ("à trier", "rattaché", "rejeté", "clos")."""
    return _(REPORT_STATE_LABELS[state]) if state in REPORT_STATE_LABELS else state


def priority_label(priority: int) -> str:
    """Return a priority as the form offers it ("P1 — la plus urgente")."""
    return _(PRIORITY_LABELS[priority])


def may_act(role: str) -> bool:
    """Tell whether a role triages reports and changes interventions (its `interventions` right)."""
    return "interventions" in RIGHTS.get(role, frozenset())


# --- times -----------------------------------------------------------------------------------


def _aware(ts: datetime) -> datetime:
    """Return a time as aware UTC (the store's naive times are UTC)."""
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def local_time(ts: object, seconds: bool = False) -> str:
    """Show a stored time (naive UTC, aware, or missing) in local time, the user's way."""
    if ts is None or ts is pd.NaT or not isinstance(ts, datetime):
        return ""
    return fmt_datetime(_aware(ts), _ZONE, seconds=seconds)


def local_times(column: pd.Series) -> pd.Series:
    """Show a column of stored times in local time, the user's way ("" where missing)."""
    if column.empty:
        return column.astype(object)
    times = pd.to_datetime(column)
    if times.dt.tz is None:
        times = times.dt.tz_localize("UTC")
    local = times.dt.tz_convert(DISPLAY_TZ)
    if current_locale() == "fr":  # the whole column at once, as fmt_datetime writes it
        return local.dt.strftime(FRENCH_TIME).fillna("").astype(object)
    return local.map(lambda t: "" if pd.isna(t) else fmt_datetime(t)).astype(object)


def duration_text(seconds: float) -> str:
    """Say a duration the way a supervisor reads it: 2 j 3 h, 1 h 05 min, 12 min, 40 s."""
    s = max(0, int(seconds))
    days, rest = divmod(s, 86_400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return _("%(days)d d %(hours)d h") % {"days": days, "hours": hours}
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min"
    return f"{secs} s"


# --- grid and triage rows --------------------------------------------------------------------


def _records(columns: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Return rows as dicts from equal columns (DataFrame.to_dict is several times slower)."""
    names = list(columns)
    return [dict(zip(names, values, strict=True)) for values in zip(*columns.values(), strict=True)]


def intervention_rows(df: pd.DataFrame, commune_names: Mapping[str, str]) -> list[dict[str, Any]]:
    """Return the interventions grid's rows (the store's table, names and labels for ids)."""
    if df.empty:
        return []
    # Each label translated once, then mapped over the whole column.
    states = {k: _(v) for k, v in _STATE_TEXT.items()}
    domains = {k: _(v) for k, v in DOMAIN_LABELS.items()}
    return _records(
        {
            "id": df["id"].astype("int64").tolist(),
            "priority": df["priority"].astype("int64").tolist(),
            "state": df["state"].map(states).fillna(df["state"]).tolist(),
            "title": df["title"].tolist(),
            "commune": df["commune"].map(commune_names).fillna(df["commune"]).tolist(),
            "domain": df["domain"].map(domains).fillna(df["domain"]).tolist(),
            "team": df["team"].tolist(),
            "created": local_times(df["created"]).tolist(),
            "alarms": df["n_alarms"].astype("int64").tolist(),
            "reports": df["n_reports"].astype("int64").tolist(),
        }
    )


def matches_of(text: object) -> dict[str, list[str]]:
    """Return a report's matches (nearby assets, open alarms) from their stored JSON."""
    try:
        found = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        found = {}
    if not isinstance(found, dict):
        found = {}
    return {k: [str(v) for v in found.get(k) or []] for k in ("assets", "alarms")}


def category_label(category: str) -> str:
    """Return a report category's label in the user's language (its id when unknown)."""
    cat = CATEGORIES.get(category)
    return _(cat.label) if cat is not None else category


def report_rows(
    df: pd.DataFrame, commune_names: Mapping[str, str], visible: Callable[[str], bool]
) -> list[dict[str, Any]]:
    """Return the triage queue's rows: the reports of the communes the user sees, newest first."""
    # Never the author's address: the store's report rows do not hold it.
    if df.empty:
        return []
    df = df[[visible(c) for c in df["commune"]]]
    if df.empty:
        return []
    found = [matches_of(m) for m in df["matches"]]
    return _records(
        {
            "id": df["id"].astype("int64").tolist(),
            "created": local_times(df["created"]).tolist(),
            "category": [category_label(c) for c in df["category"]],
            "category_id": df["category"].tolist(),
            "commune": [commune_names.get(c, c) for c in df["commune"]],
            "address": df["address"].fillna("").tolist(),
            "text": df["text"].tolist(),
            "assets": [", ".join(f["assets"]) for f in found],
            "alarms": [len(f["alarms"]) for f in found],
            "duplicate": [
                "" if pd.isna(d) else _("No. %(id)s") % {"id": int(d)} for d in df["duplicate_of"]
            ],
        }
    )


def triage_data(
    service: InterventionService,
    scope: Sequence[str] | None,
    commune_names: Mapping[str, str],
    *,
    open_only: bool = True,
    teams: Sequence[str] | None = None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Return the triage and grid rows of the communes in scope (None: all), teams' if given."""
    allowed = None if scope is None else set(scope)
    reports = report_rows(
        service.reports(communes=scope), commune_names, lambda c: allowed is None or c in allowed
    )
    if teams is not None and len(teams) == 1:
        table = service.table(communes=scope, team=teams[0], open_only=open_only)
    else:
        table = service.table(communes=scope, open_only=open_only)
        if teams is not None:  # several teams (or none): the store takes one, the rest here
            table = table[table["team"].isin(list(teams))]
    return reports, intervention_rows(table, commune_names)


def teams_of(teams: Mapping[str, TeamConfig], user: str) -> list[str]:
    """Return the names of the teams a user is a member of (`members` in config.toml)."""
    return [name for name, team in teams.items() if user in team.members]


# --- the new intervention form ---------------------------------------------------------------


def alarm_title(view: Mapping[str, Any]) -> str:
    """Return an intervention's title for an alarm: its message (or rule), then its asset."""
    what = str(view.get("message") or view.get("rule") or view["alarm_id"])
    return f"{what} — {view['asset']}" if view.get("asset") else what


def alarm_option(view: Mapping[str, Any], commune_names: Mapping[str, str]) -> dict[str, str]:
    """Return an alarm as the form's list offers it: priority, title, commune."""
    commune = commune_names.get(view["commune"], view["commune"])
    label = f"P{view['severity']} · {alarm_title(view)} · {commune}"
    return {"label": label, "value": str(view["alarm_id"])}


def coordinate(value: object, what: str, bound: float) -> float | None:
    """Return a typed latitude or longitude (None when empty); raise ValueError saying why.

    `what` is the field's name, already translated ("la latitude")."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.strip().replace(",", "."))
        except ValueError:
            number = None
    if number is None or not math.isfinite(number) or abs(number) > bound:
        raise ValueError(
            _("Refused: %(what)s must be a number between -%(bound)s and %(bound)s.")
            % {"what": what, "bound": f"{bound:g}"}
        )
    return number


def priority_of(value: object) -> int:
    """Return a chosen priority (1 to 4); raise ValueError saying why for anything else."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 4:
        raise ValueError(_("Refused: the priority goes from 1 (the most urgent) to 4."))
    return value


def domain_of(value: object) -> str:
    """Return a chosen domain ("other" when none); raise ValueError saying why if unknown."""
    if value is None or value == "":
        return "other"
    if not isinstance(value, str) or value not in DOMAIN_LABELS:
        raise ValueError(_("Refused: unknown domain."))
    return value


def summary(reports: int, rows: Sequence[Mapping[str, Any]]) -> str:
    """Say how many reports wait and how many interventions are shown, by state."""
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["state"]] = counts.get(r["state"], 0) + 1
    by_state = " · ".join(f"{n} {state.lower()}" for state, n in counts.items() if n)
    said = _("%(reports)d report(s) to triage · %(n)d intervention(s)") % {
        "reports": reports,
        "n": len(rows),
    }
    return said + (f" ({by_state})" if by_state else "")


def selected_ids(rows: object, limit: int = SELECTION_MAX) -> list[int]:
    """Return the ids of a grid's selected rows (those of another shape are left out)."""
    if not isinstance(rows, list):
        return []
    out: list[int] = []
    for row in rows[:limit]:
        value = row.get("id") if isinstance(row, dict) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            out.append(value)
    return list(dict.fromkeys(out))


# --- details ---------------------------------------------------------------------------------


def state_times(item: Intervention, now: datetime) -> list[dict[str, str]]:
    """Return each state reached, when, and how long it lasted (the current one: so far)."""
    reached = sorted(
        ((State(s), _aware(t)) for s, t in item.times.items() if t is not None),
        key=lambda st: (st[1], list(State).index(st[0])),
    )
    out = []
    for i, (state, at) in enumerate(reached):
        if i + 1 < len(reached):
            lasted = duration_text((reached[i + 1][1] - at).total_seconds())
        elif item.open:
            lasted = _("%(duration)s (ongoing)") % {
                "duration": duration_text((_aware(now) - at).total_seconds())
            }
        else:
            lasted = ""
        out.append({"state": _(STATE_LABELS[state]), "at": local_time(at), "lasted": lasted})
    return out


def history_rows(events: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """Return an intervention's history as lines: when, who, from where, what, text."""
    out = []
    for e in events:
        state = e.get("state")
        kind = e["kind"]
        what = _(EVENT_LABELS[kind]) if kind in EVENT_LABELS else kind
        if state:
            what += f" → {state_label(state)}"
        out.append(
            {
                "ts": local_time(e["ts"], seconds=True),
                "actor": str(e["actor"]),
                "via": _(VIA_LABELS[e["via"]]) if e["via"] in VIA_LABELS else e["via"],
                "what": what,
                "text": e.get("text") or "",
            }
        )
    return out


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], cls: str) -> html.Table:
    """Return a small HTML table."""
    return html.Table(
        [
            html.Thead(html.Tr([html.Th(h) for h in header])),
            html.Tbody([html.Tr([html.Td(c) for c in row]) for row in rows]),
        ],
        className=cls,
    )


def intervention_detail(
    item: Intervention,
    now: datetime,
    commune_names: Mapping[str, str],
    alarm_states: Mapping[str, str],
    reports: Sequence[Mapping[str, Any]],
) -> html.Div:
    """Show one intervention: its state and team, times per state, links and history."""
    commune = commune_names.get(item.commune, item.commune)
    origin = _(ORIGIN_LABELS[item.origin]) if item.origin in ORIGIN_LABELS else item.origin
    head = _(
        "%(state)s · P%(priority)s · %(commune)s · %(domain)s · team %(team)s · origin %(origin)s"
    ) % {
        "state": _(STATE_LABELS[item.state]),
        "priority": item.priority,
        "commune": commune,
        "domain": domain_label(item.domain),
        "team": item.team or "—",
        "origin": origin,
    }
    parts: list[Any] = [
        html.H4(
            _("Intervention no. %(id)s — %(title)s") % {"id": item.id, "title": item.title},
            id="iv-detail-title",
        ),
        html.Div(head, id="iv-detail-head"),
    ]
    if item.merged_into is not None:
        parts.append(
            html.Div(
                _("Merged into intervention no. %(id)s.") % {"id": item.merged_into},
                className="iv-note",
            )
        )
    if item.lat is not None and item.lon is not None:
        parts.append(html.Div(_("Place: %(place)s") % {"place": f"{item.lat:.5f}, {item.lon:.5f}"}))
    parts.append(html.Div(_("Assets: %(assets)s") % {"assets": ", ".join(item.assets) or "—"}))
    times = state_times(item, now)
    parts += [
        html.H5(_("Time per state")),
        _table(
            [_("state"), _("reached on"), _("duration")],
            [[t["state"], t["at"], t["lasted"]] for t in times],
            "iv-table",
        ),
        html.H5(_("Linked alarms (%(n)d)") % {"n": len(item.alarms)}),
        html.Ul(
            [html.Li(f"{a} · {alarm_states.get(a, '—')}") for a in item.alarms]
            or [html.Li(_("no alarms"))],
            id="iv-detail-alarms",
        ),
        html.H5(_("Linked reports (%(n)d)") % {"n": len(reports)}),
        html.Ul(
            [
                html.Li(
                    _("No. %(id)s") % {"id": r["id"]} + f" · {category_label(r['category'])} · "
                    f"{report_state(r['state'])} · {r['text'][:140]}"
                )
                for r in reports
            ]
            or [html.Li(_("no reports"))],
            id="iv-detail-reports",
        ),
        html.H5(_("History")),
        _table(
            [_("when"), _("who"), _("from"), _("what"), _("text")],
            [
                [h["ts"], h["actor"], h["via"], h["what"], h["text"]]
                for h in history_rows(item.events)
            ],
            "iv-table iv-history",
        ),
    ]
    return html.Div(parts, className="iv-detail", id=f"iv-detail-{item.id}")


def report_detail(
    report: Mapping[str, Any],
    commune_names: Mapping[str, str],
    duplicate_intervention: int | None,
    *,
    contacts: bool = False,
) -> html.Div:
    """Show a report waiting for triage: what was written, where, what it matches."""
    # For the roles that may see it, a button shows the author's address (never built here).
    found = matches_of(report["matches"])
    commune = commune_names.get(report["commune"], report["commune"])
    place = report["address"] or f"{report['lat']:.5f}, {report['lon']:.5f}"
    parts: list[Any] = [
        html.H4(
            _("Report no. %(id)s — %(category)s")
            % {"id": report["id"], "category": category_label(report["category"])}
        ),
        html.Div(
            _("Received on %(when)s · %(commune)s · %(place)s")
            % {"when": local_time(report["created"]), "commune": commune, "place": place}
        ),
        html.Blockquote(report["text"], className="iv-report-text"),
        html.Div(
            _("Nearby assets: %(assets)s")
            % {"assets": ", ".join(found["assets"]) or _("no assets")},
            id="iv-report-assets",
        ),
        html.Div(
            _("Active alarms nearby: %(alarms)s")
            % {"alarms": ", ".join(found["alarms"]) or _("no alarms")},
            id="iv-report-alarms",
        ),
    ]
    dup = report.get("duplicate_of")
    if dup is not None and not pd.isna(dup):
        if duplicate_intervention is None:
            hint = _("Probable duplicate of report no. %(id)s.") % {"id": int(dup)}
        else:
            hint = _(
                "Probable duplicate of report no. %(id)s,"
                " already joined to intervention no. %(iv)s."
            ) % {"id": int(dup), "iv": duplicate_intervention}
        parts.append(html.Div(hint, className="iv-note", id="iv-report-duplicate"))
    if contacts and report.get("wants_news"):
        parts.append(
            html.Div(
                className="iv-row",
                children=[
                    html.Button(_("Show the contact"), id="iv-contact-show", n_clicks=0),
                    html.Span(id="iv-contact", className="iv-contact"),
                ],
            )
        )
    elif contacts:
        parts.append(html.Div(_("The reporter left no address."), className="iv-hint"))
    return html.Div(parts, className="iv-report", id=f"iv-report-{report['id']}")


# --- messages --------------------------------------------------------------------------------

# The service says its refusals in the user's language but names a report's state by its code.
_REPORT_STATE = re.compile(r"\((new|linked|rejected|closed)\)")


def french_error(message: str) -> str:
    """Return a refusal of the interventions service as the page says it."""
    text = _REPORT_STATE.sub(lambda m: f"({report_state(m.group(1))})", message)
    return _("Refused: %(why)s") % {"why": text}
