"""Config of `[simulator]`: the simulated metropolis served over OPC UA."""

from __future__ import annotations

from typing import Protocol

from pydantic import Field

from beffroi.core.config import OpcUrl, Strict
from beffroi.core.site import Site


class SimulatorConfig(Strict):
    """The simulated metropolis served over OPC UA."""

    enabled: bool = True
    endpoint: OpcUrl = "opc.tcp://127.0.0.1:4840/beffroi/"
    namespace: str = "urn:beffroi:simulator"
    seed: int = 7
    speed: float = Field(default=1.0, gt=0, le=10_000)
    tick_s: float = Field(default=1.0, gt=0)
    fault_rate_per_hour: float = Field(default=0.2, ge=0)
    # `beffroi demo` at its first start: this many days of simulated history (0: none).
    history_days: int = Field(default=0, ge=0, le=400)
    history_step_s: float = Field(default=600.0, ge=10, le=3600)


class SimulatorSite(Site, Protocol):
    """What the simulator reads of the config."""

    @property
    def simulator(self) -> SimulatorConfig: ...
