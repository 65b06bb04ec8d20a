"""The KPI routes: exports streamed as CSV, recomputation, recorded changes.

`beffroi kpi export|compute|changes` use them while the running gateway holds the DuckDB files.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, request, stream_with_context

import beffroi
from beffroi.api import routes
from beffroi.api.http import add_route, error, json_response
from beffroi.core.seams import Historian
from beffroi.core.timeparse import parse_time
from beffroi.kpi.engine import KpiEngine
from beffroi.kpi.export import ExportQuery, iter_csv
from beffroi.kpi.periods import resolution_of

log = logging.getLogger(__name__)

NOT_ENABLED = "KPIs are not enabled in this gateway ([kpi])"


def export_query(args: Any) -> ExportQuery:
    """Build an export query from request arguments (times ISO 8601 or relative)."""
    resolution = resolution_of(args.get("resolution", "day"))
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
    server: Flask, historian: Historian, token: str, timezone: str, kpi: KpiEngine | None = None
) -> None:
    """Add the KPI routes, answering only requests bearing the token."""

    def export() -> Response:
        query = export_query(request.args)
        chunks = iter_csv(historian, query, timezone)
        headers = {"X-Beffroi-Version": beffroi.__version__}
        return Response(stream_with_context(chunks), mimetype="text/csv", headers=headers)

    def compute() -> Response:
        if kpi is None:
            return error(409, NOT_ENABLED)
        body = request.get_json(silent=True) or {}
        try:
            start, end = parse_time(str(body["from"])), parse_time(str(body["to"]))
        except (KeyError, ValueError) as exc:
            raise ValueError(f"give from and to as ISO 8601 times ({exc})") from None
        log.info("KPI recomputation requested through the API: %s → %s", start, end)
        return json_response(kpi.recompute(start, end))

    def changes() -> Response:
        if kpi is None:
            return error(409, NOT_ENABLED)
        start = parse_time(request.args.get("from", "-30d"))
        end = parse_time(request.args.get("to", "now"))
        df = kpi.store.changes(start, end)
        df = df.astype(object).where(df.notna(), None)
        return json_response({"changes": df.to_dict(orient="records")})

    add_route(server, routes.KPI_EXPORT, token, export)
    add_route(server, routes.KPI_COMPUTE, token, compute)
    add_route(server, routes.KPI_CHANGES, token, changes)
