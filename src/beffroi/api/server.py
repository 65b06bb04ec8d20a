"""The gateway's token API on the HMI's web server: every route group, mounted at once."""

from __future__ import annotations

from flask import Flask

from beffroi.alerts.service import AlarmService
from beffroi.api.alarms import register_alarm_api
from beffroi.api.audit import register_audit_api
from beffroi.api.kpi import register_kpi_api
from beffroi.api.query import register_query_api
from beffroi.control.audit import AuditLog
from beffroi.core.seams import Historian
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
) -> None:
    """Add the routes of the parts this gateway runs, answering only requests bearing the token."""
    register_query_api(server, historian, token)
    if alarms is not None:
        register_alarm_api(server, alarms, token, audit=audit)
    register_kpi_api(server, historian, token, timezone, kpi)
    if audit is not None:
        register_audit_api(server, audit, token, timezone)
