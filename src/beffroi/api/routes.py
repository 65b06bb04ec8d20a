"""Every route of the gateway's token API, declared once for the server and the client."""

from __future__ import annotations

from typing import Literal, NamedTuple


class Route(NamedTuple):
    """One endpoint: its HTTP method and path."""

    method: Literal["GET", "POST"]
    path: str


PREFIX = "/api/v1"

QUERY = Route("GET", f"{PREFIX}/query")
LATEST = Route("GET", f"{PREFIX}/latest")

ALARMS = Route("GET", f"{PREFIX}/alarms")
ALARMS_ACK = Route("POST", f"{PREFIX}/alarms/ack")
ALARMS_SHELVE = Route("POST", f"{PREFIX}/alarms/shelve")
ALARMS_UNSHELVE = Route("POST", f"{PREFIX}/alarms/unshelve")
ALARMS_SERVICE = Route("POST", f"{PREFIX}/alarms/service")
ALARMS_EVENTS = Route("GET", f"{PREFIX}/alarms/events")
ALARMS_STATS = Route("GET", f"{PREFIX}/alarms/stats")

AUDIT_VERIFY = Route("GET", f"{PREFIX}/audit/verify")
AUDIT_EXPORT = Route("GET", f"{PREFIX}/audit/export")

KPI_EXPORT = Route("GET", f"{PREFIX}/kpi/export")
KPI_COMPUTE = Route("POST", f"{PREFIX}/kpi/compute")
KPI_CHANGES = Route("GET", f"{PREFIX}/kpi/changes")
