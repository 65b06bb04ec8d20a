"""Where config chooses between real alternatives: collector protocols and historian back ends.

The key is the config's word (`[[collectors.<protocol>]]`, `[historian] backend`); everything
else of the gateway is imported where it is used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from beffroi.collectors.base import CollectorBase
from beffroi.collectors.modbus.collector import ModbusCollector
from beffroi.collectors.mqtt.collector import MqttCollector
from beffroi.collectors.opcua.collector import OpcUaCollector
from beffroi.historian.base import HistorianBackend
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.historian.influx.historian import InfluxHistorian

COLLECTORS: Mapping[str, type[CollectorBase[Any]]] = {
    "opcua": OpcUaCollector,
    "modbus": ModbusCollector,
    "mqtt": MqttCollector,
}

HISTORIANS: Mapping[str, type[HistorianBackend]] = {
    "duckdb": DuckDBHistorian,
    "influx": InfluxHistorian,
}
