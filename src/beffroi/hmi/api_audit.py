"""The gateway's audit API for `beffroi audit` while the gateway holds the file, by token."""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, request

from beffroi.control.audit import to_csv
from beffroi.core.timeparse import parse_time
from beffroi.hmi.api_http import TOKEN_REQUIRED, bearer_ok, error, json_response

log = logging.getLogger(__name__)


def register_audit_api(server: Flask, audit: Any, token: str, timezone: str) -> None:
    """Add /api/v1/audit/verify and /api/v1/audit/export, for requests bearing the token."""

    @server.get("/api/v1/audit/verify")
    def api_audit_verify() -> Response:
        if not bearer_ok(token):
            return error(401, TOKEN_REQUIRED)
        r = audit.verify()
        body = {
            "ok": r.ok,
            "count": r.count,
            "head": r.head,
            "broken_seq": r.broken_seq,
            "problem": r.problem,
        }
        return json_response(body)

    @server.get("/api/v1/audit/export")
    def api_audit_export() -> Response:
        if not bearer_ok(token):
            return error(401, TOKEN_REQUIRED)
        try:
            start = parse_time(request.args.get("start", "-24h"))
            end = parse_time(request.args.get("end", "now"))
        except ValueError as exc:
            return error(400, str(exc))
        return Response(to_csv(audit.frame(start, end), timezone), 200, mimetype="text/csv")
