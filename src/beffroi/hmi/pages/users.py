"""Users page: administrators add users, change roles, communes and language, reset passwords.

The gateway holds the users file while it runs (24/7), so this page is where users are managed
then; `beffroi user` does the same with the gateway stopped. A new password, role or communes,
or a removal, ends the user's sessions in every browser (the store does it with the change).
"""

from __future__ import annotations

import logging
from typing import Any

import dash
import dash_ag_grid as dag
from dash import Input, NoUpdate, Output, State, callback, dcc, html, no_update
from flask import abort

from beffroi.control.audit import record_command
from beffroi.hmi.auth import current, ensure_may
from beffroi.hmi.components.grids import grid_options
from beffroi.hmi.context import get_context
from beffroi.hmi.users import ALL, ROLE_LABELS, ROLES, User, UserError
from beffroi.i18n import DEFAULT_LOCALE, LOCALES, N_, _

dash.register_page(
    __name__, path="/users", name="Users", title=lambda: "Beffroi — " + _("Users"), order=7
)

log = logging.getLogger(__name__)
ACTIONS = {
    "users-add": "user.add",
    "users-update": "user.update",
    "users-passwd": "user.passwd",
    "users-remove": "user.remove",
}
# What the page says once an action is done.
DONE = {
    "user.add": N_("User %(name)s added by %(admin)s."),
    "user.update": N_("User %(name)s changed by %(admin)s."),
    "user.passwd": N_("Password of %(name)s set by %(admin)s."),
    "user.remove": N_("User %(name)s removed by %(admin)s."),
}


def columns() -> list[dict[str, Any]]:
    """Return the grid's columns, headed in the user's language."""
    return [
        {"field": "name", "headerName": _("Name"), "checkboxSelection": True},
        {"field": "role_label", "headerName": _("Role")},
        {"field": "communes", "headerName": _("Communes"), "flex": 1},
        {"field": "language_label", "headerName": _("Language")},
        {"field": "role", "hide": True},
        {"field": "language", "hide": True},
    ]


def _within(admin: User, communes: tuple[str, ...] | list[str]) -> bool:
    """Tell whether an administrator's scope covers these communes."""
    return admin.everywhere or (ALL not in communes and set(communes) <= set(admin.communes))


def user_rows() -> list[dict[str, Any]]:
    """Return the users the administrator's scope covers."""
    admin = current()
    return [
        {
            "name": u.name,
            "role": u.role,
            "role_label": _(ROLE_LABELS.get(u.role, u.role)),
            "communes": ", ".join(u.communes),
            "language": u.language,
            "language_label": LOCALES.get(u.language, u.language),
        }
        for u in get_context().users.all()
        if _within(admin, u.communes)
    ]


def layout(**_query: str) -> html.Div:
    """Render the users page (administrators only: others see why not)."""
    if not current().may("users"):
        return html.Div(_("Managing users needs the admin role."), className="users-page")
    hmi = get_context()
    admin = current()
    communes = [ALL] if admin.everywhere else []
    communes += [c for c in hmi.register.communes if admin.sees(c)]
    return html.Div(
        className="users-page",
        children=[
            html.H2(_("Users")),
            dag.AgGrid(
                id="users-grid",
                rowData=user_rows(),
                columnDefs=columns(),
                getRowId="params.data.name",
                dashGridOptions=grid_options(rowSelection="single"),
                style={"height": "300px"},
            ),
            html.Div(
                className="users-form",
                children=[
                    dcc.Input(id="users-name", placeholder=_("name")),
                    dcc.Dropdown(
                        id="users-role",
                        options=[{"label": _(ROLE_LABELS[r]), "value": r} for r in ROLES],
                        placeholder=_("role"),
                    ),
                    dcc.Dropdown(
                        id="users-communes",
                        options=[
                            {"label": _("whole metropolis") if c == ALL else c, "value": c}
                            for c in communes
                        ],
                        multi=True,
                        placeholder=_("communes"),
                    ),
                    dcc.Dropdown(
                        id="users-language",
                        # Each language under its own name, whatever the admin's language.
                        options=[{"label": n, "value": c} for c, n in LOCALES.items()],
                        value=DEFAULT_LOCALE,
                        clearable=False,
                    ),
                    dcc.Input(id="users-password", type="password", placeholder=_("new password")),
                    html.Button(_("Add"), id="users-add", n_clicks=0),
                    html.Button(
                        _("Change role, communes and language"), id="users-update", n_clicks=0
                    ),
                    html.Button(_("Set password"), id="users-passwd", n_clicks=0),
                    html.Button(_("Remove"), id="users-remove", n_clicks=0),
                ],
            ),
            html.Div(id="users-feedback", className="rules-feedback"),
        ],
    )


@callback(
    Output("users-name", "value"),
    Output("users-role", "value"),
    Output("users-communes", "value"),
    Output("users-language", "value"),
    Input("users-grid", "selectedRows"),
    prevent_initial_call=True,
)
def fill_form(
    selected: list[dict[str, Any]] | None,
) -> tuple[str | NoUpdate, str | NoUpdate, list[str] | NoUpdate, str | NoUpdate]:
    """Put the selected user in the form."""
    if not selected:
        return no_update, no_update, no_update, no_update
    row = selected[0]
    return (
        row["name"],
        row["role"],
        row["communes"].split(", "),
        row.get("language", DEFAULT_LOCALE),
    )


@callback(
    Output("users-feedback", "children"),
    Output("users-grid", "rowData"),
    Output("users-password", "value"),
    *(Input(button, "n_clicks") for button in ACTIONS),
    State("users-name", "value"),
    State("users-role", "value"),
    State("users-communes", "value"),
    State("users-password", "value"),
    State("users-language", "value"),
    prevent_initial_call=True,
)
def act(
    # The clicks of the ACTIONS buttons, in their order; which one was clicked is triggered_id.
    _add: int | None,
    _update: int | None,
    _passwd: int | None,
    _remove: int | None,
    name: str | None,
    role: str | None,
    communes: list[str] | None,
    password: str | None,
    language: str | None = None,
) -> tuple[str, list[dict[str, Any]] | NoUpdate, str | NoUpdate]:
    """Apply one change as the logged-in administrator, within their scope, audited."""
    ensure_may("users")
    button = dash.ctx.triggered_id
    action = ACTIONS.get(button)
    if action is None:
        abort(400)
    admin, name, communes = current(), (name or "").strip(), list(communes or [])
    language = language or DEFAULT_LOCALE
    if not name:
        return _("Give a user name."), no_update, no_update
    store = get_context().users
    existing = store.get(name)
    # Neither the user changed nor what they are given may reach past the admin's communes.
    if existing is not None and not _within(admin, existing.communes):
        abort(403)
    if action in ("user.add", "user.update") and not _within(admin, communes):
        abort(403)
    if name == admin.name and action in ("user.update", "user.remove"):
        said = _("Your own role and communes are changed by another administrator.")
        return said, no_update, ""
    detail: dict[str, Any] = {"source": "hmi"}
    try:
        if action == "user.add":
            store.add(name, password or "", role or "", communes, language)
            detail.update(role=role, communes=communes, language=language)
        elif action == "user.update":
            store.update(name, role or "", communes)
            store.set_language(name, language)
            detail.update(role=role, communes=communes, language=language)
        elif action == "user.passwd":
            store.set_password(name, password or "")
        else:
            store.remove(name)
    except UserError as exc:
        return _("Refused: %(why)s") % {"why": exc}, no_update, no_update
    scope = ",".join(communes or (existing.communes if existing else ()))
    recorded = record_command(get_context().audit, admin.name, action, {name: scope}, **detail)
    log.info("%s: %s %s", admin.name, action, name)
    said = _(DONE[action]) % {"name": name, "admin": admin.name}
    # The store ended the user's sessions with the change: say so, since it logs them out.
    if action in ("user.passwd", "user.remove") or (
        action == "user.update"
        and existing is not None
        and (existing.role, existing.communes) != (role, tuple(communes))
    ):
        said += " " + (
            _("You are logged out: log in again.") if name == admin.name else _("Logged out.")
        )
    if not recorded:
        said += " " + _("The audit log cannot record it: tell the administrator.")
    return said, user_rows(), ""
