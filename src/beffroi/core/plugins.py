"""The plugin registry: config table names → implementations, imported only when used."""

from __future__ import annotations

import importlib
from typing import Any

# Registry key = config table name = module name (Telegraf's habit): [[collectors.opcua]] ↔
# collectors/opcua.py. Strings keep core free of imports from the rest of the project.
REGISTRY: dict[str, dict[str, str]] = {
    "collectors": {
        "opcua": "beffroi.collectors.opcua.collector:OpcUaCollector",
        "modbus": "beffroi.collectors.modbus.collector:ModbusCollector",
        "mqtt": "beffroi.collectors.mqtt.collector:MqttCollector",
    },
    "historian": {
        "duckdb": "beffroi.historian.duckdb.historian:DuckDBHistorian",
        "influx": "beffroi.historian.influx.historian:InfluxHistorian",
    },
    "write_path": {
        "buffer": "beffroi.historian.buffer:WriteBuffer",
        "spool": "beffroi.historian.spool:Spool",
        "compressor": "beffroi.historian.compression:Compressor",
    },
    "simulator": {"opcua": "beffroi.simulator.server:MetropolisSimulator"},
    "alerts": {
        "service": "beffroi.alerts.service:AlarmService",
        "journal": "beffroi.alerts.journal:Journal",
        "to_csv": "beffroi.alerts.journal:to_csv",
        "performance": "beffroi.alerts.performance:alarm_performance",
        "alarm": "beffroi.alerts.state:Alarm",
        "command_error": "beffroi.alerts.state:AlarmCommandError",
    },
    "kpi": {
        "engine": "beffroi.kpi.engine:KpiEngine",
        "store": "beffroi.kpi.store:KpiStore",
        "exporter": "beffroi.kpi.export:Exporter",
    },
    "control": {
        "service": "beffroi.control.service:ControlService",
        "audit": "beffroi.control.audit:AuditLog",
        "audit_csv": "beffroi.control.audit:to_csv",
        "record_command": "beffroi.control.audit:record_command",
    },
    "hmi": {
        "app": "beffroi.hmi.app:create_app",
        "server": "beffroi.hmi.server:HmiServer",
        "new_token": "beffroi.hmi.api:new_token",
        "users": "beffroi.hmi.users:UserStore",
        "reset_demo_users": "beffroi.hmi.users:reset_demo_users",
        "write_gateway_file": "beffroi.hmi.api:write_gateway_file",
    },
}


def load(kind: str, key: str) -> Any:
    """Import and return the implementation registered as `kind.key`."""
    try:
        target = REGISTRY[kind][key]
    except KeyError:
        known = ", ".join(sorted(REGISTRY.get(kind, {}))) or "none"
        raise KeyError(f"no {kind} plugin named {key!r} (known: {known})") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)
