"""The control route: a command sent on behalf of a user (the standby of a pair sends its own
users' commands here, to the node that acts). Checked, sent and audited as from the HMI."""

from __future__ import annotations

from collections.abc import Mapping

from flask import Flask, Response, request

from beffroi.api import routes
from beffroi.api.http import add_route, error, json_response
from beffroi.control.model import CommandResult
from beffroi.control.service import ControlService
from beffroi.core.limits import COMMENT_MAX, USER_NAME_MAX, check_text
from beffroi.hmi.users import UserStore

ERRORS: Mapping[type[Exception], int] = {ValueError: 400}
NODE_MAX = 64


def result_json(result: CommandResult) -> dict[str, object]:
    """Return what became of a command as JSON-ready data."""
    return {
        "tag": result.tag,
        "value": result.value,
        "status": result.status.value,
        "detail": result.detail,
        "previous": result.previous,
        "reported": result.reported,
        "rule": result.rule,
    }


def register_control_api(
    server: Flask, control: ControlService, users: UserStore, token: str
) -> None:
    """Add the command route: the user's rights are this gateway's record of them, not the
    caller's word; the command goes through every check an HMI command goes through."""

    def command() -> Response:
        body = request.get_json(silent=True)
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        name = check_text(body.get("user"), "user", USER_NAME_MAX)
        tag = check_text(body.get("tag"), "tag", 200)
        reason = check_text(body.get("reason") or "", "reason", COMMENT_MAX)
        # Set by the standby of a pair that sent its user's command here: not sent on again.
        via = check_text(body.get("via") or "", "via", NODE_MAX)
        user = users.get(name)
        if user is None:
            return error(403, f"no enabled user {name!r}")
        result = control.command(user, tag, body.get("value"), reason, via=via)
        return json_response(result_json(result))

    add_route(server, routes.CONTROL_COMMAND, token, command, ERRORS)
