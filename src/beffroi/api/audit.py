"""The audit routes, for `beffroi audit` while the gateway holds the file: verify, export."""

from __future__ import annotations

import dataclasses

from flask import Flask, Response, request

from beffroi.api import routes
from beffroi.api.http import add_route, json_response
from beffroi.control.audit import AuditLog, to_csv
from beffroi.core.timeparse import parse_time


def register_audit_api(server: Flask, audit: AuditLog, token: str, timezone: str) -> None:
    """Add the audit routes, for requests bearing the token."""

    def verify() -> Response:
        # The chain and the anchors, and the head anchored when all holds (as on the files).
        return json_response(dataclasses.asdict(audit.verify()))

    def export() -> Response:
        start = parse_time(request.args.get("start", "-24h"))
        end = parse_time(request.args.get("end", "now"))
        return Response(to_csv(audit.frame(start, end), timezone), 200, mimetype="text/csv")

    add_route(server, routes.AUDIT_VERIFY, token, verify)
    add_route(server, routes.AUDIT_EXPORT, token, export)
