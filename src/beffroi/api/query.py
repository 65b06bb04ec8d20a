"""The historian's routes: stored values and latest values, for `beffroi query` and exports.

Staff positions (`core/privacy.py`) leave through here as the token API's role may see them:
snapped to the coarse grid unless `[privacy] api_role` is one whose work needs them exact.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
from flask import Flask, Response, request

from beffroi.api import routes
from beffroi.api.http import add_route, json_response
from beffroi.core.limits import POINTS_MAX, TAG_MAX, TAGS_PER_QUERY, check_count, check_text
from beffroi.core.privacy import PositionViewer
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


def _hidden_tags(df: pd.DataFrame, viewer: PositionViewer | None) -> set[str]:
    if viewer is None or df.empty:
        return set()
    return viewer.hidden(df["tag"].unique().tolist())


def coarse_positions(
    df: pd.DataFrame, viewer: PositionViewer | None, agg: str | None = None
) -> pd.DataFrame:
    """Return the rows as this reader may see staff positions: the newest one, coarse.

    A track of coarse positions still follows a person through the day (the map draws none for
    such a reader): of each hidden position tag only the newest row is kept, snapped to the
    grid. Aggregates of such tags are refused (ValueError): a mean, a sum or an integral gives
    the exact place back, and even a count per bucket says when the vehicle moved.
    """
    hidden = _hidden_tags(df, viewer)
    if not hidden or viewer is None:
        return df
    if agg is not None:
        raise ValueError(
            f"agg={agg}: not available for staff positions to this role ({sorted(hidden)[0]})"
        )
    policy = viewer.policy
    keep = ~df["tag"].isin(hidden)
    newest = df[~keep].sort_values("ts").groupby("tag", sort=False).tail(1).copy()
    newest["value"] = [
        policy.shown_value(tag.rsplit("/", 1)[1], v)
        for tag, v in zip(newest["tag"].tolist(), newest["value"].tolist(), strict=True)
    ]
    return pd.concat([df[keep], newest]).sort_index(kind="stable")  # the query's order


def register_query_api(
    server: Flask, historian: Historian, token: str, positions: PositionViewer | None = None
) -> None:
    """Add the query and latest routes, answering only requests bearing the token.

    `positions` is the token API's reader of staff positions (None: every value as stored).
    """

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
        df = coarse_positions(df, positions, agg)
        return json_response({"backend": historian.name, "rows": records(df)})

    def latest() -> Response:
        tags = tag_list(required=False) or None
        df = coarse_positions(historian.latest(tags), positions)
        return json_response({"backend": historian.name, "rows": records(df)})

    add_route(server, routes.QUERY, token, query)
    add_route(server, routes.LATEST, token, latest)
