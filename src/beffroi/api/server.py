"""The gateway's token API on the HMI's web server: every route, mounted at once.

Every route of `routes.py` answers in JSON (CSV for exports), whatever runs in this gateway: a
part that is not running answers 409 saying so, and any other path under the API's prefix 404,
never the HMI's page (the prefix needs no login, only the token).
"""

from __future__ import annotations

from collections.abc import Sequence

from flask import Flask, Response, request

from beffroi.alerts.service import AlarmService
from beffroi.api import routes
from beffroi.api.alarms import register_alarm_api
from beffroi.api.audit import register_audit_api
from beffroi.api.control import register_control_api
from beffroi.api.http import add_route, error
from beffroi.api.interventions import register_interventions_api
from beffroi.api.inventory import register_inventory_api
from beffroi.api.kpi import register_kpi_api
from beffroi.api.query import register_query_api
from beffroi.api.routes import Route
from beffroi.control.audit import AuditLog
from beffroi.control.service import ControlService
from beffroi.core.privacy import PositionViewer
from beffroi.core.seams import Historian
from beffroi.hmi.users import UserStore
from beffroi.interventions.service import InterventionService
from beffroi.inventory.service import Inventory
from beffroi.kpi.engine import KpiEngine


def mount_api(
    server: Flask,
    token: str,
    *,
    historian: Historian,
    timezone: str,
    alarms: AlarmService | None = None,
    kpi: KpiEngine | None = None,
    audit: AuditLog | None = None,
    inventory: Inventory | None = None,
    control: ControlService | None = None,
    users: UserStore | None = None,
    interventions: InterventionService | None = None,
    positions: PositionViewer | None = None,
) -> None:
    """Add every route, answering only requests bearing the token."""
    register_query_api(server, historian, token, positions)
    if alarms is not None:
        register_alarm_api(server, alarms, token, audit=audit)
    else:
        _not_running(server, token, routes.ALARM_ROUTES, "alarms are not running in this gateway")
    register_kpi_api(server, historian, token, timezone, kpi)
    if audit is not None:
        register_audit_api(server, audit, token, timezone)
    else:
        why = "the audit log is not open in this gateway ([control] is disabled)"
        _not_running(server, token, routes.AUDIT_ROUTES, why)
    if inventory is not None:
        register_inventory_api(server, inventory, token)
    else:
        why = "the inventory is not open in this gateway"
        _not_running(server, token, routes.INVENTORY_ROUTES, why)
    if control is not None and users is not None:
        register_control_api(server, control, users, token)
    else:
        why = "control is not running in this gateway ([control] is disabled)"
        _not_running(server, token, (routes.CONTROL_COMMAND,), why)
    if interventions is not None:
        register_interventions_api(server, interventions, token)
    else:
        why = "interventions are not enabled in this gateway ([interventions])"
        _not_running(server, token, (routes.INTERVENTIONS_KPIS,), why)
    server.add_url_rule(
        f"{routes.PREFIX}/<path:rest>", "api unknown", _unknown, methods=["GET", "POST"]
    )


def _not_running(server: Flask, token: str, group: Sequence[Route], why: str) -> None:
    """Answer a group's routes with 409 and why, when their part does not run."""
    for route in group:
        add_route(server, route, token, lambda: error(409, why))


def _unknown(rest: str) -> Response:
    """Answer a path under the prefix that no route serves (or not with this method)."""
    path = f"{routes.PREFIX}/{rest}"
    methods = sorted(r.method for r in routes.ALL if r.path == path and r.method != request.method)
    if methods:
        return error(405, f"{path} takes {' or '.join(methods)}")
    return error(404, f"no such route: {path}")
