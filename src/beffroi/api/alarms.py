"""The alarm routes: list, acknowledge, shelve (audited); journal export and figures."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from flask import Flask, Response, request

from beffroi.alerts.journal import to_csv
from beffroi.alerts.service import AlarmService
from beffroi.alerts.state import AlarmCommandError, AlarmEvent
from beffroi.api import routes
from beffroi.api.http import add_route, error, json_response
from beffroi.control.audit import AuditLog, record_command
from beffroi.core.limits import COMMENT_MAX, ROWS_MAX, USER_NAME_MAX, check_count, check_text
from beffroi.core.timeparse import parse_time

log = logging.getLogger(__name__)

# A command that does not apply to an alarm's state, or names no alarm, is a conflict.
ERRORS: Mapping[type[Exception], int] = {AlarmCommandError: 409, ValueError: 400}


def event_json(ev: AlarmEvent) -> dict[str, Any]:
    """Return an event as JSON-ready data."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in ev.as_row().items()}


ALARM_ID_MAX = 300  # `<tag>#<rule>`


def _int(text: str, what: str) -> int:
    """Return a query parameter as an integer, or raise saying it is not one."""
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"{what}: expected a whole number, got {text!r}") from None


def _filters() -> dict[str, Any]:
    return {
        "communes": request.args.getlist("commune"),
        "domains": request.args.getlist("domain"),
        "states": request.args.getlist("state"),
    }


def register_alarm_api(
    server: Flask, alarms: AlarmService, token: str, *, audit: AuditLog | None
) -> None:
    """Add the alarm routes over the running AlarmService, commands audited, by token."""

    def command_body(*required: str) -> dict[str, Any]:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        missing = [k for k in required if not body.get(k)]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        user = check_text(body["user"], "user", USER_NAME_MAX)
        comment = check_text(body.get("comment") or "", "comment", COMMENT_MAX)
        return {**body, "user": user, "comment": comment}

    def checked_id(value: object) -> str:
        return check_text(value, "alarm id", ALARM_ID_MAX)

    def listing() -> Response:
        include = request.args.get("all", "") in ("1", "true")
        return json_response({"alarms": alarms.alarms(include_normal=include, **_filters())})

    def record(
        body: dict[str, Any], action: str, ids: list[str], outcome: str, **detail: Any
    ) -> bool:
        # The user is the one the caller names: the token holder acts for the operator.
        targets = {alarm_id: alarms.commune_of(alarm_id) for alarm_id in ids}
        fields = {"source": "api", "comment": body["comment"], **detail}
        return record_command(audit, body["user"], action, targets, outcome, **fields)

    def audited(
        body: dict[str, Any],
        action: str,
        ids: list[str],
        apply: Callable[[], list[AlarmEvent]],
        **detail: Any,
    ) -> Response:
        """Apply a command and audit it per alarm, refused or done; answer with its events."""
        try:
            events = apply()
        except ValueError as exc:  # AlarmCommandError too: unknown alarm, state not applicable
            record(body, action, ids, "refused", reason=str(exc), **detail)
            raise  # refused whether or not that could be recorded: nothing was changed
        if not record(body, action, ids, "ok", **detail):
            return error(500, f"{action} done, but the audit log cannot record it")
        return json_response({"events": [event_json(e) for e in events]})

    def ack() -> Response:
        body = command_body("ids", "user")
        ids = body["ids"]
        if not isinstance(ids, list) or not 0 < len(ids) <= ROWS_MAX:
            raise ValueError(f"ids: expected a list of 1 to {ROWS_MAX} alarm ids")
        ids = [checked_id(i) for i in ids]
        return audited(
            body, "alarm.ack", ids, lambda: alarms.ack(ids, body["user"], body["comment"])
        )

    def shelve() -> Response:
        body = command_body("id", "user")
        shelved, minutes = checked_id(body["id"]), body.get("minutes")
        if minutes is not None and (
            isinstance(minutes, bool) or not isinstance(minutes, int | float)
        ):
            raise ValueError(f"minutes: expected a number, got {minutes!r}")

        def apply() -> list[AlarmEvent]:
            span = None if minutes is None else float(minutes)
            return [alarms.shelve(shelved, body["user"], body["comment"], span)]

        how_long = {"oneshot": True} if minutes is None else {"minutes": minutes}
        return audited(body, "alarm.shelve", [shelved], apply, **how_long)

    def unshelve() -> Response:
        body = command_body("id", "user")
        alarm_id = checked_id(body["id"])
        return audited(
            body,
            "alarm.unshelve",
            [alarm_id],
            lambda: [alarms.unshelve(alarm_id, body["user"], body["comment"])],
        )

    def service() -> Response:
        body = command_body("id", "user")
        alarm_id, out = checked_id(body["id"]), bool(body.get("out", True))
        return audited(
            body,
            "alarm.out_of_service" if out else "alarm.in_service",
            [alarm_id],
            lambda: [alarms.set_out_of_service(alarm_id, out, body["user"], body["comment"])],
        )

    def events() -> Response:
        start = parse_time(request.args.get("start", "-24h"))
        end = parse_time(request.args.get("end", "now"))
        given = request.args.get("limit")
        limit = None if given is None else check_count(_int(given, "limit"), "limit", 1, ROWS_MAX)
        df = alarms.events(start=start, end=end, limit=limit, **_filters())
        if request.args.get("format") == "csv":
            tz = alarms.cfg.metropolis.timezone
            return Response(to_csv(df, tz), mimetype="text/csv")
        df = df.astype(object).where(df.notna(), None)  # NaN and NaT are not JSON
        return json_response({"events": df.to_dict(orient="records")})

    def stats() -> Response:
        start = parse_time(request.args.get("start", "-24h"))
        end = parse_time(request.args.get("end", "now"))
        return json_response(alarms.stats(start, end))

    add_route(server, routes.ALARMS, token, listing, ERRORS)
    add_route(server, routes.ALARMS_ACK, token, ack, ERRORS)
    add_route(server, routes.ALARMS_SHELVE, token, shelve, ERRORS)
    add_route(server, routes.ALARMS_UNSHELVE, token, unshelve, ERRORS)
    add_route(server, routes.ALARMS_SERVICE, token, service, ERRORS)
    add_route(server, routes.ALARMS_EVENTS, token, events, ERRORS)
    add_route(server, routes.ALARMS_STATS, token, stats, ERRORS)
