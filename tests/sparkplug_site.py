"""The site of the Sparkplug tests: an OPC UA plant, Mosquitto, the register and the config
every role (edges, central, the nodes of a pair) starts from; a fixture for every test module."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from beffroi.app.config import Config
from beffroi.app.runtime import Runtime
from beffroi.core.register import Register, build_register
from tests.conftest import free_port
from tests.servers import NS, Mosquitto, OpcUaPlant, gateway_config

CABINET = "streetlight_cabinet"
GROUP = "metropole"
HOST_ID = "central-test"


@dataclasses.dataclass
class Site:
    """The plant, the broker, the register and the config every role starts from."""

    plant: OpcUaPlant
    broker: Mosquitto
    register: Register
    cfg: Config
    communes: tuple[str, str, str]
    folder: Path

    def role_config(self, role: str) -> Config:
        """Return the config with this role's own data folder (historian, spool, journals)."""
        data = self.folder / role
        data.mkdir(exist_ok=True)
        historian = self.cfg.historian.model_copy(
            update={"path": str(data / "beffroi.duckdb"), "spool_dir": str(data / "spool")}
        )
        alarms = self.cfg.alarms.model_copy(update={"journal": str(data / "journal.duckdb")})
        out = self.cfg.model_copy(update={"historian": historian, "alarms": alarms})
        out._source = self.cfg.source
        return out

    def runtime(self, role: str, edge: str | None = None) -> Runtime:
        name = edge or role
        return Runtime(self.role_config(name), self.register, simulator=False, hmi=False,
                       role=role, edge=edge)  # type: ignore[arg-type]  # fmt: skip

    def cabinets(self, commune: str) -> list:
        return [a for a in self.register.assets.values()
                if a.asset_class == CABINET and a.commune == commune]  # fmt: skip


@pytest.fixture
async def site(demo_config, tmp_path):
    register = build_register(demo_config, assets=80)
    communes = tuple(sorted({a.commune for a in register.assets.values()
                             if a.asset_class == CABINET}))[:3]  # fmt: skip
    assert len(communes) == 3
    served = [t for a in register.assets.values() if a.commune in communes for t in a.tags]
    plant = OpcUaPlant(free_port(), served)
    broker = Mosquitto(tmp_path / "broker", free_port())
    broker.start()
    await plant.start()
    opcua = {"name": "plant", "url": plant.url, "namespace": NS, "communes": list(communes),
             "publishing_interval_ms": 50, "reconnect_min_s": 0.2,
             "reconnect_max_s": 1.0}  # fmt: skip
    cfg = gateway_config(demo_config, tmp_path, opcua=[opcua])
    sparkplug = {"host": "127.0.0.1", "port": broker.port, "group": GROUP, "name": HOST_ID,
                 "keepalive_s": 2, "reconnect_min_s": 0.2, "reconnect_max_s": 1.0,
                 "write_timeout_s": 10,
                 "edges": [{"name": "edge-a", "communes": [communes[0]]},
                           {"name": "edge-b", "communes": [communes[1]]},
                           {"name": "edge-c", "communes": [communes[2]]}]}  # fmt: skip
    historian = cfg.historian.model_copy(update={"flush_interval_s": 0.2})
    out = cfg.model_copy(update={
        "sparkplug": type(cfg.sparkplug).model_validate(sparkplug),
        "historian": historian,
        "kpi": cfg.kpi.model_copy(update={"enabled": False}),
    })  # fmt: skip
    out._source = cfg.source
    try:
        yield Site(plant, broker, register, out, communes, tmp_path)  # type: ignore[arg-type]
    finally:
        await plant.stop()
        broker.stop()
