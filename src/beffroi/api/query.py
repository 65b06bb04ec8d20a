"""The historian's routes: stored values and latest values, for `beffroi query` and exports."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from flask import Flask, Response, request

from beffroi.api import routes
from beffroi.api.http import add_route, json_response
from beffroi.core.seams import Historian
from beffroi.core.timeparse import parse_every, parse_time

MAX_TAGS = 500


def records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Return rows as JSON objects; raw rows keep the status code the equipment gave."""
    columns = [c for c in ("ts", "tag", "value", "quality", "status") if c in df.columns]
    rows = []
    for values in df[columns].itertuples(index=False):
        row = dict(zip(columns, values, strict=True))
        row["ts"] = row["ts"].isoformat()
        if isinstance(row["value"], float) and math.isnan(row["value"]):
            row["value"] = None
        row["quality"] = int(row["quality"])
        if "status" in row:
            row["status"] = int(row["status"])
        rows.append(row)
    return rows


def register_query_api(server: Flask, historian: Historian, token: str) -> None:
    """Add the query and latest routes, answering only requests bearing the token."""

    def query() -> Response:
        tags = request.args.getlist("tag")
        if not tags or len(tags) > MAX_TAGS:
            raise ValueError(f"give between 1 and {MAX_TAGS} tag parameters")
        start = parse_time(request.args.get("start", "-1h"))
        end = parse_time(request.args.get("end", "now"))
        every = request.args.get("every")
        width = parse_every(every) if every else None
        max_points = request.args.get("max_points", type=int)
        agg: Any = request.args.get("agg")  # checked by the historian against AGGREGATES
        df = historian.query(tags, start, end, every=width, agg=agg, max_points=max_points)
        return json_response({"backend": historian.name, "rows": records(df)})

    def latest() -> Response:
        tags = request.args.getlist("tag") or None
        return json_response({"backend": historian.name, "rows": records(historian.latest(tags))})

    add_route(server, routes.QUERY, token, query)
    add_route(server, routes.LATEST, token, latest)
