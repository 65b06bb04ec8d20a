"""The gateway's KPI API, by token: exports streamed as CSV, recomputation, recorded changes.

`beffroi kpi export|compute|changes` use it while the running gateway holds the DuckDB files.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
from datetime import datetime
from typing import Any

from flask import Flask, Response, request, stream_with_context

import beffroi
from beffroi.core.config import Config
from beffroi.core.timeparse import parse_time
from beffroi.historian.base import Historian
from beffroi.kpi.export import ExportQuery, iter_csv

log = logging.getLogger(__name__)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, default=_default), status, mimetype="application/json")


def _default(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, float) and math.isnan(v):
        return None
    return str(v)


def export_query(args: Any) -> ExportQuery:
    """Build an export query from request arguments (times ISO 8601 or relative)."""
    resolution = args.get("resolution", "day")
    if resolution not in ("hour", "day", "month"):
        raise ValueError(f"resolution must be hour, day or month, got {resolution!r}")
    start, end = parse_time(args.get("from", "-1d")), parse_time(args.get("to", "now"))
    if start >= end:
        raise ValueError("`from` must be before `to`")
    return ExportQuery(
        start,
        end,
        resolution,
        tuple(args.getlist("kpi")),
        tuple(args.getlist("commune")),
    )


def register_kpi_api(
    server: Flask, cfg: Config, historian: Historian, token: str, kpi: Any = None
) -> None:
    """Add /api/v1/kpi routes, answering only requests bearing the token."""

    def authorised() -> bool:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    @server.get("/api/v1/kpi/export")
    def kpi_export() -> Response:
        if not authorised():
            return _json({"error": "a valid bearer token is required"}, 401)
        try:
            query = export_query(request.args)
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        chunks = iter_csv(historian, query, cfg.metropolis.timezone)
        headers = {"X-Beffroi-Version": beffroi.__version__}
        return Response(stream_with_context(chunks), mimetype="text/csv", headers=headers)

    @server.post("/api/v1/kpi/compute")
    def kpi_compute() -> Response:
        if not authorised():
            return _json({"error": "a valid bearer token is required"}, 401)
        if kpi is None:
            return _json({"error": "KPIs are not enabled in this gateway ([kpi])"}, 409)
        body = request.get_json(silent=True) or {}
        try:
            start, end = parse_time(str(body["from"])), parse_time(str(body["to"]))
        except (KeyError, ValueError) as exc:
            return _json({"error": f"give from and to as ISO 8601 times ({exc})"}, 400)
        log.info("KPI recomputation requested through the API: %s → %s", start, end)
        return _json(kpi.recompute(start, end))

    @server.get("/api/v1/kpi/changes")
    def kpi_changes() -> Response:
        if not authorised():
            return _json({"error": "a valid bearer token is required"}, 401)
        if kpi is None:
            return _json({"error": "KPIs are not enabled in this gateway ([kpi])"}, 409)
        try:
            start = parse_time(request.args.get("from", "-30d"))
            end = parse_time(request.args.get("to", "now"))
        except ValueError as exc:
            return _json({"error": str(exc)}, 400)
        df = kpi.store.changes(start, end)
        df = df.astype(object).where(df.notna(), None)
        return _json({"changes": df.to_dict(orient="records")})
