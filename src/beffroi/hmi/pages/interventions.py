"""Interventions: residents' reports to triage, the work orders of the user's communes, and
what supervisors do with them (create, join, reject, merge, assign, move, note, field links);
a form opens one from an alarm, an asset, a place or by hand (prefilled from `?alarm=`,
`?asset=`, `?lat=&lon=`), and "My team" lists only the interventions of the user's teams.

Every change goes through `InterventionService`, which stores and audits it; this page checks
the user's role and communes first, against the store's records (never the browser's), and
sends the e-mails a change queued right after it (the duty job retries what fails).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from datetime import datetime
from typing import Any

import dash
import dash_ag_grid as dag
from dash import Input, NoUpdate, Output, State, callback, ctx, dcc, html, no_update
from dash.development.base_component import Component
from flask import abort

from beffroi.control.model import ControlError
from beffroi.core.limits import COMMENT_MAX, check_text
from beffroi.core.model import utcnow
from beffroi.hmi.auth import current, ensure_may, ensure_sees, sees
from beffroi.hmi.components.grids import grid_options
from beffroi.hmi.context import get_context
from beffroi.hmi.control_views import run_view
from beffroi.hmi.intervention_views import (
    ACCIDENT_PLAYBOOK,
    DOMAIN_LABELS,
    MOVE_TARGETS,
    PRIORITY_LABELS,
    alarm_option,
    alarm_title,
    coordinate,
    domain_label,
    domain_of,
    french_error,
    intervention_detail,
    local_time,
    may_act,
    priority_label,
    priority_of,
    report_detail,
    report_state,
    selected_ids,
    summary,
    teams_of,
    triage_data,
)
from beffroi.hmi.users import User
from beffroi.i18n import N_, _
from beffroi.interventions.model import STATE_LABELS, Intervention, Via
from beffroi.interventions.service import NOTE_MAX, InterventionError, InterventionService

dash.register_page(
    __name__,
    path="/interventions",
    name="Interventions",
    title=lambda: "Beffroi — " + _("Interventions"),
    order=4,
)

log = logging.getLogger(__name__)

REFRESH_MS = 5000
PLACE_MAX = 120  # what a playbook run keeps of its place (it goes on information panels)
TITLE_MAX = 200  # what the service keeps of a title
ASSET_ID_MAX = 200
PRIORITY_STYLE = {
    "styleConditions": [
        {
            "condition": "params.value == 1",
            "style": {"backgroundColor": "#d7263d", "color": "#fff"},
        },
        {
            "condition": "params.value == 2",
            "style": {"backgroundColor": "#f08a24", "color": "#fff"},
        },
        {"condition": "params.value == 3", "style": {"backgroundColor": "#f6c945"}},
    ]
}
GRID_COLUMNS: list[dict[str, Any]] = [
    {
        "field": "id",
        "headerName": N_("no."),
        "width": 95,
        "checkboxSelection": True,
        "headerCheckboxSelection": True,
    },
    {"field": "priority", "headerName": "P", "width": 65, "cellStyle": PRIORITY_STYLE},
    {"field": "state", "headerName": N_("state"), "width": 120},
    {"field": "title", "headerName": N_("title"), "flex": 1, "minWidth": 260},
    {"field": "commune", "headerName": N_("commune"), "width": 140},
    {"field": "domain", "headerName": N_("domain"), "width": 120},
    {"field": "team", "headerName": N_("team"), "width": 120},
    {"field": "created", "headerName": N_("created on"), "width": 150},
    {"field": "alarms", "headerName": N_("alarms"), "width": 95},
    {"field": "reports", "headerName": N_("reports"), "width": 120},
]
REPORT_COLUMNS: list[dict[str, Any]] = [
    {"field": "id", "headerName": N_("no."), "width": 80},
    {"field": "created", "headerName": N_("received on"), "width": 150},
    {"field": "category", "headerName": N_("category"), "width": 230},
    {"field": "commune", "headerName": N_("commune"), "width": 130},
    {"field": "address", "headerName": N_("address"), "width": 200},
    {"field": "text", "headerName": N_("description"), "flex": 1, "minWidth": 220},
    {"field": "assets", "headerName": N_("nearby assets"), "width": 170},
    {"field": "alarms", "headerName": N_("alarms"), "width": 90},
    {"field": "duplicate", "headerName": N_("duplicate of"), "width": 110},
]
DEFAULT_COL = {"sortable": True, "resizable": True, "filter": True}


def _columns(columns: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return a grid's columns with their headers in the user's language ("P" stays)."""
    return [
        {**c, "headerName": _(c["headerName"])} if c["headerName"] != "P" else c for c in columns
    ]


_Out = str | NoUpdate


# --- helpers ---------------------------------------------------------------------------------


def _service() -> InterventionService:
    """Return the interventions service (the page shows no forms when it is not running)."""
    service = get_context().interventions
    if service is None:
        raise dash.exceptions.PreventUpdate
    return service


def _acting() -> User:
    """Return the user if their role acts on interventions; refuse the request with 403 else."""
    user = current()
    if not may_act(user.role):
        log.warning("user %s (%s) refused a change of interventions", user.name, user.role)
        abort(403)
    return user


def _scope(user: User) -> list[str] | None:
    """Return the communes the store's queries keep (None: the whole metropolis)."""
    return None if user.everywhere else list(user.communes)


def _commune_names() -> dict[str, str]:
    """Return the communes' names by id."""
    return {c.id: c.name for c in get_context().register.communes.values()}


def _report(service: InterventionService, rows: object) -> dict[str, Any] | None:
    """Return the selected report as stored, after checking it is in the user's communes."""
    ids = selected_ids(rows, 1)
    report = service.store.report(ids[0]) if ids else None
    if report is not None:
        ensure_sees(report["commune"])  # the store's commune, not the browser's claim
    return report


def _items(service: InterventionService, ids: list[int]) -> tuple[list[Intervention], list[str]]:
    """Return the interventions named, each within the user's communes, and the refusals."""
    found, refused = [], []
    for iid in ids:
        try:
            item = service.get(iid)
        except InterventionError as exc:
            refused.append(french_error(str(exc)))
            continue
        ensure_sees(item.commune)
        found.append(item)
    return found, refused


def _deliver(service: InterventionService) -> None:
    """Send the e-mails a change queued (a team told of its work); the duty job retries."""
    try:
        service.deliver()
    except Exception:
        log.exception("interventions: e-mails not sent now; the duty job retries them")


def _stamp() -> str:
    """Return a fresh value for the stores that tell the grids a change was made here."""
    return utcnow().isoformat()


def _text(value: object, what: str, limit: int) -> str:
    """Return a form's text, stripped; raise ValueError in the user's language when out of
    bounds (`what`: a field `check_text` names, or a name already translated)."""
    if value is None:
        return ""
    try:
        return check_text(value, what, limit).strip()
    except ValueError as exc:
        raise ValueError(_("Refused: %(error)s.") % {"error": exc}) from None


def _alarm_views(service: InterventionService) -> list[dict[str, Any]]:
    """Return the alarms needing attention (the service's source, else the alarm service's)."""
    if service.alarms is not None:
        return service.alarms()
    hmi = get_context()
    return hmi.alarms.alarms() if hmi.alarms is not None else []


def _since(text: object) -> datetime:
    """Return when an alarm began, from its view (now when it does not say)."""
    if isinstance(text, str) and text:
        try:
            return datetime.fromisoformat(text)
        except ValueError:
            pass
    return utcnow()


def _my_communes(user: User) -> list[dict[str, str]]:
    """Return the communes a user may open interventions in, as a dropdown's options."""
    names = _commune_names()
    return [
        {"label": name, "value": cid}
        for cid, name in sorted(names.items(), key=lambda c: c[1])
        if user.sees(cid)
    ]


def _alarm_choices(service: InterventionService, user: User) -> list[dict[str, str]]:
    """Return the alarms needing attention in the user's communes, as the form offers them."""
    names = _commune_names()
    return [alarm_option(v, names) for v in _alarm_views(service) if user.sees(v["commune"])]


def _accident_playbook() -> bool:
    """Tell whether the accident playbook is configured and control runs."""
    hmi = get_context()
    return hmi.control is not None and any(
        p.name == ACCIDENT_PLAYBOOK for p in hmi.cfg.control.playbooks
    )


# --- layout ----------------------------------------------------------------------------------


def _triage_section(acts: bool, playbook: bool) -> html.Section:
    """Return the triage queue, the selected report and its actions."""
    actions = html.Div(
        className="iv-row",
        hidden=not acts,
        children=[
            html.Button(_("Create an intervention"), id="iv-create", n_clicks=0),
            dcc.Input(
                id="iv-join-id",
                type="number",
                min=1,
                step=1,
                placeholder=_("intervention no."),
                className="iv-number",
            ),
            html.Button(_("Join to"), id="iv-join", n_clicks=0),
            dcc.Input(
                id="iv-reject-why", placeholder=_("Reason for rejection"), className="iv-wide"
            ),
            html.Button(_("Reject"), id="iv-reject", n_clicks=0),
        ],
    )
    accident = html.Div(
        id="iv-accident",
        hidden=True,
        className="iv-accident",
        children=[
            html.Div(
                className="iv-row",
                children=[
                    dcc.Input(
                        id="iv-accident-place",
                        placeholder=_("Place (shown on the signs)"),
                        className="iv-wide",
                    ),
                    html.Button(_("Accident plan here…"), id="iv-accident-preview", n_clicks=0),
                    html.Button(
                        _("Start the accident plan"),
                        id="iv-accident-go",
                        n_clicks=0,
                        disabled=True,
                    ),
                    dcc.Link(_("Control page"), href="/control", className="iv-link"),
                ],
            ),
            html.Div(id="iv-accident-feedback", className="iv-feedback"),
            html.Div(id="iv-accident-run-feedback", className="iv-feedback"),
            html.Div(id="iv-accident-view"),
        ],
    )
    return html.Section(
        className="iv-triage",
        children=[
            html.H3(_("Reports to triage")),
            dag.AgGrid(
                id="iv-reports",
                rowData=[],
                columnDefs=_columns(REPORT_COLUMNS),
                getRowId="params.data.id + ''",
                dashGridOptions=grid_options(rowSelection="single", animateRows=False),
                defaultColDef=DEFAULT_COL,
                style={"height": "28vh"},
            ),
            html.Div(_("Select a report."), id="iv-report-detail", className="iv-detail-box"),
            actions,
            html.Div(id="iv-report-feedback", className="iv-feedback"),
            # Shown for accident reports to those who may run playbooks.
            html.Div(accident, hidden=not playbook),
        ],
    )


def _prefill(
    service: InterventionService, user: User, alarm: object, asset: object, lat: object, lon: object
) -> tuple[dict[str, Any], str]:
    """Return the form's first values from the page's address, and what it says of them."""
    communes = _my_communes(user)
    values: dict[str, Any] = {
        "title": "",
        "commune": communes[0]["value"] if len(communes) == 1 else None,
        "priority": 3,
        "domain": None,
        "alarm": None,
        "asset": "",
        "lat": None,
        "lon": None,
    }
    said = ""
    if isinstance(alarm, str) and alarm:
        views = _alarm_views(service)
        view = next((v for v in views if v["alarm_id"] == alarm and user.sees(v["commune"])), None)
        if view is None:
            return values, _("Alarm %(alarm)s no longer needs attention here.") % {
                "alarm": alarm[:ASSET_ID_MAX]
            }
        values.update(
            alarm=alarm,
            title=alarm_title(view)[:TITLE_MAX],
            commune=view["commune"],
            domain=view["domain"] or None,
            priority=min(4, max(1, int(view["severity"]))),
        )
        linked = service.store.open_for(alarm=alarm)
        if linked is not None:
            said = _("This alarm is already linked to intervention no. %(id)s.") % {"id": linked}
    elif isinstance(asset, str) and asset:
        found = get_context().register.assets.get(asset)
        if found is None or not user.sees(found.commune):
            return values, _("Unknown asset or outside your communes: %(asset)s.") % {
                "asset": asset[:ASSET_ID_MAX]
            }
        values.update(asset=found.id, commune=found.commune, domain=found.domain)
        linked = service.store.open_for(asset=found.id)
        if linked is not None:
            said = _("This asset already has intervention no. %(id)s under way.") % {"id": linked}
    elif lat is not None or lon is not None:
        try:
            values.update(lat=coordinate(lat, _("the latitude"), 90))
            values.update(lon=coordinate(lon, _("the longitude"), 180))
        except ValueError as exc:
            said = str(exc)
    return values, said


def _new_section(
    service: InterventionService, user: User, values: dict[str, Any], said: str, opened: bool
) -> html.Details:
    """Return the form that opens an intervention from an alarm, an asset, a place or by hand."""
    choices = _alarm_choices(service, user)
    priorities = [{"label": priority_label(p), "value": p} for p in PRIORITY_LABELS]
    domains = [{"label": domain_label(d), "value": d} for d in DOMAIN_LABELS]
    teams = [{"label": t, "value": t} for t in service.teams]
    return html.Details(
        id="iv-new",
        open=opened,
        className="iv-new",
        children=[
            html.Summary(_("New intervention")),
            html.Div(
                className="iv-row",
                children=[
                    dcc.Input(
                        id="iv-new-title",
                        value=values["title"],
                        placeholder=_("Title (empty: the alarm's)"),
                        maxLength=TITLE_MAX,
                        className="iv-wide",
                    ),
                    dcc.Dropdown(
                        id="iv-new-commune",
                        options=_my_communes(user),
                        value=values["commune"],
                        placeholder=_("Commune"),
                        className="iv-pick",
                    ),
                    dcc.Dropdown(
                        id="iv-new-priority",
                        options=priorities,
                        value=values["priority"],
                        clearable=False,
                        className="iv-pick",
                    ),
                    dcc.Dropdown(
                        id="iv-new-team",
                        options=teams,
                        placeholder=_("Team (optional)"),
                        className="iv-pick",
                    ),
                    dcc.Dropdown(
                        id="iv-new-domain",
                        options=domains,
                        value=values["domain"],
                        placeholder=_("Domain"),
                        className="iv-pick",
                    ),
                ],
            ),
            html.Div(
                className="iv-row",
                children=[
                    dcc.Dropdown(
                        id="iv-new-alarm",
                        options=choices,
                        value=values["alarm"],
                        placeholder=_("From an alarm to handle"),
                        className="iv-pick-wide",
                    ),
                    html.Span(_("or"), className="iv-or"),
                    dcc.Input(
                        id="iv-new-asset",
                        value=values["asset"],
                        placeholder=_("an asset (id)"),
                        maxLength=ASSET_ID_MAX,
                        className="iv-asset",
                    ),
                    html.Span(_("or a place"), className="iv-or"),
                    dcc.Input(
                        id="iv-new-lat",
                        type="number",
                        min=-90,
                        max=90,
                        step="any",
                        value=values["lat"],
                        placeholder=_("latitude"),
                        className="iv-coord",
                    ),
                    dcc.Input(
                        id="iv-new-lon",
                        type="number",
                        min=-180,
                        max=180,
                        step="any",
                        value=values["lon"],
                        placeholder=_("longitude"),
                        className="iv-coord",
                    ),
                    html.Button(_("Create the intervention"), id="iv-new-create", n_clicks=0),
                ],
            ),
            html.P(
                _(
                    "An alarm or an asset gives the commune, the domain and the place; otherwise,"
                    " choose the commune and the domain. With a team, the intervention is"
                    " assigned to it and the team told."
                ),
                className="iv-hint",
            ),
            html.Div(said, id="iv-new-feedback", className="iv-feedback"),
            dcc.Store(id="iv-new-alarms-seen", data=_digest(choices)),
        ],
    )


def _grid_section(acts: bool, service: InterventionService, mine: list[str]) -> html.Section:
    """Return the interventions grid, the actions on its selection and the detail panel."""
    teams = [{"label": t, "value": t} for t in service.teams]
    states = [{"label": _(STATE_LABELS[s]), "value": str(s)} for s in MOVE_TARGETS]
    actions = html.Div(
        hidden=not acts,
        children=[
            html.Div(
                className="iv-row",
                children=[
                    html.Button(_("Merge"), id="iv-merge", n_clicks=0),
                    dcc.Dropdown(
                        id="iv-team", options=teams, placeholder=_("Team"), className="iv-pick"
                    ),
                    html.Button(_("Assign to"), id="iv-assign", n_clicks=0),
                    dcc.Dropdown(
                        id="iv-state", options=states, placeholder=_("State"), className="iv-pick"
                    ),
                    html.Button(_("Change state"), id="iv-move", n_clicks=0),
                ],
            ),
            html.Div(
                className="iv-row",
                children=[
                    dcc.Textarea(
                        id="iv-note",
                        placeholder=_("Note (also attached to a change of state)"),
                        className="iv-note-input",
                    ),
                    html.Button(_("Add the note"), id="iv-add-note", n_clicks=0),
                ],
            ),
            html.Div(
                className="iv-row",
                children=[
                    html.Button(_("Field link"), id="iv-field-link", n_clicks=0),
                    html.Button(_("Revoke the links"), id="iv-revoke", n_clicks=0),
                    dcc.Input(
                        id="iv-link",
                        readOnly=True,
                        placeholder=_("The link to pass on to the team"),
                        className="iv-link-url",
                    ),
                    dcc.Clipboard(target_id="iv-link", title=_("Copy the link")),
                ],
            ),
        ],
    )
    return html.Section(
        className="iv-grid-section",
        children=[
            html.Div(
                className="iv-row",
                children=[
                    html.H3(_("Interventions")),
                    dcc.RadioItems(
                        id="iv-open-only",
                        options=[
                            {"label": _("Under way"), "value": "open"},
                            {"label": _("Open and closed"), "value": "all"},
                        ],
                        value="open",
                        inline=True,
                    ),
                    # Always there (the list's callback reads it), shown to teams' members.
                    html.Span(
                        dcc.Checklist(
                            id="iv-my-team",
                            options=[{"label": _("My team"), "value": "mine"}],
                            value=[],
                            inline=True,
                        ),
                        id="iv-my-team-box",
                        hidden=not mine,
                        title=_("Only the interventions of: %(teams)s")
                        % {"teams": ", ".join(mine)},
                        className="iv-switch",
                    ),
                ],
            ),
            dag.AgGrid(
                id="iv-grid",
                rowData=[],
                columnDefs=_columns(GRID_COLUMNS),
                getRowId="params.data.id + ''",
                dashGridOptions=grid_options(rowSelection="multiple", animateRows=False),
                defaultColDef=DEFAULT_COL,
                style={"height": "38vh"},
            ),
            actions,
            html.Div(id="iv-grid-feedback", className="iv-feedback"),
            html.Div(
                _("Select an intervention to see its detail."),
                id="iv-detail",
                className="iv-detail-box",
            ),
        ],
    )


def layout(
    alarm: object = None,
    asset: object = None,
    lat: object = None,
    lon: object = None,
    **_query: object,
) -> html.Div:
    """Render the new intervention form (prefilled from the address), triage queue and grid."""
    hmi = get_context()
    service = hmi.interventions
    if service is None:
        return html.Div(
            html.P(_("Interventions are not enabled in this gateway's configuration.")),
            className="iv-page",
        )
    user = current()
    acts = may_act(user.role)
    parts: list[Component] = [
        html.Div(
            className="iv-row",
            children=[
                html.H2(_("Interventions")),
                html.Span(id="iv-summary", className="iv-summary"),
            ],
        ),
    ]
    if not acts:
        parts.append(
            html.P(
                _(
                    "Read only: triaging and changing interventions is for operators,"
                    " supervisors and administrators."
                ),
                id="iv-read-only",
                className="iv-hint",
            )
        )
    else:
        values, said = _prefill(service, user, alarm, asset, lat, lon)
        given = any(isinstance(v, str) and v for v in (alarm, asset, lat, lon))
        parts.append(_new_section(service, user, values, said, given))
    parts += [
        _triage_section(acts, user.may("playbook") and _accident_playbook()),
        _grid_section(acts, service, teams_of(service.teams, user.name)),
        dcc.Store(id="iv-seen"),
        # Changes made from this page: the lists follow at once, not at the next tick.
        dcc.Store(id="iv-done-report"),
        dcc.Store(id="iv-done-grid"),
        dcc.Store(id="iv-done-new"),
        dcc.Store(id="iv-accident-run"),
        dcc.Interval(id="iv-interval", interval=REFRESH_MS),
    ]
    return html.Div(parts, className="iv-page")


# --- lists -----------------------------------------------------------------------------------


def _digest(rows: list[dict[str, Any]]) -> str:
    """Return a short fingerprint of a list's rows (sent again only when it moves)."""
    return hashlib.blake2b(json.dumps(rows).encode(), digest_size=12).hexdigest()


@callback(
    Output("iv-reports", "rowData"),
    Output("iv-grid", "rowData"),
    Output("iv-summary", "children"),
    Output("iv-seen", "data"),
    Input("iv-interval", "n_intervals"),
    Input("iv-open-only", "value"),
    Input("iv-my-team", "value"),
    Input("iv-done-report", "data"),
    Input("iv-done-grid", "data"),
    Input("iv-done-new", "data"),
    State("iv-seen", "data"),
)
def refresh(
    _n: int | None,
    which: str | None,
    my_team: list[str] | None,
    _done_report: str | None,
    _done_grid: str | None,
    _done_new: str | None,
    seen: dict[str, str] | None,
) -> tuple[Any, ...]:
    """List the reports to triage and the interventions of the user's communes (or teams)."""
    # Each list is sent again only when it changed: a refresh is then a few bytes.
    service = _service()
    user = current()
    mine = isinstance(my_team, list) and "mine" in my_team
    reports, grid = triage_data(
        service,
        _scope(user),
        _commune_names(),
        open_only=which != "all",
        teams=teams_of(service.teams, user.name) if mine else None,
    )
    keys = {"reports": _digest(reports), "grid": _digest(grid)}
    before = seen if isinstance(seen, dict) else {}
    return (
        reports if keys["reports"] != before.get("reports") else no_update,
        grid if keys["grid"] != before.get("grid") else no_update,
        summary(len(reports), grid),
        keys,
    )


# --- new intervention ------------------------------------------------------------------------


@callback(
    Output("iv-new-alarm", "options"),
    Output("iv-new-alarms-seen", "data"),
    Input("iv-interval", "n_intervals"),
    State("iv-new-alarms-seen", "data"),
    prevent_initial_call=True,
)
def alarm_choices(_n: int | None, seen: str | None) -> tuple[Any, Any]:
    """Follow the alarms needing attention in the form's list (sent only when they change)."""
    user = current()
    if not may_act(user.role):
        raise dash.exceptions.PreventUpdate
    choices = _alarm_choices(_service(), user)
    key = _digest(choices)
    return (no_update, no_update) if key == seen else (choices, key)


def _new_args(
    service: InterventionService,
    title: object,
    commune: object,
    priority: object,
    team: object,
    domain: object,
    alarm: object,
    asset: object,
    lat: object,
    lon: object,
) -> dict[str, Any]:
    """Return `create`'s arguments from the form (403 past the user's communes; else ValueError)."""
    y, x = coordinate(lat, _("the latitude"), 90), coordinate(lon, _("the longitude"), 180)
    alarm_id = _text(alarm, _("alarm"), ASSET_ID_MAX)
    asset_id = _text(asset, _("asset"), ASSET_ID_MAX)
    place = y is not None or x is not None
    if sum((bool(alarm_id), bool(asset_id), place)) > 1:
        raise ValueError(_("Give an alarm, an asset or a place: only one at a time."))
    if place and (y is None or x is None):
        raise ValueError(_("Give the place's latitude and longitude."))
    args: dict[str, Any] = {
        "title": _text(title, "title", TITLE_MAX),
        "priority": priority_of(priority),
        "team": team if isinstance(team, str) else "",
    }
    if alarm_id:
        view = next((v for v in _alarm_views(service) if v["alarm_id"] == alarm_id), None)
        if view is None:
            raise ValueError(
                _("Refused: alarm %(alarm)s no longer needs attention.") % {"alarm": alarm_id}
            )
        ensure_sees(view["commune"])  # the alarm's commune, not the form's
        linked = service.store.open_for(alarm=alarm_id)
        if linked is not None:
            raise ValueError(
                _("Refused: alarm %(alarm)s is already linked to intervention no. %(id)s.")
                % {"alarm": alarm_id, "id": linked}
            )
        args.update(
            title=args["title"] or alarm_title(view)[:TITLE_MAX],
            commune=view["commune"],
            domain=view["domain"] or "other",
            assets=[view["asset"]] if view["asset"] else [],
            alarms=[(alarm_id, _since(view["since"]))],
        )
    elif asset_id:
        found = get_context().register.assets.get(asset_id)
        if found is None:
            raise ValueError(_("Refused: unknown asset: %(asset)s") % {"asset": asset_id})
        ensure_sees(found.commune)
        args.update(
            commune=found.commune,
            domain=found.domain,
            assets=[found.id],
            lat=found.lat,
            lon=found.lon,
        )
    else:
        if not isinstance(commune, str) or not commune:
            raise ValueError(_("Choose a commune."))
        ensure_sees(commune)
        args.update(commune=commune, domain=domain_of(domain), lat=y, lon=x)
    return args


@callback(
    Output("iv-new-feedback", "children"),
    Output("iv-done-new", "data"),
    Output("iv-new-title", "value"),
    Output("iv-new-alarm", "value"),
    Output("iv-new-asset", "value"),
    Output("iv-new-lat", "value"),
    Output("iv-new-lon", "value"),
    Input("iv-new-create", "n_clicks"),
    State("iv-new-title", "value"),
    State("iv-new-commune", "value"),
    State("iv-new-priority", "value"),
    State("iv-new-team", "value"),
    State("iv-new-domain", "value"),
    State("iv-new-alarm", "value"),
    State("iv-new-asset", "value"),
    State("iv-new-lat", "value"),
    State("iv-new-lon", "value"),
    prevent_initial_call=True,
)
def open_new(
    _n: int | None,
    title: object,
    commune: object,
    priority: object,
    team: object,
    domain: object,
    alarm: object,
    asset: object,
    lat: object,
    lon: object,
) -> tuple[Any, ...]:
    """Open an intervention from the form as the logged-in user; say what was done."""
    user = _acting()
    service = _service()
    kept = (no_update,) * 6
    try:
        args = _new_args(service, title, commune, priority, team, domain, alarm, asset, lat, lon)
        already = service.store.open_for(asset=args["assets"][0]) if args.get("assets") else None
        iid = service.create(
            actor=user.name, via=Via.HMI, origin="operator", alarms_free=True, **args
        )
    except InterventionError as exc:
        return french_error(str(exc)), *kept
    except ValueError as exc:  # a form's value out of bounds, already said to the user
        return str(exc), *kept
    said = _("Intervention no. %(id)s created") % {"id": iid}
    if args["team"]:
        said += _(" and assigned to team %(team)s") % {"team": args["team"]}
    if args.get("alarms"):
        said += _(", linked to alarm %(alarm)s") % {"alarm": args["alarms"][0][0]}
    said += "."
    if already is not None:
        said += " " + _("The asset also has intervention no. %(id)s under way.") % {"id": already}
    log.info("%s: intervention %d opened from the page (%s)", user.name, iid, args["commune"])
    _deliver(service)
    return said, _stamp(), "", None, "", None, None


# --- triage ----------------------------------------------------------------------------------


@callback(
    Output("iv-report-detail", "children"),
    Output("iv-join-id", "value"),
    Output("iv-accident", "hidden"),
    Output("iv-accident-place", "value"),
    Input("iv-reports", "selectedRows"),
    Input("iv-done-report", "data"),
)
def show_report(selected: list[dict[str, Any]] | None, _done: str | None) -> tuple[Any, ...]:
    """Show the selected report, with a join suggested when it repeats a report already taken."""
    service = _service()
    report = _report(service, selected)
    if report is None:
        return _("Select a report."), None, True, ""
    accident = report["category"] == ACCIDENT_PLAYBOOK
    if report["state"] != "new":  # triaged here or elsewhere: its text and contact go away
        said = _("Report no. %(id)s %(state)s") % {
            "id": report["id"],
            "state": report_state(report["state"]),
        }
        if report["intervention"] is not None:
            said += " " + _("(intervention no. %(id)s)") % {"id": int(report["intervention"])}
        return said + ".", None, not accident, no_update
    dup_iv = None
    if report["duplicate_of"] is not None:
        first = service.store.report(int(report["duplicate_of"]))
        if first is not None and first["intervention"] is not None and sees(first["commune"]):
            dup_iv = int(first["intervention"])
    names = _commune_names()
    place = report["address"] or names.get(report["commune"], report["commune"])
    # The contact button comes with each report, so an address shown goes with its report.
    contacts = current().role in service.ic.contact_roles
    return (
        report_detail(report, names, dup_iv, contacts=contacts),
        dup_iv,
        not accident,
        place[:PLACE_MAX],
    )


@callback(
    Output("iv-report-feedback", "children"),
    Output("iv-done-report", "data"),
    Input("iv-create", "n_clicks"),
    Input("iv-join", "n_clicks"),
    Input("iv-reject", "n_clicks"),
    State("iv-reports", "selectedRows"),
    State("iv-join-id", "value"),
    State("iv-reject-why", "value"),
    prevent_initial_call=True,
)
def triage(
    _create: int | None,
    _join: int | None,
    _reject: int | None,
    selected: list[dict[str, Any]] | None,
    join_id: object,
    why: object,
) -> tuple[str, _Out]:
    """Make the selected report an intervention, join it to one, or reject it."""
    user = _acting()
    service = _service()
    report = _report(service, selected)
    if report is None:
        return _("Select a report first."), no_update
    rid, action = int(report["id"]), ctx.triggered_id
    try:
        if action == "iv-create":
            iid = service.report_to(rid, None, user.name)
            said = _("Intervention no. %(id)s created from report no. %(report)s.") % {
                "id": iid,
                "report": rid,
            }
        elif action == "iv-join":
            if isinstance(join_id, bool) or not isinstance(join_id, int) or join_id < 1:
                return _("Give the no. of the intervention to join the report to."), no_update
            items, refused = _items(service, [join_id])
            if not items:
                return refused[0], no_update
            iid = service.report_to(rid, items[0].id, user.name)
            said = _("Report no. %(report)s joined to intervention no. %(id)s.") % {
                "report": rid,
                "id": iid,
            }
        elif action == "iv-reject":
            reason = _text(why, "reason", COMMENT_MAX)
            service.reject_report(rid, user.name, reason)
            said = _("Report no. %(report)s rejected.") % {"report": rid}
        else:  # a request naming no button of this callback
            raise dash.exceptions.PreventUpdate
    except InterventionError as exc:
        return french_error(str(exc)), no_update
    except ValueError as exc:  # a form's text out of bounds, already said to the user
        return str(exc), no_update
    log.info("%s: %s", user.name, said)
    _deliver(service)
    return said, _stamp()


@callback(
    Output("iv-contact", "children"),
    Input("iv-contact-show", "n_clicks"),
    State("iv-reports", "selectedRows"),
    prevent_initial_call=True,
)
def show_contact(_n: int | None, selected: list[dict[str, Any]] | None) -> str:
    """Show the selected report's author address to the roles that need it (audited)."""
    user = current()
    service = _service()
    if user.role not in service.ic.contact_roles:
        log.warning("user %s (%s) refused a resident's contact", user.name, user.role)
        abort(403)
    report = _report(service, selected)
    if report is None:
        return _("Select a report first.")
    try:
        email = service.contact(int(report["id"]), user.role, user.name)
    except InterventionError as exc:
        return french_error(str(exc))
    return (
        _("Contact: %(email)s") % {"email": email} if email else _("The reporter left no address.")
    )


@callback(
    Output("iv-accident-run", "data"),
    Output("iv-accident-feedback", "children"),
    Output("iv-accident-go", "disabled"),
    Input("iv-accident-preview", "n_clicks"),
    State("iv-reports", "selectedRows"),
    State("iv-accident-place", "value"),
    prevent_initial_call=True,
)
def accident_preview(
    _n: int | None, selected: list[dict[str, Any]] | None, place: object
) -> tuple[dict[str, Any] | NoUpdate, Any, bool]:
    """Preview the accident playbook at the report's place, as the Control page does."""
    # The control service audits the preview; the supervisor checks it, then launches it.
    ensure_may("playbook")
    hmi = get_context()
    report = _report(_service(), selected)
    if report is None or report["category"] != ACCIDENT_PLAYBOOK:
        return no_update, _("Select an accident report first."), True
    if hmi.control is None or hmi.control.playbooks is None or not _accident_playbook():
        return no_update, _("The accident plan is not available on this gateway."), True
    try:
        where = _text(place, _("place"), PLACE_MAX)
        run = hmi.control.playbooks.preview(
            current(), ACCIDENT_PLAYBOOK, float(report["lat"]), float(report["lon"]), None, where
        )
    except ControlError as exc:
        return no_update, _("Refused: %(reason)s") % {"reason": exc.reason}, True
    except ValueError as exc:
        return no_update, str(exc), True
    n = sum(len(s.commands) for s in run.steps)
    mails = sum(1 for s in run.steps if s.action == "email")
    said = _(
        "Preview for report no. %(id)s: %(n)d command(s) and %(mails)d e-mail(s)."
        " Check them below, then start the plan."
    ) % {"id": report["id"], "n": n, "mails": mails}
    return {"run": run.id, "report": int(report["id"])}, said, False


@callback(
    Output("iv-accident-run-feedback", "children"),
    Input("iv-accident-go", "n_clicks"),
    State("iv-accident-run", "data"),
    State("iv-reports", "selectedRows"),
    prevent_initial_call=True,
)
def accident_run(
    _n: int | None, chosen: dict[str, Any] | None, selected: list[dict[str, Any]] | None
) -> Any:
    """Start the previewed accident playbook through the control service (audited there)."""
    ensure_may("playbook")
    hmi = get_context()
    report = _report(_service(), selected)
    chosen = chosen if isinstance(chosen, dict) else {}
    run_id = chosen.get("run")
    if report is None or not isinstance(run_id, str) or chosen.get("report") != report["id"]:
        return _("Preview the plan for this report first.")
    if hmi.control is None or hmi.control.playbooks is None:
        return _("Control is not running on this gateway.")
    run = hmi.control.playbooks.get(run_id)
    if run is None:
        return _("This preview no longer exists: preview again.")
    for commune in run.communes():
        ensure_sees(commune)
    try:
        hmi.control.start_run(current(), run.id)
    except ControlError as exc:
        return _("Refused: %(reason)s") % {"reason": exc.reason}
    log.info("%s started the accident playbook, run %s, report %s", run.user, run.id, report["id"])
    return [
        _("Accident plan started (run %(run)s): follow it below; rolling back is done from ")
        % {"run": run.id},
        dcc.Link(_("the Control page"), href="/control"),
        ".",
    ]


@callback(
    Output("iv-accident-view", "children"),
    Input("iv-interval", "n_intervals"),
    Input("iv-accident-run", "data"),
    Input("iv-accident-run-feedback", "children"),
    prevent_initial_call=True,
)
def accident_progress(_n: int | None, chosen: dict[str, Any] | None, _started: Any) -> Any:
    """Show the accident playbook's preview, then follow its run (steps and results)."""
    run_id = chosen.get("run") if isinstance(chosen, dict) else None
    hmi = get_context()
    if not isinstance(run_id, str) or hmi.control is None or hmi.control.playbooks is None:
        return no_update
    ensure_may("playbook")
    run = hmi.control.playbooks.get(run_id)
    if run is None:
        return no_update
    for commune in run.communes():
        ensure_sees(commune)
    return run_view(run.as_dict())


# --- interventions ---------------------------------------------------------------------------


@callback(
    Output("iv-grid-feedback", "children"),
    Output("iv-done-grid", "data"),
    Output("iv-link", "value"),
    Output("iv-note", "value"),
    Input("iv-merge", "n_clicks"),
    Input("iv-assign", "n_clicks"),
    Input("iv-move", "n_clicks"),
    Input("iv-add-note", "n_clicks"),
    Input("iv-field-link", "n_clicks"),
    Input("iv-revoke", "n_clicks"),
    State("iv-grid", "selectedRows"),
    State("iv-team", "value"),
    State("iv-state", "value"),
    State("iv-note", "value"),
    prevent_initial_call=True,
)
def act(
    _merge: int | None,
    _assign: int | None,
    _move: int | None,
    _note: int | None,
    _link: int | None,
    _revoke: int | None,
    selected: list[dict[str, Any]] | None,
    team: object,
    state: object,
    note: object,
) -> tuple[Any, _Out, _Out, _Out]:
    """Apply an action to the selected interventions as the logged-in user; say what was done."""
    user = _acting()
    service = _service()
    action = ctx.triggered_id
    items, refused = _items(service, selected_ids(selected))
    if not items and not refused:
        return (
            _("Select one or more interventions first."),
            no_update,
            no_update,
            no_update,
        )
    try:
        text = _text(note, "note", NOTE_MAX)
    except ValueError as exc:
        return str(exc), no_update, no_update, no_update
    link: _Out = no_update
    cleared: _Out = no_update
    done: list[int] = []

    def each(apply: Callable[[Intervention], object]) -> None:
        """Apply a change to every item, keeping the refusals of those it does not fit."""
        for item in items:
            try:
                apply(item)
            except InterventionError as exc:
                refused.append(french_error(str(exc)))
            else:
                done.append(item.id)

    if action == "iv-merge":
        try:
            keep = service.merge([i.id for i in items], user.name, Via.HMI)
        except InterventionError as exc:
            refused.append(french_error(str(exc)))
            said = ""
        else:
            done = [i.id for i in items]
            others = ", ".join(str(i.id) for i in items if i.id != keep)
            said = _("Interventions %(others)s merged into intervention no. %(id)s.") % {
                "others": others,
                "id": keep,
            }
    elif action == "iv-assign":
        if not isinstance(team, str) or team not in service.teams:
            return _("Choose a team."), no_update, no_update, no_update
        each(lambda i: service.assign(i.id, team, user.name, Via.HMI))
        said = (
            _("%(n)d intervention(s) assigned to team %(team)s.") % {"n": len(done), "team": team}
            if done
            else ""
        )
    elif action == "iv-move":
        target = next((s for s in MOVE_TARGETS if str(s) == state), None)
        if target is None:
            return _("Choose a state."), no_update, no_update, no_update
        each(lambda i: service.move(i.id, target, user.name, Via.HMI, text))
        said = (
            _("%(n)d intervention(s): %(state)s.")
            % {"n": len(done), "state": _(STATE_LABELS[target]).lower()}
            if done
            else ""
        )
        cleared = "" if done and text else no_update
    elif action == "iv-add-note":
        if not text:
            return _("Write the note first."), no_update, no_update, no_update
        each(lambda i: service.note(i.id, text, user.name, Via.HMI))
        said = _("Note added to %(n)d intervention(s).") % {"n": len(done)} if done else ""
        cleared = "" if done else no_update
    elif action == "iv-field-link":
        if len(items) != 1 or refused:
            return _("A field link is issued for one intervention only."), no_update, "", no_update
        try:
            issued = service.field_link(items[0].id, user.name)
        except InterventionError as exc:
            return french_error(str(exc)), no_update, "", no_update
        done = [items[0].id]
        link = service.field_url(issued)
        until = local_time(issued.expires)
        said = _(
            "Field link of intervention no. %(id)s, valid until %(until)s: "
            "copy it and pass it on to the team."
        ) % {"id": items[0].id, "until": until}
    elif action == "iv-revoke":
        revoked = 0

        def revoke(i: Intervention) -> None:
            """Revoke an intervention's field links, counting them."""
            nonlocal revoked
            revoked += service.revoke(i.id, user.name)

        each(revoke)
        said = _("%(n)d field link(s) revoked.") % {"n": revoked}
        link = ""
    else:  # a request naming no button of this callback
        raise dash.exceptions.PreventUpdate
    log.info("%s: %s on %s (refused: %d)", user.name, action, done, len(refused))
    if done:
        _deliver(service)
    message = " ".join([said, *dict.fromkeys(refused)]).strip()
    return message, _stamp() if done else no_update, link, cleared


@callback(
    Output("iv-detail", "children"),
    Input("iv-grid", "selectedRows"),
    Input("iv-done-grid", "data"),
    Input("iv-interval", "n_intervals"),
)
def detail(selected: list[dict[str, Any]] | None, _done: str | None, _n: int | None) -> Any:
    """Show one intervention: history, linked alarms and reports, times per state."""
    ids = selected_ids(selected)
    if len(ids) != 1:
        if ids:
            return _("%(n)d interventions selected.") % {"n": len(ids)}
        return _("Select an intervention to see its detail.")
    service = _service()
    items, refused = _items(service, ids)
    if not items:
        return refused[0] if refused else ""
    item = items[0]
    hmi = get_context()
    states: dict[str, str] = {}
    if hmi.alarms is not None and item.alarms:
        wanted = set(item.alarms)
        states = {
            a["alarm_id"]: a["state"]
            for a in hmi.alarms.alarms(include_normal=True)
            if a["alarm_id"] in wanted
        }
    reports = [r for r in (service.store.report(rid) for rid in item.reports) if r is not None]
    return intervention_detail(item, service.store.now(), _commune_names(), states, reports)
