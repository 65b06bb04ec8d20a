"""The standby's way to the active node: its users' commands and alarm actions, sent there.

A standby acts on nothing itself; what its HMI's users ask goes to the active node's token API
(the pair shares one token), which checks the user's rights in the shared users table, acts and
audits as if asked on its own HMI. The answer comes back to the user who asked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from beffroi.api import routes
from beffroi.api.client import GatewayClient, GatewayError, NoGateway
from beffroi.api.routes import Route
from beffroi.control.model import Actor, CommandResult
from beffroi.core.model import WriteStatus

ALARM_ROUTES = {
    "ack": routes.ALARMS_ACK,
    "shelve": routes.ALARMS_SHELVE,
    "unshelve": routes.ALARMS_UNSHELVE,
    "service": routes.ALARMS_SERVICE,
}


class ActiveNode:
    """A client of whichever node of the pair is active now."""

    def __init__(self, node: str, url_of: Callable[[], str], token: str):
        self.node, self.url_of, self.token = node, url_of, token
        self.forwarded = 0

    def send(self, route: Route, body: dict[str, Any]) -> Any:
        """Send a request to the active node; raise GatewayError saying why it did not go."""
        url = self.url_of()
        if not url:
            raise GatewayError("the active node of the pair is not known yet: try again shortly")
        try:
            answer = GatewayClient(url, self.token).json(route, body={**body, "via": self.node})
        except NoGateway:
            raise GatewayError(f"the active node ({url}) does not answer") from None
        self.forwarded += 1
        return answer

    def alarm(self, action: str, body: dict[str, Any]) -> Any:
        """Have the active node acknowledge, shelve, unshelve or take out of service."""
        return self.send(ALARM_ROUTES[action], body)

    async def command(self, actor: Actor, tag: str, raw: Any, reason: str) -> CommandResult:
        """Have the active node check, send and audit a command; return what became of it."""
        body = {"user": actor.name, "tag": tag, "value": raw, "reason": reason}
        try:
            got = await asyncio.to_thread(self.send, routes.CONTROL_COMMAND, body)
        except GatewayError as exc:
            return CommandResult(tag, raw, WriteStatus.REFUSED, str(exc), rule="standby")
        return CommandResult(
            tag,
            got.get("value"),
            WriteStatus(got["status"]),
            f"{got.get('detail', '')} (sent by the active node)",
            got.get("previous"),
            got.get("reported"),
            rule=got.get("rule", ""),
        )
