"""Build the Dash app: the shell (title, navigation, live strip), the pages and /healthz."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import dash
from dash import Input, Output, callback, dcc, html
from dash.exceptions import UnsupportedRelativePath
from flask import Flask, Response, has_request_context, jsonify, request
from flask_login import current_user

from beffroi.alerts.service import AlarmService
from beffroi.api.http import MALFORMED, error
from beffroi.api.server import mount_api
from beffroi.control.audit import AuditLog
from beffroi.control.service import ControlService
from beffroi.core.live import LiveValues
from beffroi.core.privacy import PositionPolicy, PositionViewer
from beffroi.core.register import Register
from beffroi.core.seams import Historian
from beffroi.hmi.auth import LoginThrottle, install_auth, sees, session_secret
from beffroi.hmi.basemap import register_basemap
from beffroi.hmi.components.history_banner import history_banner
from beffroi.hmi.config import HmiSite
from beffroi.hmi.context import HmiContext, get_context, set_context
from beffroi.hmi.figures import DISPLAY_TZ
from beffroi.hmi.metrics import register_metrics
from beffroi.hmi.public import register_public
from beffroi.hmi.users import ROLE_LABELS, UserStore
from beffroi.i18n import LOCALES, N_, _, current_locale, fmt_number, fmt_time, ngettext
from beffroi.interventions.service import InterventionService
from beffroi.interventions.web import register_intervention_pages
from beffroi.inventory.service import Inventory
from beffroi.kpi.engine import KpiEngine

log = logging.getLogger(__name__)

HERE = Path(__file__).resolve().parent
PAGES_FOLDER = HERE / "pages"
ASSETS_FOLDER = HERE / "assets"
# The navigation: (label, path, id suffix), labels translated when the shell is drawn.
NAV = (
    (N_("Map"), "/", "map"),
    (N_("Synoptics"), "/synoptic", "synoptic"),
    (N_("Trends"), "/trends", "trends"),
    (N_("Alarms"), "/alarms", "alarms"),
    (N_("Interventions"), "/interventions", "interventions"),
    (N_("Rules"), "/rules", "rules"),
    (N_("KPIs"), "/kpis", "kpis"),
    (N_("Control"), "/control", "control"),
    (N_("Inventory"), "/inventory", "inventory"),
    (N_("Audit"), "/audit", "audit"),
    (N_("Users"), "/users", "users"),
    (N_("System"), "/system", "system"),
)


class BeffroiDash(dash.Dash):
    """The Dash app, whose pages declare the language they speak (`<html lang>`)."""

    def interpolate_index(self, *args: Any, **kwargs: Any) -> Any:
        """Render the index page with the request's language on its root element."""
        page = str(super().interpolate_index(*args, **kwargs))
        return page.replace("<html>", f'<html lang="{current_locale()}">', 1)


def _words() -> html.Div:
    """Carry the words the map's script draws itself, in the user's language."""
    words: dict[str, Any] = {
        "data-to-place": _("to be placed"),
        # The script puts the count in place of %(n)s.
        "data-assets": _("%(n)s assets:"),
    }
    return html.Div(id="shell-words", hidden=True, **words)


def _shell(cfg: HmiSite) -> html.Div:
    return html.Div(
        className="shell",
        children=[
            html.Header(
                className="shell-header",
                children=[
                    html.Div(
                        className="shell-brand",
                        children=[
                            html.Span("Beffroi", className="shell-title", id="shell-title"),
                            html.Span(cfg.metropolis.name, className="shell-metropolis"),
                        ],
                    ),
                    html.Nav(
                        className="shell-nav",
                        children=[
                            dcc.Link(_(label), href=href, id=f"shell-nav-{key}")
                            for label, href, key in NAV
                        ],
                    ),
                    dcc.Link(
                        id="shell-alarms", className="shell-alarms", href="/alarms", children=""
                    ),
                    html.Div(id="shell-strip", className="shell-strip", children="…"),
                    html.Div(id="shell-pair", className="shell-pair", children=""),
                    _user_badge(),
                ],
            ),
            history_banner(cfg),  # a demo's simulated past, said on every page
            dcc.Interval(id="shell-interval", interval=2000),
            _words(),
            html.Main(dash.page_container, className="shell-main"),
        ],
    )


def _user_badge() -> html.Div:
    """Show who is logged in, with their role and scope, their language and a logout link."""
    user = current_user.user if has_request_context() and current_user.is_authenticated else None
    if user is None:
        return html.Div(id="shell-user")
    scope = _("metropolis") if user.everywhere else ", ".join(user.communes)
    role = _(ROLE_LABELS.get(user.role, user.role))
    return html.Div(
        id="shell-user",
        className="shell-user",
        children=[
            html.Span(f"{user.name} · {role} · {scope}", id="shell-user-name"),
            _language_form(user.language),
            html.A(_("Log out"), href="/logout", id="shell-logout"),
        ],
    )


def _language_form(language: str) -> html.Form:
    """Offer the user the other interface languages (a plain form: the page reloads in it)."""
    return html.Form(
        id="shell-language",
        className="shell-language",
        method="post",
        action="/language",
        title=_("Interface language"),
        children=[
            html.Button(
                code.upper(),
                name="language",
                value=code,
                type="submit",
                id=f"shell-language-{code}",
                title=name,  # each language's own name, as every interface writes it
                disabled=code == language,
                className="shell-language-current" if code == language else "",
            )
            for code, name in LOCALES.items()
        ],
    )


def alarm_banner(rows: list[dict[str, Any]]) -> tuple[str, str]:
    """Summarise alarms needing action (count, per severity) and pick the banner's colour."""
    unack = [r for r in rows if r["state"] in ("unack_active", "unack_rtn")]
    active = [r for r in rows if r["state"] in ("unack_active", "ack_active")]
    if not rows:
        return _("No alarm"), "shell-alarms shell-alarms-none"
    worst = min((r["severity"] for r in unack), default=None)
    per = " ".join(
        f"P{p}:{sum(1 for r in unack if r['severity'] == p)}"
        for p in (1, 2, 3, 4)
        if any(r["severity"] == p for r in unack)
    )
    to_ack = _("%(n)s to acknowledge (%(per)s)") % {"n": fmt_number(len(unack)), "per": per or "—"}
    n_active = ngettext("%(n)s active", "%(n)s active", len(active)) % {
        "n": fmt_number(len(active))
    }
    text = f"{to_ack} · {n_active}"
    level = f"shell-alarms-p{worst}" if worst is not None else "shell-alarms-acked"
    return text, f"shell-alarms {level}"


def pair_badge(pair: dict[str, Any] | None) -> tuple[Any, str]:
    """Say which node of the pair this is and which one acts (nothing for a lone gateway)."""
    if pair is None:
        return "", "shell-pair"
    node = {"node": pair["node"]}
    if pair["role"] == "active":
        if pair.get("standby"):
            said = _("Node %(node)s · active · standby %(standby)s")
            return said % {**node, "standby": pair["standby"]}, "shell-pair"
        return _("Node %(node)s · active · NO STANDBY") % node, "shell-pair shell-pair-alone"
    holder = pair.get("holder") or "?"
    url = next((p["url"] for p in pair.get("peers", []) if p["node"] == holder), "")
    name = _("node %(node)s") % {"node": holder}
    link: Any = html.A(name, href=url) if url else name
    text = [
        _("Node %(node)s · standby · active: ") % node,
        link,
        _(" (commands go through it)"),
    ]
    return text, "shell-pair shell-pair-standby"


def live_strip_text(n_tags: int, last_update: str | None) -> str:
    """Format the header strip: live tag count and time of the newest value."""
    said = ngettext(
        "%(n)s live tag · last update %(when)s", "%(n)s live tags · last update %(when)s", n_tags
    )
    return said % {"n": fmt_number(n_tags), "when": last_update or _("never")}


def _register_shell_callbacks() -> None:
    zone = ZoneInfo(DISPLAY_TZ)

    @callback(Output("shell-strip", "children"), Input("shell-interval", "n_intervals"))
    def refresh_strip(_n: int | None) -> str:
        snapshot = get_context().live.snapshot()
        newest = max((s.ts for s in snapshot.values()), default=None)
        when = fmt_time(newest, zone, seconds=True) if newest else None
        return live_strip_text(len(snapshot), when)

    @callback(
        Output("shell-pair", "children"),
        Output("shell-pair", "className"),
        Input("shell-interval", "n_intervals"),
    )
    def refresh_pair(_n: int | None) -> tuple[Any, str]:
        pair = get_context().pair
        return pair_badge(pair() if pair is not None else None)

    @callback(
        Output("shell-alarms", "children"),
        Output("shell-alarms", "className"),
        Input("shell-interval", "n_intervals"),
    )
    def refresh_banner(_n: int | None) -> tuple[str, str]:
        service = get_context().alarms
        if service is None:
            return "", "shell-alarms"
        rows = [r for r in service.alarms() if sees(r["commune"])]
        return alarm_banner(rows)


def _refuse_malformed_callbacks(server: Flask, prefix: str) -> None:
    """Answer a callback request out of shape with 400 and one line, never 500.

    Callbacks trust the types their page's components send; a hand-built request (a number
    where a list was, JSON nested a thousand deep) makes them fail. That is the client's
    fault: it gets 400, and the log one line, not a traceback.
    """
    endpoint = prefix + "_dash-update-component"
    dispatch = server.view_functions[endpoint]

    def guarded(*args: Any, **kwargs: Any) -> Any:
        try:
            return dispatch(*args, **kwargs)
        except (ValueError, UnsupportedRelativePath, *MALFORMED) as exc:
            what = f"{type(exc).__name__}: {exc}"[:200]
            log.warning("malformed callback request from %s (%s)", request.remote_addr, what)
            return error(400, "malformed callback request")

    server.view_functions[endpoint] = guarded


def create_app(
    cfg: HmiSite,
    register: Register,
    live: LiveValues,
    historian: Historian,
    status: Callable[[], dict[str, Any]] | None = None,
    api_token: str | None = None,
    *,
    users: UserStore,
    alarms: AlarmService | None = None,
    kpi: KpiEngine | None = None,
    audit: AuditLog | None = None,
    control: ControlService | None = None,
    inventory: Inventory | None = None,
    pair: Callable[[], dict[str, Any]] | None = None,
    interventions: InterventionService | None = None,
) -> dash.Dash:
    """Build the HMI Dash app; every page and callback requires a logged-in user."""
    set_context(
        HmiContext(
            cfg,
            register,
            live,
            historian,
            users,
            status=status,
            alarms=alarms,
            audit=audit,
            control=control,
            inventory=inventory,
            pair=pair,
            interventions=interventions,
        )
    )
    app = BeffroiDash(
        "beffroi.hmi",
        use_pages=True,
        pages_folder=str(PAGES_FOLDER),
        assets_folder=str(ASSETS_FOLDER),
        title=f"Beffroi — {cfg.metropolis.name}",
        update_title=None,  # type: ignore[arg-type]  # dash types it str; None is documented
        suppress_callback_exceptions=True,
    )
    # A function: evaluated per page load, so the header names the logged-in user.
    app.layout = lambda: _shell(cfg)
    _register_shell_callbacks()
    server = app.server
    hmi_cfg = cfg.hmi
    install_auth(
        server,
        users,
        # Kept beside the users file; with the users in PostgreSQL, in the data folder (a pair
        # shares it through the environment instead: the runtime requires that).
        session_secret(
            hmi_cfg.session_secret_env,
            (cfg.data_dir() if users.shared else users.path.parent) / "session.secret",
        ),
        title=cfg.metropolis.name,
        session_hours=hmi_cfg.session_hours,
        session_idle_min=hmi_cfg.session_idle_min,
        throttle=LoginThrottle(
            attempts=hmi_cfg.login_attempts,
            address_attempts=hmi_cfg.login_address_attempts,
            delay_max_s=hmi_cfg.login_delay_max_s,
            window_s=hmi_cfg.login_window_s,
        ),
        audit=audit.record if audit is not None else None,
    )

    @server.route("/healthz")
    def healthz() -> Response | tuple[Response, int]:
        body: dict[str, Any] = {
            "status": "ok",
            "live_tags": len(live),
            "assets": len(register.assets),
        }
        if status is not None:
            try:
                body.update(status())
            except Exception as exc:
                log.exception("status callable failed")
                return jsonify({"status": "error", "error": str(exc)}), 503
        return jsonify(body)

    if api_token:
        mount_api(
            server,
            api_token,
            historian=historian,
            timezone=cfg.metropolis.timezone,
            alarms=alarms,
            kpi=kpi,
            audit=audit,
            inventory=inventory,
            # Commands on behalf of a user: what the standby of a pair sends the active node.
            control=control if pair is not None else None,
            users=users,
            positions=PositionViewer(
                PositionPolicy.from_config(cfg), cfg.privacy.api_role, register
            ),
            interventions=interventions,
        )
    register_basemap(server, cfg)  # before register_public: its catch-all 404s /public/*
    register_public(server, cfg, register, live, historian=historian)
    if interventions is not None:
        register_intervention_pages(server, interventions, live)
    if status is not None:
        register_metrics(server, status)
    _refuse_malformed_callbacks(server, app.config.requests_pathname_prefix)

    # Dash hands @callback registrations (pages and shell) to the first app that serves a
    # request; serve one now so this app owns them even if another app is built later.
    server.test_client().get(app.config.requests_pathname_prefix + "_dash-dependencies")
    log.info("HMI app built: %d pages, %d assets", len(dash.page_registry), len(register.assets))
    return app
