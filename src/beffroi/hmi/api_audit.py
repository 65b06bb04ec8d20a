"""The gateway's audit API for `beffroi audit` while the gateway holds the file, by token."""

from __future__ import annotations

import hmac
import json
import logging
from typing import Any

from flask import Flask, Response, request

from beffroi.control.audit import to_csv
from beffroi.core.timeparse import parse_time

log = logging.getLogger(__name__)


def _error(status: int, message: str) -> Response:
    return Response(json.dumps({"error": message}), status, mimetype="application/json")


def register_audit_api(server: Flask, audit: Any, token: str, timezone: str) -> None:
    """Add /api/v1/audit/verify and /api/v1/audit/export, for requests bearing the token."""

    def authorised() -> bool:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    @server.get("/api/v1/audit/verify")
    def api_audit_verify() -> Response:
        if not authorised():
            return _error(401, "a valid bearer token is required")
        r = audit.verify()
        body = {
            "ok": r.ok,
            "count": r.count,
            "head": r.head,
            "broken_seq": r.broken_seq,
            "problem": r.problem,
        }
        return Response(json.dumps(body), 200, mimetype="application/json")

    @server.get("/api/v1/audit/export")
    def api_audit_export() -> Response:
        if not authorised():
            return _error(401, "a valid bearer token is required")
        try:
            start = parse_time(request.args.get("start", "-24h"))
            end = parse_time(request.args.get("end", "now"))
        except ValueError as exc:
            return _error(400, str(exc))
        return Response(to_csv(audit.frame(start, end), timezone), 200, mimetype="text/csv")
