"""The gateway's alarm API: list, acknowledge, shelve; journal export and figures, by token."""

from __future__ import annotations

import hmac
import json
import logging
import math
from datetime import datetime
from typing import Any

from flask import Flask, Response, request

from beffroi.alerts.journal import to_csv
from beffroi.alerts.state import AlarmCommandError, AlarmEvent
from beffroi.core.timeparse import parse_time

log = logging.getLogger(__name__)


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, default=_default), status, mimetype="application/json")


def _default(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, float) and math.isnan(v):
        return None
    return str(v)


def event_json(ev: AlarmEvent) -> dict[str, Any]:
    """Return an event as JSON-ready data."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in ev.as_row().items()}


def _filters() -> dict[str, Any]:
    return {
        "communes": request.args.getlist("commune"),
        "domains": request.args.getlist("domain"),
        "states": request.args.getlist("state"),
    }


def register_alarm_api(server: Flask, alarms: Any, token: str) -> None:
    """Add /api/v1/alarms routes over the running AlarmService, for requests with the token."""

    def authorised() -> bool:
        given = request.headers.get("Authorization", "")
        return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())

    def command_body(*required: str) -> dict[str, Any]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        missing = [k for k in required if not body.get(k)]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        return body

    def guarded(handler):  # type: ignore[no-untyped-def]
        def wrapper() -> Response:
            if not authorised():
                return _json({"error": "a valid bearer token is required"}, 401)
            try:
                return handler()
            except AlarmCommandError as exc:
                return _json({"error": str(exc)}, 409)
            except ValueError as exc:
                return _json({"error": str(exc)}, 400)

        wrapper.__name__ = f"alarms_{handler.__name__}"
        return wrapper

    @guarded
    def listing() -> Response:
        include = request.args.get("all", "") in ("1", "true")
        return _json({"alarms": alarms.alarms(include_normal=include, **_filters())})

    @guarded
    def ack() -> Response:
        body = command_body("ids", "user")
        events = alarms.ack(list(body["ids"]), body["user"], body.get("comment", ""))
        return _json({"events": [event_json(e) for e in events]})

    @guarded
    def shelve() -> Response:
        body = command_body("id", "user")
        minutes = body.get("minutes")
        ev = alarms.shelve(
            body["id"],
            body["user"],
            body.get("comment", ""),
            None if minutes is None else float(minutes),
        )
        return _json({"events": [event_json(ev)]})

    @guarded
    def unshelve() -> Response:
        body = command_body("id", "user")
        ev = alarms.unshelve(body["id"], body["user"], body.get("comment", ""))
        return _json({"events": [event_json(ev)]})

    @guarded
    def service() -> Response:
        body = command_body("id", "user")
        out = bool(body.get("out", True))
        ev = alarms.set_out_of_service(body["id"], out, body["user"], body.get("comment", ""))
        return _json({"events": [event_json(ev)]})

    @guarded
    def events() -> Response:
        start = parse_time(request.args.get("start", "-24h"))
        end = parse_time(request.args.get("end", "now"))
        limit = request.args.get("limit", type=int)
        df = alarms.events(start=start, end=end, limit=limit, **_filters())
        if request.args.get("format") == "csv":
            tz = alarms.cfg.metropolis.timezone
            return Response(to_csv(df, tz), mimetype="text/csv")
        df = df.astype(object).where(df.notna(), None)  # NaN and NaT are not JSON
        return _json({"events": df.to_dict(orient="records")})

    @guarded
    def stats() -> Response:
        start = parse_time(request.args.get("start", "-24h"))
        end = parse_time(request.args.get("end", "now"))
        return _json(alarms.stats(start, end))

    server.add_url_rule("/api/v1/alarms", view_func=listing, methods=["GET"])
    server.add_url_rule("/api/v1/alarms/ack", view_func=ack, methods=["POST"])
    server.add_url_rule("/api/v1/alarms/shelve", view_func=shelve, methods=["POST"])
    server.add_url_rule("/api/v1/alarms/unshelve", view_func=unshelve, methods=["POST"])
    server.add_url_rule("/api/v1/alarms/service", view_func=service, methods=["POST"])
    server.add_url_rule("/api/v1/alarms/events", view_func=events, methods=["GET"])
    server.add_url_rule("/api/v1/alarms/stats", view_func=stats, methods=["GET"])
