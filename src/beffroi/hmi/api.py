"""The gateway's read-only HTTP API: historian queries for the CLI and exports, by token."""

from __future__ import annotations

import json
import logging
import math
import os
import secrets
from pathlib import Path

import pandas as pd
from flask import Flask, Response, request

from beffroi.core.timeparse import parse_every, parse_time
from beffroi.historian.base import Historian
from beffroi.hmi.api_http import TOKEN_REQUIRED, bearer_ok, error, json_response

log = logging.getLogger(__name__)

MAX_TAGS = 500


def _records(df: pd.DataFrame) -> list[dict]:
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


def register_api(server: Flask, historian: Historian, token: str) -> None:
    """Add /api/v1/query and /api/v1/latest, answering only requests bearing the token."""

    @server.get("/api/v1/query")
    def api_query() -> Response:
        if not bearer_ok(token):
            return error(401, TOKEN_REQUIRED)
        tags = request.args.getlist("tag")
        if not tags or len(tags) > MAX_TAGS:
            return error(400, f"give between 1 and {MAX_TAGS} tag parameters")
        try:
            start = parse_time(request.args.get("start", "-1h"))
            end = parse_time(request.args.get("end", "now"))
            every = request.args.get("every")
            width = parse_every(every) if every else None
            max_points = request.args.get("max_points", type=int)
            df = historian.query(
                tags, start, end, every=width, agg=request.args.get("agg"), max_points=max_points
            )
        except ValueError as exc:
            return error(400, str(exc))
        body = {"backend": historian.name, "rows": _records(df)}
        return json_response(body)

    @server.get("/api/v1/latest")
    def api_latest() -> Response:
        if not bearer_ok(token):
            return error(401, TOKEN_REQUIRED)
        tags = request.args.getlist("tag") or None
        body = {"backend": historian.name, "rows": _records(historian.latest(tags))}
        return json_response(body)


def new_token() -> str:
    """Return a fresh random API token."""
    return secrets.token_urlsafe(32)


def write_gateway_file(path: Path, url: str, token: str) -> None:
    """Record where the running gateway answers and its token, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token, "pid": os.getpid()}, f)
    os.replace(tmp, path)
