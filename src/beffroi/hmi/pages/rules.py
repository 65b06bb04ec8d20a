"""Alarm rules page: limit rules as they apply now; supervisors change limits, audited."""

from __future__ import annotations

import logging
import math
from typing import Any
from zoneinfo import ZoneInfo

import dash
import dash_ag_grid as dag
from dash import Input, NoUpdate, Output, State, callback, dcc, html, no_update
from flask import abort

from beffroi.alerts.config import AlarmRuleConfig
from beffroi.alerts.rule_changes import LIMIT_FIELDS, RuleChangeError, limits_of
from beffroi.control.audit import record_command
from beffroi.core.limits import COMMENT_MAX, check_text
from beffroi.core.model import aware_utc
from beffroi.hmi.auth import current, ensure_may, ensure_sees, sees
from beffroi.hmi.components.grids import grid_options
from beffroi.hmi.context import get_context
from beffroi.hmi.figures import DISPLAY_TZ
from beffroi.i18n import N_, _, fmt_datetime, ngettext

dash.register_page(
    __name__,
    path="/rules",
    name="Rules",
    title=lambda: "Beffroi — " + _("Alarm rules"),
    order=5,
)

log = logging.getLogger(__name__)
# The limits as operators name them (the fields keep the rule's config keys).
LIMIT_LABELS = {
    "lolo": N_("low low"),
    "lo": N_("low"),
    "hi": N_("high"),
    "hihi": N_("high high"),
    "deadband": N_("deadband"),
}


def limit_label(field: str) -> str:
    """Return a limit's name in the user's language."""
    return _(LIMIT_LABELS[field]) if field in LIMIT_LABELS else field


def columns() -> list[dict[str, Any]]:
    """Return the grid's columns, headed in the user's language."""
    return [
        {"field": "rule", "headerName": _("Rule"), "pinned": "left", "checkboxSelection": True},
        {"field": "applies_to", "headerName": _("Applies to")},
        {"field": "severity", "headerName": _("Priority"), "width": 100},
        *({"field": k, "headerName": limit_label(k), "width": 110} for k in LIMIT_FIELDS),
        {"field": "changed", "headerName": _("Changed at runtime"), "flex": 1},
    ]


def _commune_of_rule(rule: AlarmRuleConfig) -> str | None:
    """Return the commune a tag rule is about; None for a class rule (the whole metropolis)."""
    return rule.tag.split("/", 1)[0] if rule.tag else None


def rule_rows() -> list[dict[str, Any]]:
    """Return the limit rules the user sees, with their limits as they apply now."""
    service = get_context().alarms
    if service is None:
        return []
    zone, rows = ZoneInfo(DISPLAY_TZ), []
    for rule, change in service.limit_rules():
        commune = _commune_of_rule(rule)
        if commune is not None and not sees(commune):
            continue
        changed = ""
        if change is not None:
            at = aware_utc(change["ts"])  # the journal keeps naive UTC
            changed = _("%(at)s by %(user)s: %(comment)s") % {
                "at": fmt_datetime(at, zone),
                "user": change["user"],
                "comment": change["comment"],
            }
        rows.append(
            {
                "rule": rule.name,
                "applies_to": rule.tag
                or _("every %(cls)s · %(signal)s")
                % {"cls": rule.asset_class, "signal": rule.signal},
                "severity": rule.severity,
                **limits_of(rule),
                "changed": changed,
            }
        )
    return rows


def layout(**_query: str) -> html.Div:
    """Render the rules page: the grid, and the form of new limits."""
    may = current().may("rules")
    return html.Div(
        className="rules-page",
        children=[
            html.H2(_("Alarm limit rules")),
            html.P(
                _(
                    "Limits as they apply now. Select a rule to change its limits: the change"
                    " applies at once, on current values, is kept for later starts and is"
                    " audited. A rule on a class of equipment holds in every commune: only"
                    " metropolis-wide supervisors change it."
                ),
                className="rules-hint",
            ),
            dag.AgGrid(
                id="rules-grid",
                rowData=rule_rows(),
                columnDefs=columns(),
                getRowId="params.data.rule",
                dashGridOptions=grid_options(rowSelection="single"),
                style={"height": "320px"},
            ),
            html.Div(
                className="rules-form",
                hidden=not may,
                children=[
                    *(
                        html.Label(
                            [
                                limit_label(k),
                                dcc.Input(id=f"rules-{k}", type="number", debounce=True),
                            ],
                            className="rules-limit",
                        )
                        for k in LIMIT_FIELDS
                    ),
                    dcc.Input(id="rules-comment", placeholder=_("Why (required)"), size="40"),
                    html.Button(_("Apply new limits"), id="rules-apply", n_clicks=0),
                ],
            ),
            html.Div(id="rules-feedback", className="rules-feedback"),
        ],
    )


@callback(
    *(Output(f"rules-{k}", "value") for k in LIMIT_FIELDS),
    Input("rules-grid", "selectedRows"),
    prevent_initial_call=True,
)
def fill_form(selected: list[dict[str, Any]] | None) -> tuple[float | NoUpdate | None, ...]:
    """Put the selected rule's limits in the form."""
    if not selected:
        return tuple(no_update for _ in LIMIT_FIELDS)
    return tuple(selected[0].get(k) for k in LIMIT_FIELDS)


@callback(
    Output("rules-feedback", "children"),
    Output("rules-grid", "rowData"),
    Input("rules-apply", "n_clicks"),
    State("rules-grid", "selectedRows"),
    *(State(f"rules-{k}", "value") for k in LIMIT_FIELDS),
    State("rules-comment", "value"),
    prevent_initial_call=True,
)
def apply(
    _n: int | None, selected: list[dict[str, Any]] | None, *values_and_comment: float | str | None
) -> tuple[str, list[dict[str, Any]] | NoUpdate]:
    """Change the selected rule's limits, as the logged-in supervisor, with a reason."""
    ensure_may("rules")
    *values, comment = values_and_comment
    if not selected:
        return _("Select a rule first."), no_update
    if not isinstance(comment, str) or not comment.strip():
        return _("A reason is required."), no_update
    try:
        check_text(comment, "reason", COMMENT_MAX)
    except ValueError:
        said = _("The reason: at most %(n)d characters, without control characters.")
        return said % {"n": COMMENT_MAX}, no_update
    hmi = get_context()
    service = hmi.alarms
    if service is None:
        return _("Alarms are not running in this gateway."), no_update
    rules = {r.name: r for r, _ in service.limit_rules()}
    rule = rules.get(selected[0].get("rule") or "")
    if rule is None:
        return _("No such limit rule."), no_update
    commune = _commune_of_rule(rule)
    if commune is None:
        if not current().everywhere:  # a class rule holds in every commune
            log.warning("user %s refused a metropolis-wide rule change", current().name)
            abort(403)
    else:
        ensure_sees(commune)
    user, reason = current().name, comment.strip()
    target = {rule.name: commune or "*"}
    detail: dict[str, Any] = {"source": "hmi", "comment": reason, "before": limits_of(rule)}
    try:
        limits = {k: _number(v) for k, v in zip(LIMIT_FIELDS, values, strict=True)}
        detail["after"] = limits
        tags = [a.tag for a in service.engine.alarms.values() if a.rule == rule.name]
        old, new, n = service.set_limits(rule.name, limits, user, reason, hmi.live.snapshot(tags))
    except RuleChangeError as exc:
        refused = {**detail, "reason": str(exc)}
        record_command(hmi.audit, user, "alarm.rule_change", target, "refused", **refused)
        return _("Refused: %(why)s") % {"why": exc}, no_update
    recorded = record_command(hmi.audit, user, "alarm.rule_change", target, **detail)
    log.info("%s changed %s: %s -> %s", user, rule.name, limits_of(old), limits_of(new))
    said = ngettext(
        "Limits of %(rule)s changed by %(user)s, on %(n)d alarm, judged on current values.",
        "Limits of %(rule)s changed by %(user)s, on %(n)d alarms, judged on current values.",
        n,
    ) % {"rule": rule.name, "user": user, "n": n}
    if not recorded:
        said += " " + _("The audit log cannot record it: tell the administrator.")
    return said, rule_rows()


def _number(v: Any) -> float | None:
    """Return a form's number, None when empty (that limit removed)."""
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        raise RuleChangeError(_("not a number: %(value)s") % {"value": repr(v)}) from None
    if not math.isfinite(f):
        raise RuleChangeError(_("limits are finite numbers"))
    return f
