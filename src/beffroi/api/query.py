"""The historian's routes: stored values and latest values, for `beffroi query` and exports."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from flask import Flask, Response, request

from beffroi.api import routes
from beffroi.api.http import add_route, json_response
from beffroi.core.limits import POINTS_MAX, TAG_MAX, TAGS_PER_QUERY, check_count, check_text
from beffroi.core.seams import Historian
from beffroi.core.timeparse import parse_every, parse_time


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

    def tag_list(required: bool) -> list[str]:
        tags = request.args.getlist("tag")
        if (required and not tags) or len(tags) > TAGS_PER_QUERY:
            raise ValueError(f"give between 1 and {TAGS_PER_QUERY} tag parameters")
        return [check_text(t, "tag", TAG_MAX) for t in tags]

    def query() -> Response:
        tags = tag_list(required=True)
        start = parse_time(request.args.get("start", "-1h"))
        end = parse_time(request.args.get("end", "now"))
        every = request.args.get("every")
        width = parse_every(every) if every else None
        given = request.args.get("max_points")
        max_points = None
        if given is not None:
            if not given.isdigit():
                raise ValueError(f"max_points: expected a whole number, got {given!r}")
            max_points = check_count(int(given), "max_points", 3, POINTS_MAX)
        agg: Any = request.args.get("agg")  # checked by the historian against AGGREGATES
        df = historian.query(tags, start, end, every=width, agg=agg, max_points=max_points)
        return json_response({"backend": historian.name, "rows": records(df)})

    def latest() -> Response:
        tags = tag_list(required=False) or None
        return json_response({"backend": historian.name, "rows": records(historian.latest(tags))})

    add_route(server, routes.QUERY, token, query)
    add_route(server, routes.LATEST, token, latest)
