"""Generic simulated equipment: the simulated clock and `Model`, base of every class's dynamics."""

from __future__ import annotations

import math
from datetime import date
from typing import Any, ClassVar, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np

from beffroi.core.model import Asset, TagSpec, Value


class Clock(NamedTuple):
    """Simulated time of one step: epoch seconds, step length, and local calendar facts."""

    t: float
    dt: float
    hour: float
    weekday: int
    day: date
    tz: ZoneInfo


class Model:
    """Generic equipment, base of the models: a Poisson fault process; setpoints stored, echoed."""

    # signal -> (decimals reported, deadband that triggers a report before interval_s elapses)
    FORMAT: ClassVar[dict[str, tuple[int, float]]] = {}
    # Counters that only ever increase, taken back from the historian when the simulator starts
    # again: a meter does not go back to its value of the first start (KPIs would count it).
    COUNTERS: ClassVar[tuple[str, ...]] = ()

    def __init__(self, assets: list[Asset], rng: np.random.Generator, fault_rate: float):
        self.assets, self.n, self.rng = assets, len(assets), rng
        self.fault_rate = fault_rate / 3600.0
        self.specs: dict[str, TagSpec] = {s.signal: s for s in assets[0].tags}
        self.lat = np.array([a.lat for a in assets])
        self.lon = np.array([a.lon for a in assets])
        self.fault_until = np.full(self.n, -np.inf)
        self.forced = np.full(self.n, -1, np.int8)
        self.fault = np.zeros(self.n, bool)
        self.sp: dict[str, np.ndarray] = {}
        for name, spec in self.specs.items():
            if spec.writable:
                self.sp[name] = blank(spec.kind, self.n)

    def bind(self, signal: str, values: np.ndarray) -> np.ndarray:
        """Make a state array the store of a writable signal, when the template has one."""
        if signal in self.sp:
            self.sp[signal] = values
        return values

    def setup(self, clk: Clock) -> None:
        """Draw per-asset constants and the initial state."""

    def evolve(self, clk: Clock) -> dict[str, np.ndarray]:
        """Advance the state by clk.dt and return the signals it computes."""
        return {}

    def update(self, clk: Clock) -> dict[str, np.ndarray]:
        """Advance faults and dynamics; return every signal's current values."""
        if self.fault_rate > 0 and clk.dt > 0:
            p = -math.expm1(-self.fault_rate * clk.dt)
            new = (self.rng.random(self.n) < p) & (self.fault_until <= clk.t)
            self.fault_until[new] = clk.t + self.rng.uniform(120.0, 900.0, int(new.sum()))
        self.fault = np.where(self.forced >= 0, self.forced == 1, self.fault_until > clk.t)
        out = dict(self.sp)
        out.update(self.evolve(clk))
        out["fault"] = self.fault
        return out

    def resume(self, signal: str, i: int, value: float) -> bool:
        """Take a counter's last stored value as asset i's state; False if not a counter."""
        return False

    def refusal(self, signal: str, i: int) -> str | None:
        """Return why asset i refuses a write to a setpoint now, or None when it takes it."""
        return None

    def accept(self, signal: str, value: Value) -> Value | None:
        """Convert and clamp a written setpoint; None when it cannot be used."""
        spec = self.specs[signal]
        if spec.kind == "bool":
            return bool(value)
        if spec.kind == "str":
            return str(value)[:200]
        try:
            v = float(value)
        except (TypeError, ValueError):
            return None
        if not math.isfinite(v):
            return None
        if spec.low is not None:
            v = max(v, spec.low)
        if spec.high is not None:
            v = min(v, spec.high)
        return v

    def events(self, rate_per_h: float | np.ndarray, dt: float) -> np.ndarray:
        """Return which assets see a Poisson event at this rate during dt."""
        return self.rng.random(self.n) < -np.expm1(-np.asarray(rate_per_h) / 3600.0 * dt)


def py_value(x: Any) -> Value:
    """Return a numpy scalar as the plain Python value it holds."""
    return x.item() if isinstance(x, np.generic) else x


def blank(kind: str, n: int) -> np.ndarray:
    """Return n initial values of a signal kind: false, empty text, or zero."""
    if kind == "bool":
        return np.zeros(n, bool)
    if kind == "str":
        return np.full(n, "", object)
    return np.zeros(n)
