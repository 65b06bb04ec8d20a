"""Every route of the gateway's token API, declared once for the server and the client."""

from __future__ import annotations

from typing import Literal, NamedTuple


class Route(NamedTuple):
    """One endpoint: its HTTP method, its path, and how long its answer may take to come."""

    method: Literal["GET", "POST"]
    path: str
    # Seconds the client waits for each read of the answer; long only where the work is.
    timeout_s: float = 60.0


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
AUDIT_EXPORT = Route("GET", f"{PREFIX}/audit/export", timeout_s=120.0)

# A year of KPIs: streamed as it is read, or recomputed before the answer.
KPI_EXPORT = Route("GET", f"{PREFIX}/kpi/export", timeout_s=600.0)
KPI_COMPUTE = Route("POST", f"{PREFIX}/kpi/compute", timeout_s=600.0)
KPI_CHANGES = Route("GET", f"{PREFIX}/kpi/changes")

# A file over the HTTP front's body limit is sent in parts (api/inventory.py), then imported
# in one go: the answer comes when the register, the store and the audit log hold it.
# A command sent on behalf of a user: the standby of a pair sends its users' commands here.
CONTROL_COMMAND = Route("POST", f"{PREFIX}/control/command", timeout_s=120.0)
# Intervention KPIs of a period, as the auditor's CSV.
INTERVENTIONS_KPIS = Route("GET", f"{PREFIX}/interventions/kpis", timeout_s=120.0)
INVENTORY_UPLOAD = Route("POST", f"{PREFIX}/inventory/upload")
INVENTORY_IMPORT = Route("POST", f"{PREFIX}/inventory/import", timeout_s=600.0)
INVENTORY_EXPORT = Route("GET", f"{PREFIX}/inventory/export", timeout_s=120.0)
INVENTORY_TO_PLACE = Route("GET", f"{PREFIX}/inventory/to-place")

ALARM_ROUTES = (
    ALARMS, ALARMS_ACK, ALARMS_SHELVE, ALARMS_UNSHELVE, ALARMS_SERVICE, ALARMS_EVENTS, ALARMS_STATS,
)  # fmt: skip
AUDIT_ROUTES = (AUDIT_VERIFY, AUDIT_EXPORT)
INVENTORY_ROUTES = (INVENTORY_UPLOAD, INVENTORY_IMPORT, INVENTORY_EXPORT, INVENTORY_TO_PLACE)
ALL = (QUERY, LATEST, *ALARM_ROUTES, *AUDIT_ROUTES, KPI_EXPORT, KPI_COMPUTE, KPI_CHANGES,
       *INVENTORY_ROUTES, CONTROL_COMMAND, INTERVENTIONS_KPIS)  # fmt: skip
