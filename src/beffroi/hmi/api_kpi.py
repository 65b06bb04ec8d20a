"""The gateway's KPI API, by token: exports streamed as CSV, recomputation, recorded changes.

`beffroi kpi export|compute|changes` use it while the running gateway holds the DuckDB files.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, request, stream_with_context

import beffroi
from beffroi.core.timeparse import parse_time
from beffroi.historian.base import Historian
from beffroi.hmi.api_http import TOKEN_REQUIRED, bearer_ok, error, json_response
from beffroi.hmi.config import HmiSite
from beffroi.kpi.export import ExportQuery, iter_csv

log = logging.getLogger(__name__)


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
    server: Flask, cfg: HmiSite, historian: Historian, token: str, kpi: Any = None
) -> None:
    """Add /api/v1/kpi routes, answering only requests bearing the token."""

    @server.get("/api/v1/kpi/export")
    def kpi_export() -> Response:
        if not bearer_ok(token):
            return error(401, TOKEN_REQUIRED)
        try:
            query = export_query(request.args)
        except ValueError as exc:
            return error(400, str(exc))
        chunks = iter_csv(historian, query, cfg.metropolis.timezone)
        headers = {"X-Beffroi-Version": beffroi.__version__}
        return Response(stream_with_context(chunks), mimetype="text/csv", headers=headers)

    @server.post("/api/v1/kpi/compute")
    def kpi_compute() -> Response:
        if not bearer_ok(token):
            return error(401, TOKEN_REQUIRED)
        if kpi is None:
            return error(409, "KPIs are not enabled in this gateway ([kpi])")
        body = request.get_json(silent=True) or {}
        try:
            start, end = parse_time(str(body["from"])), parse_time(str(body["to"]))
        except (KeyError, ValueError) as exc:
            return error(400, f"give from and to as ISO 8601 times ({exc})")
        log.info("KPI recomputation requested through the API: %s → %s", start, end)
        return json_response(kpi.recompute(start, end))

    @server.get("/api/v1/kpi/changes")
    def kpi_changes() -> Response:
        if not bearer_ok(token):
            return error(401, TOKEN_REQUIRED)
        if kpi is None:
            return error(409, "KPIs are not enabled in this gateway ([kpi])")
        try:
            start = parse_time(request.args.get("from", "-30d"))
            end = parse_time(request.args.get("to", "now"))
        except ValueError as exc:
            return error(400, str(exc))
        df = kpi.store.changes(start, end)
        df = df.astype(object).where(df.notna(), None)
        return json_response({"changes": df.to_dict(orient="records")})
