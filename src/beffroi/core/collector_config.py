"""Config models of the collectors, one per protocol table, and their cross-checks."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

if TYPE_CHECKING:
    from beffroi.core.config import Config

SLUG = r"^[a-z0-9][a-z0-9_-]*$"
Slug = Annotated[str, Field(pattern=SLUG, max_length=64)]
EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$", max_length=128)]


class Strict(BaseModel):
    """Base of every collector config section: unknown keys are errors."""

    # The same base as core/config.py's; defined here because config.py imports this module.

    model_config = ConfigDict(extra="forbid", frozen=True)


_OPC_URL = re.compile(r"^opc\.tcp://[^/:\s]+(:\d{1,5})?(/\S*)?$")


def check_opc_url(v: str) -> str:
    """Return an opc.tcp URL unchanged, or raise ValueError saying what was expected."""
    if not _OPC_URL.match(v):
        raise ValueError(f"not a valid opc.tcp URL (expected opc.tcp://host:port/path), got {v!r}")
    return v


class _Reconnect(Strict):
    """Reconnect backoff shared by every protocol."""

    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _backoff_ordered(self) -> _Reconnect:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must not exceed "
                f"reconnect_max_s ({self.reconnect_max_s})"
            )
        return self


class _Credentials(Strict):
    """User name and password read from environment variables, never from the file."""

    username_env: EnvName | None = None
    password_env: EnvName | None = None

    @model_validator(mode="after")
    def _both_or_neither(self) -> _Credentials:
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together")
        return self


# --- OPC UA -------------------------------------------------------------------------------


class OpcUaRuleConfig(Strict):
    """Monitoring settings for the tags whose name matches a glob; the first match wins."""

    match: str = "*"
    sampling_interval_ms: float | None = Field(default=None, ge=0)
    queue_size: int | None = Field(default=None, ge=1, le=10_000)
    deadband: float = Field(default=0.0, ge=0)
    deadband_type: Literal["none", "absolute", "percent"] = "none"

    @model_validator(mode="after")
    def _percent_range(self) -> OpcUaRuleConfig:
        if self.deadband_type == "percent" and self.deadband > 100:
            raise ValueError(f"a percent deadband is at most 100, got {self.deadband}")
        if self.deadband_type == "none" and self.deadband > 0:
            raise ValueError("deadband needs deadband_type = 'absolute' or 'percent'")
        return self


class OpcUaDiscoveryConfig(Strict):
    """Find tags by browsing `root/<commune>/<asset>/<signal>` instead of listing node ids."""

    root: str = Field(min_length=1, description="browse path under Objects, or a node id")


class OpcUaCollectorConfig(_Reconnect, _Credentials):
    """An OPC UA server to subscribe to (or to poll)."""

    name: Slug
    url: str
    namespace: str = "urn:beffroi:simulator"
    mode: Literal["subscribe", "poll"] = "subscribe"
    publishing_interval_ms: int = Field(default=500, ge=10)
    keepalive_s: float = Field(default=5.0, gt=0, le=600)
    queue_size: int = Field(default=10, ge=1, le=10_000)
    chunk_size: int = Field(default=1000, ge=1)
    timeout_s: float = Field(default=4.0, gt=0)
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    pki_dir: str = "var/pki"
    trust_on_first_use: bool = False
    communes: list[str] = []
    classes: list[str] = []
    rules: list[OpcUaRuleConfig] = []
    discovery: OpcUaDiscoveryConfig | None = None

    @field_validator("url")
    @classmethod
    def _opc_url(cls, v: str) -> str:
        return check_opc_url(v)

    @model_validator(mode="after")
    def _security_pair(self) -> OpcUaCollectorConfig:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                f"security_policy {self.security_policy!r} and security_mode "
                f"{self.security_mode!r} do not go together (None with None, Basic256Sha256 "
                "with Sign or SignAndEncrypt)"
            )
        return self


# --- Modbus TCP ---------------------------------------------------------------------------

ModbusTable = Literal["coil", "discrete", "holding", "input"]
ModbusType = Literal["int16", "uint16", "int32", "uint32", "float32", "float64", "bool", "bit"]


class ModbusRegisterConfig(Strict):
    """Where a signal of a device class lives in the Modbus address space, and how to decode it."""

    signal: Slug
    table: ModbusTable
    address: int = Field(ge=0, le=65535)
    type: ModbusType = "uint16"
    bit: int | None = Field(default=None, ge=0, le=15)
    byte_order: Literal["big", "little"] = "big"
    word_order: Literal["big", "little"] = "big"
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> ModbusRegisterConfig:
        bits = self.table in ("coil", "discrete")
        if bits and self.type != "bool":
            raise ValueError(
                f"a {self.table} holds one bit: type must be 'bool', got {self.type!r}"
            )
        if not bits and self.type == "bool":
            raise ValueError(f"{self.table} registers are 16-bit words: use 'bit' with bit = 0..15")
        if (self.type == "bit") != (self.bit is not None):
            raise ValueError("bit = 0..15 is required with type 'bit', and only with it")
        if self.scale == 0:
            raise ValueError("scale must not be 0")
        return self


class ModbusDeviceConfig(Strict):
    """One asset of the register reached through this Modbus TCP endpoint."""

    asset: str
    unit_id: int = Field(default=1, ge=0, le=255)
    poll_interval_s: float | None = Field(default=None, gt=0)


class ModbusCollectorConfig(_Reconnect):
    """A Modbus TCP endpoint (a device or a gateway) polled for the devices behind it."""

    name: Slug
    host: str = Field(min_length=1)
    port: int = Field(default=502, ge=1, le=65535)
    poll_interval_s: float = Field(default=5.0, gt=0)
    timeout_s: float = Field(default=2.0, gt=0)
    retries: int = Field(default=2, ge=0, le=10)
    max_registers_per_read: int = Field(default=125, ge=1, le=125)
    max_bits_per_read: int = Field(default=2000, ge=1, le=2000)
    max_gap: int = Field(default=16, ge=0, le=124)
    devices: list[ModbusDeviceConfig] = Field(min_length=1)
    maps: dict[str, list[ModbusRegisterConfig]] = Field(min_length=1)


# --- MQTT ---------------------------------------------------------------------------------

_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


class MqttTopicConfig(Strict):
    """A topic filter whose levels name the commune, asset (and signal) of each message."""

    filter: str = Field(min_length=1)
    commune_level: int = Field(ge=0)
    asset_level: int = Field(ge=0)
    signal: Slug | None = None
    signal_level: int | None = Field(default=None, ge=0)
    format: Literal["json", "plain"] = "json"
    value_path: str = "value"
    timestamp_path: str | None = None
    unit_path: str | None = None
    command_topic: str | None = None

    @field_validator("filter")
    @classmethod
    def _mqtt_filter(cls, v: str) -> str:
        levels = v.split("/")
        for i, level in enumerate(levels):
            if "#" in level and (level != "#" or i != len(levels) - 1):
                raise ValueError(f"'#' must be the whole last level of a filter, got {v!r}")
            if "+" in level and level != "+":
                raise ValueError(f"'+' must be a whole level of a filter, got {v!r}")
        return v

    @field_validator("command_topic")
    @classmethod
    def _command_template(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if "+" in v or "#" in v:
            raise ValueError(f"a command topic is published to, it cannot hold wildcards: {v!r}")
        for name in _PLACEHOLDER.findall(v):
            if name not in ("commune", "asset", "signal"):
                raise ValueError(
                    f"unknown placeholder {{{name}}} (use {{commune}}, {{asset}}, {{signal}})"
                )
        return v

    @model_validator(mode="after")
    def _levels(self) -> MqttTopicConfig:
        if self.command_topic and self.format == "json" and "[" in self.value_path:
            raise ValueError("a command is written at value_path, which cannot index a list")
        if (self.signal is None) == (self.signal_level is None):
            raise ValueError("give either signal (fixed) or signal_level (from the topic)")
        levels = self.filter.split("/")
        named = {"commune_level": self.commune_level, "asset_level": self.asset_level}
        if self.signal_level is not None:
            named["signal_level"] = self.signal_level
        for key, idx in named.items():
            if idx >= len(levels) or levels[idx] != "+":
                raise ValueError(
                    f"{key} = {idx}: level {idx} of {self.filter!r} must be a '+' wildcard"
                )
        return self


class MqttCollectorConfig(_Reconnect, _Credentials):
    """An MQTT broker and the topics that carry equipment values."""

    name: Slug
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    client_id: str | None = Field(default=None, min_length=1, max_length=128)
    qos: Literal[0, 1, 2] = 1
    clean_session: bool = False
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    max_payload_bytes: int = Field(default=65_536, ge=16)
    write_timeout_s: float = Field(default=5.0, gt=0)
    communes: list[str] = []
    classes: list[str] = []
    topics: list[MqttTopicConfig] = Field(min_length=1)


# --- all protocols ------------------------------------------------------------------------


class CollectorsConfig(Strict):
    """Collectors by protocol; the table name is the registry key."""

    opcua: list[OpcUaCollectorConfig] = []
    modbus: list[ModbusCollectorConfig] = []
    mqtt: list[MqttCollectorConfig] = []

    def entries(self) -> list[tuple[str, Any]]:
        """Return (protocol, config) for every collector, in protocol then file order."""
        return [(kind, c) for kind in type(self).model_fields for c in getattr(self, kind)]

    @model_validator(mode="after")
    def _unique_names(self) -> CollectorsConfig:
        names = [c.name for _, c in self.entries()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"collector names must be unique, repeated: {', '.join(dupes)}")
        return self


def collector_problems(cfg: Config) -> list[str]:
    """Check the collectors' references to communes, asset classes and their signals."""
    problems: list[str] = []
    known = set(cfg.commune_ids())
    classes = cfg.asset_classes
    for kind in ("opcua", "mqtt"):
        for i, col in enumerate(getattr(cfg.collectors, kind)):
            where = f"collectors.{kind}[{i}]"
            for j, c in enumerate(col.communes):
                if c not in known:
                    problems.append(f"{where}.communes[{j}]: unknown commune {c!r}")
            for j, k in enumerate(col.classes):
                if k not in classes:
                    problems.append(f"{where}.classes[{j}]: unknown asset class {k!r}")
    for i, col in enumerate(cfg.collectors.mqtt):
        wanted = [classes[k] for k in col.classes if k in classes] or list(classes.values())
        signals = {s.name for c in wanted for s in c.signals}
        for j, topic in enumerate(col.topics):
            if topic.signal is not None and topic.signal not in signals:
                problems.append(
                    f"collectors.mqtt[{i}].topics[{j}].signal: no asset class has a signal "
                    f"{topic.signal!r}"
                )
    for i, col in enumerate(cfg.collectors.modbus):
        where = f"collectors.modbus[{i}]"
        for class_id, entries in col.maps.items():
            if class_id not in classes:
                problems.append(f"{where}.maps.{class_id}: unknown asset class {class_id!r}")
                continue
            signals = {s.name: s for s in classes[class_id].signals}
            seen: set[str] = set()
            for j, reg in enumerate(entries):
                if reg.signal not in signals:
                    problems.append(
                        f"{where}.maps.{class_id}[{j}].signal: {class_id} has no signal "
                        f"{reg.signal!r}"
                    )
                elif signals[reg.signal].kind == "str":
                    problems.append(
                        f"{where}.maps.{class_id}[{j}].signal: {reg.signal!r} is text, which "
                        "Modbus registers do not carry"
                    )
                if reg.signal in seen:
                    problems.append(
                        f"{where}.maps.{class_id}[{j}].signal: {reg.signal!r} is mapped twice"
                    )
                seen.add(reg.signal)
        assets: dict[str, int] = {}
        for j, dev in enumerate(col.devices):
            if dev.asset in assets:
                problems.append(
                    f"{where}.devices[{j}].asset: {dev.asset!r} is listed twice "
                    f"(also devices[{assets[dev.asset]}])"
                )
            assets.setdefault(dev.asset, j)
    return problems


def register_problems(cfg: Config, assets: dict[str, Any]) -> list[str]:
    """Check what only the generated register can tell: the Modbus devices' assets and maps."""
    problems: list[str] = []
    for i, col in enumerate(cfg.collectors.modbus):
        for j, dev in enumerate(col.devices):
            asset = assets.get(dev.asset)
            where = f"collectors.modbus[{i}].devices[{j}].asset"
            if asset is None:
                problems.append(f"{where}: unknown asset {dev.asset!r}")
            elif asset.asset_class not in col.maps:
                problems.append(
                    f"{where}: {dev.asset} is a {asset.asset_class}, which has no register map "
                    f"(collectors.modbus[{i}].maps.{asset.asset_class})"
                )
    return problems
