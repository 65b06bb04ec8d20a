"""The root of config.toml, assembled from every package's section; load it, check it whole.

Each package owns its section's schema and checks beside its code; this module is the one place
that knows them all. Every error names the file, the TOML path and what was expected.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError, model_validator
from pydantic_core import ErrorDetails

from beffroi.alerts.config import AlarmsConfig, alarm_problems
from beffroi.collectors.config import CollectorConfig
from beffroi.collectors.modbus.config import (
    ModbusCollectorConfig,
    modbus_device_problems,
    modbus_problems,
)
from beffroi.collectors.mqtt.config import MqttCollectorConfig, mqtt_problems
from beffroi.collectors.opcua.config import OpcUaCollectorConfig, opcua_problems
from beffroi.control.config import ControlConfig, control_problems
from beffroi.core.config import Strict
from beffroi.core.errors import ConfigError
from beffroi.core.privacy import privacy_problems
from beffroi.core.register import Register
from beffroi.core.site import SiteConfig, site_problems
from beffroi.historian.config import (
    CompressionConfig,
    HistorianConfig,
    compression_problems,
)
from beffroi.hmi.config import HmiConfig, public_problems
from beffroi.hmi.users import ROLES
from beffroi.interventions.config import InterventionsConfig, interventions_problems
from beffroi.inventory.config import InventoryConfig
from beffroi.kpi.config import KpiConfig, kpi_problems, kpi_register_problems
from beffroi.pair.config import PairConfig, pair_problems
from beffroi.simulator.config import SimulatorConfig
from beffroi.sparkplug.config import SparkplugConfig, sparkplug_problems
from beffroi.state.config import StateConfig


class CollectorsConfig(Strict):
    """Collectors by protocol; each table name is a key of the collector registry."""

    opcua: list[OpcUaCollectorConfig] = []
    modbus: list[ModbusCollectorConfig] = []
    mqtt: list[MqttCollectorConfig] = []

    def entries(self) -> list[tuple[str, CollectorConfig]]:
        """Return (protocol, config) for every collector, in protocol then file order."""
        return [(kind, c) for kind in type(self).model_fields for c in getattr(self, kind)]

    @model_validator(mode="after")
    def _unique_names(self) -> CollectorsConfig:
        names = [c.name for _, c in self.entries()]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"collector names must be unique, repeated: {', '.join(dupes)}")
        return self


class Config(SiteConfig):
    """The whole config.toml."""

    simulator: SimulatorConfig = SimulatorConfig()
    collectors: CollectorsConfig = CollectorsConfig()
    historian: HistorianConfig = HistorianConfig()
    compression: CompressionConfig = CompressionConfig()
    hmi: HmiConfig = HmiConfig()
    alarms: AlarmsConfig = AlarmsConfig()
    kpi: KpiConfig = KpiConfig()
    control: ControlConfig = ControlConfig()
    inventory: InventoryConfig = InventoryConfig()
    sparkplug: SparkplugConfig = SparkplugConfig()
    state: StateConfig = StateConfig()
    pair: PairConfig = PairConfig()
    interventions: InterventionsConfig = InterventionsConfig()

    def data_dir(self) -> Path:
        """Return the historian's folder, where the gateway's other files go by default."""
        return self.resolve(self.historian.path).parent

    def hmi_url(self) -> str:
        """Return where the HMI answers, for links in e-mails."""
        return f"http://{self.hmi.host}:{self.hmi.port}"


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _message(err: ErrorDetails) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind not in ("value_error", "assertion_error") and "input" in err:
        got = err["input"]
        if not isinstance(got, dict | list):
            msg += f" (got {got!r})"
    return msg


def config_problems(cfg: Config) -> list[str]:
    """Check the references between sections that no single section can see."""
    collectors = cfg.collectors
    return (
        site_problems(cfg)
        + opcua_problems(cfg, collectors.opcua)
        + mqtt_problems(cfg, collectors.mqtt)
        + modbus_problems(cfg, collectors.modbus)
        + compression_problems(cfg)
        + alarm_problems(cfg)
        + kpi_problems(cfg)
        + control_problems(cfg)
        + pair_problems(cfg)
        + public_problems(cfg)
        + interventions_problems(cfg, ROLES)
        + privacy_problems(cfg, ROLES)
        + sparkplug_problems(cfg, cfg.sparkplug)
    )


def register_problems(cfg: Config, register: Register) -> list[str]:
    """Check what only the register can tell: Modbus devices' assets, the lighting baseline."""
    return modbus_device_problems(cfg.collectors.modbus, register.assets) + kpi_register_problems(
        cfg, register
    )


def parse_config(text: str, source: str = "config.toml") -> Config:
    """Parse TOML text into a Config, raising ConfigError with one line per problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"(syntax): malformed TOML: {exc}"]) from None
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{_loc(e['loc'])}: {_message(e)}" for e in exc.errors()]
        raise ConfigError(source, problems) from None
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(source, problems)
    cfg._source = Path(source)
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"(file): cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["(file): not UTF-8 text"]) from None
    if text.startswith("\ufeff"):
        # Some editors start UTF-8 files with a byte-order mark, which TOML does not allow:
        # tomllib would call it an invalid statement at 1:1.
        raise ConfigError(
            str(path), ["(file): starts with a byte-order mark (BOM); save it as UTF-8 without BOM"]
        )
    return parse_config(text, str(path))


# The files the gateway writes, by config section: `--data DIR` puts them all in DIR.
DATA_FILES: Mapping[str, tuple[str, ...]] = {
    "historian": ("path", "spool_dir"),
    "hmi": ("users_db",),
    "alarms": ("journal",),
    "kpi": ("store",),
    "control": ("audit",),
    "inventory": ("store",),
}


def demo_config(
    cfg: Config, *, data: Path | None, port: int | None, opcua_port: int | None
) -> Config:
    """Return the config with the demo's overrides: data folder, HMI and simulator ports."""
    updates: dict[str, Any] = {}
    if data is not None:
        # Every file the gateway writes moves into DIR, keeping its name.
        folder = data.resolve()
        for section, fields in DATA_FILES.items():
            part = getattr(cfg, section)
            # An empty path means "beside the historian": it follows the historian there.
            moved = {
                f: str(folder / Path(getattr(part, f)).name) for f in fields if getattr(part, f)
            }
            updates[section] = part.model_copy(update=moved)
    if port is not None:
        hmi = updates.get("hmi", cfg.hmi)
        updates["hmi"] = hmi.model_copy(update={"port": port})
    if opcua_port is not None:
        old = cfg.simulator.endpoint
        new = re.sub(r"^(opc\.tcp://[^/:]+)(:\d+)?", rf"\g<1>:{opcua_port}", old)
        updates["simulator"] = cfg.simulator.model_copy(update={"endpoint": new})
        cols = [
            c.model_copy(update={"url": new}) if c.url == old else c for c in cfg.collectors.opcua
        ]
        updates["collectors"] = cfg.collectors.model_copy(update={"opcua": cols})
    out = cfg.model_copy(update=updates)
    out._source = cfg.source
    return out
