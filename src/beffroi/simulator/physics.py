"""Vectorised dynamics of the simulated equipment, per asset class; no protocol code here."""

from __future__ import annotations

import logging
import math
import zlib
from collections import defaultdict
from datetime import UTC, date, datetime
from typing import Any, ClassVar, NamedTuple
from zoneinfo import ZoneInfo

import numpy as np
from astral import Observer
from astral.sun import elevation, sun

from beffroi.core.model import Asset, TagSpec, Value
from beffroi.core.register import Register

logger = logging.getLogger(__name__)

DAY_S = 86_400.0
KM_PER_DEG = 111.0


class Clock(NamedTuple):
    """Simulated time of one step: epoch seconds, step length, and local calendar facts."""

    t: float
    dt: float
    hour: float
    weekday: int
    day: date
    tz: ZoneInfo


def _plateau(h: float, start: float, end: float, k: float = 1.5) -> float:
    """Return ~1 between two local hours and ~0 outside, with smooth edges."""
    return 1.0 / (1.0 + math.exp(-(h - start) * k)) / (1.0 + math.exp((h - end) * k))


def _peak(h: float, at: float, width: float) -> float:
    return math.exp(-(((h - at) / width) ** 2))


class _Model:
    """Generic equipment: a Poisson fault process; setpoints are stored and echoed."""

    # signal -> (decimals reported, deadband that triggers a report before interval_s elapses)
    FORMAT: ClassVar[dict[str, tuple[int, float]]] = {}

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
                self.sp[name] = _blank(spec.kind, self.n)

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


def _py(x: Any) -> Value:
    return x.item() if isinstance(x, np.generic) else x


def _blank(kind: str, n: int) -> np.ndarray:
    if kind == "bool":
        return np.zeros(n, bool)
    if kind == "str":
        return np.full(n, "", object)
    return np.zeros(n)


class _Outages(_Model):
    """Equipment with a network link: `online` drops during rare outages of a few minutes."""

    def setup(self, clk: Clock) -> None:
        self.offline_until = np.full(self.n, -np.inf)

    def evolve(self, clk: Clock) -> dict[str, np.ndarray]:
        new = self.events(self.fault_rate * 3600 / 3, clk.dt) & (self.offline_until <= clk.t)
        self.offline_until[new] = clk.t + self.rng.uniform(60.0, 900.0, int(new.sum()))
        return {"online": self.offline_until <= clk.t}


class Lighting(_Model):
    """Street-lighting cabinet: lit from dusk to dawn, power = installed x dimming."""

    FORMAT: ClassVar = {"power_kw": (2, 0.25), "energy_kwh": (2, math.inf), "dimming_pct": (1, 0)}

    def setup(self, clk: Clock) -> None:
        r, n = self.rng, self.n
        self.installed = np.round(r.uniform(2.0, 12.0, n), 1)
        self.dimming = self.bind("dimming_pct", r.choice([100.0, 100.0, 100.0, 80.0, 70.0], n))
        self.energy = r.uniform(5_000.0, 60_000.0, n)
        self.failures = r.integers(0, 3, n).astype(float)
        self._day: date | None = None
        self._cells: dict[tuple[float, float], tuple[float, float]] = {}

    @staticmethod
    def _twilight(lat: float, lon: float, day: date, tz: ZoneInfo) -> tuple[float, float]:
        """Return (dawn, dusk) epoch seconds of one place and local day, polar cases included."""
        obs = Observer(lat, lon)
        try:
            s = sun(obs, date=day, tzinfo=tz)
            return s["dawn"].timestamp(), s["dusk"].timestamp()
        except ValueError:  # no civil twilight that day: dark all day, or never dark
            noon = datetime(day.year, day.month, day.day, 12, tzinfo=tz)
            dark = elevation(obs, noon) < -6.0
            return (math.inf, math.inf) if dark else (-math.inf, math.inf)

    def night(self, clk: Clock) -> np.ndarray:
        """Return which cabinets are between dusk and dawn (cached per local day)."""
        if clk.day != self._day:
            # Cabinets in the same 0.01° cell (~1 km) share a twilight: a few seconds apart at most.
            self._day, self._cells = clk.day, {}
            keys = list(
                zip(np.round(self.lat, 2).tolist(), np.round(self.lon, 2).tolist(), strict=True)
            )
            for k in set(keys):
                self._cells[k] = self._twilight(k[0], k[1], clk.day, clk.tz)
            tw = np.array([self._cells[k] for k in keys]).reshape(-1, 2)
            self.dawn, self.dusk = tw[:, 0], tw[:, 1]
        return (clk.t < self.dawn) | (clk.t >= self.dusk)

    def evolve(self, clk: Clock) -> dict[str, np.ndarray]:
        lit = self.night(clk) & ~self.fault  # a faulted cabinet has tripped: dark, no power
        np.clip(self.dimming, 0.0, 100.0, out=self.dimming)
        noise = 1.0 + self.rng.normal(0.0, 0.01, self.n)
        power = np.where(
            lit, self.installed * self.dimming / 100.0 * (1 - 0.02 * self.failures), 0.0
        )
        power = np.maximum(power * noise, 0.0)
        self.energy += power * clk.dt / 3600.0
        self.failures += self.events(np.where(lit, 1 / 480, 0.0), clk.dt)  # ~1 per 20 lit days
        self.failures[self.events(1 / 168, clk.dt) & (self.failures > 0)] = 0.0  # weekly repairs
        return {
            "lit": lit,
            "power_kw": power,
            "energy_kwh": self.energy,
            "lamp_failures": self.failures,
        }


class Traffic(_Model):
    """Traffic-light controller: runs the plan it is told, counts bus priority requests."""

    FORMAT: ClassVar = {"bus_priority_requests": (0, math.inf), "plan": (0, 0)}

    def setup(self, clk: Clock) -> None:
        self.plan = self.bind("plan", self.rng.choice([0.0, 0.0, 0.0, 0.0, 1.0, 2.0], self.n))
        self.requests = self.rng.integers(0, 5_000, self.n).astype(float)

    def accept(self, signal: str, value: Value) -> Value | None:
        v = super().accept(signal, value)
        return float(round(v)) if signal == "plan" and v is not None else v

    def evolve(self, clk: Clock) -> dict[str, np.ndarray]:
        rate = (8.0 if 6 <= clk.hour < 21 else 1.0) * clk.dt / 3600.0
        self.requests += np.where(self.fault, 0, self.rng.poisson(rate, self.n))
        return {"bus_priority_requests": self.requests}


class Bus(_Model):
    """Bus driving a closed loop of waypoints, dwelling at stops, late in rush hours."""

    FORMAT: ClassVar = {
        "lat": (6, math.inf),
        "lon": (6, math.inf),
        "speed_kmh": (1, 5.0),
        "delay_s": (0, 30.0),
    }
    K = 8

    def setup(self, clk: Clock) -> None:
        r, n, k = self.rng, self.n, self.K
        ang = np.arange(k) * 2 * np.pi / k + r.uniform(-0.3, 0.3, (n, k)) + r.uniform(0, 7, (n, 1))
        rad = r.uniform(0.8, 2.5, (n, 1)) * r.uniform(0.6, 1.3, (n, k))
        coslat = np.cos(np.radians(self.lat))[:, None]
        wlat = self.lat[:, None] + rad * np.sin(ang) / KM_PER_DEG
        wlon = self.lon[:, None] + rad * np.cos(ang) / (KM_PER_DEG * coslat)
        self.wlat = np.hstack([wlat, wlat[:, :1]])
        self.wlon = np.hstack([wlon, wlon[:, :1]])
        seg = np.hypot(np.diff(self.wlat) * 111e3, np.diff(self.wlon) * 111e3 * coslat)
        self.seg = np.maximum(seg, 1.0)
        self.cum = np.hstack([np.zeros((n, 1)), np.cumsum(self.seg, axis=1)])
        self.s = r.uniform(0, 1, n) * self.cum[:, -1]
        self.cruise = r.uniform(16.0, 26.0, n)
        self.spacing = r.uniform(350.0, 500.0, n)
        self.since = r.uniform(0, 1, n) * self.spacing
        self.dwell = np.zeros(n)
        self.delay = np.round(r.normal(60.0, 60.0, n))
        self.speed = np.zeros(n)

    def evolve(self, clk: Clock) -> dict[str, np.ndarray]:
        r, dt, h = self.rng, clk.dt, clk.hour
        rush = 7 <= h < 9.5 or 16.5 <= h < 19
        traffic = 0.7 if rush else (1.2 if h < 6 or h >= 22 else 1.0)
        v = np.clip(self.cruise * traffic * (1 + r.normal(0, 0.1, self.n)), 3.0, 60.0)
        moving = (self.dwell <= 0) & ~self.fault
        if dt > 120:  # coarse steps: average speed including stops
            v = v * 0.75
        dist = np.where(moving, v / 3.6 * dt, 0.0)
        self.dwell = np.maximum(self.dwell - dt, 0.0)
        self.s = (self.s + dist) % self.cum[:, -1]
        self.since += dist
        stop = (self.since >= self.spacing) & (dt <= 120)
        self.dwell[stop] = r.uniform(10.0, 30.0, int(stop.sum()))
        self.since[self.since >= self.spacing] = 0.0
        self.speed = np.where(moving & ~stop, v, 0.0)
        # Delay relaxes towards a rush-hour or off-peak level; a broken-down bus only loses time.
        relax = (np.where(rush, 240.0, 45.0) - self.delay) * -math.expm1(-dt / 1200.0)
        relax += r.normal(0, 0.5, self.n) * math.sqrt(dt)
        self.delay = np.clip(self.delay + np.where(self.fault, dt, relax), -60.0, 1800.0)
        rows = np.arange(self.n)
        i = np.minimum((self.cum[:, 1:-1] <= self.s[:, None]).sum(axis=1), self.K - 1)
        f = (self.s - self.cum[rows, i]) / self.seg[rows, i]
        lat = self.wlat[rows, i] + f * (self.wlat[rows, i + 1] - self.wlat[rows, i])
        lon = self.wlon[rows, i] + f * (self.wlon[rows, i + 1] - self.wlon[rows, i])
        return {"lat": lat, "lon": lon, "speed_kmh": self.speed, "delay_s": self.delay}


class Bollard(_Model):
    """Retractable bollard: moves to the commanded position unless faulted; vehicles pass."""

    def setup(self, clk: Clock) -> None:
        self.raised = self.rng.random(self.n) < 0.7
        self.command = self.bind("raised", self.raised.copy())
        self.presence_until = np.full(self.n, -np.inf)

    def evolve(self, clk: Clock) -> dict[str, np.ndarray]:
        ok = ~self.fault
        self.raised[ok] = self.command[ok]
        self.command[~ok] = self.raised[~ok]  # a jammed bollard refuses the order
        new = self.events(30.0 if 7 <= clk.hour < 20 else 3.0, clk.dt)
        self.presence_until[new] = clk.t + self.rng.uniform(3.0, 15.0, int(new.sum()))
        return {"raised": self.raised, "presence": new | (self.presence_until > clk.t)}


MESSAGES = (
    "",
    "Bienvenue à Dijon Métropole",
    "Travaux : circulation alternée",
    "Marché couvert ouvert",
    "Pic de pollution : vitesse limitée",
    "Parkings : suivre P+R",
)


class InfoPanel(_Outages):
    """Variable message panel: shows the message it is sent; online unless its link is down."""

    def setup(self, clk: Clock) -> None:
        super().setup(clk)
        self.message = self.bind("message", self.rng.choice(np.array(MESSAGES, object), self.n))


class Camera(_Outages):
    """Video-protection camera: online unless its link is down."""


class CarPark(_Model):
    """Car park filling through the working day, fuller on weekdays."""

    FORMAT: ClassVar = {
        "capacity": (0, math.inf),
        "free_spaces": (0, math.inf),
        "occupancy_pct": (1, math.inf),
    }

    def setup(self, clk: Clock) -> None:
        self.capacity = self.rng.integers(10, 81, self.n) * 10.0
        self.peak = self.rng.uniform(0.7, 0.98, self.n)
        self.occupied = np.round(self.target(clk) * self.capacity)

    def target(self, clk: Clock) -> np.ndarray:
        """Return the occupancy fraction each car park tends to at this local time."""
        week = (1.0, 1.0, 1.0, 1.0, 1.0, 0.85, 0.35)[clk.weekday]
        return 0.12 + (self.peak - 0.12) * week * _plateau(clk.hour, 9.0, 18.0)

    def evolve(self, clk: Clock) -> dict[str, np.ndarray]:
        goal = self.target(clk) * self.capacity
        step = (goal - self.occupied) * -math.expm1(-clk.dt / 1200.0)
        step += self.rng.normal(0.0, 1.0, self.n) * math.sqrt(clk.dt / 60.0)
        live = ~self.fault  # a faulted counter freezes
        self.occupied[live] = np.clip(np.round(self.occupied + step), 0, self.capacity)[live]
        return {
            "capacity": self.capacity,
            "free_spaces": self.capacity - self.occupied,
            "occupancy_pct": self.occupied / self.capacity * 100.0,
        }


class Reservoir(_Model):
    """Water reservoir: the pump fills it when commanded, consumption drains it."""

    FORMAT: ClassVar = {"level_pct": (1, 2.0), "flow_m3h": (1, 5.0)}

    def setup(self, clk: Clock) -> None:
        r, n = self.rng, self.n
        self.volume = r.uniform(500.0, 5_000.0, n)
        self.pump_cap = self.volume * r.uniform(0.08, 0.15, n)
        self.demand = self.pump_cap * r.uniform(0.35, 0.5, n)
        self.level = r.uniform(40.0, 90.0, n)
        self.pump = self.bind("pump_on", self.level < 65.0)

    def evolve(self, clk: Clock) -> dict[str, np.ndarray]:
        h = clk.hour
        profile = 0.45 + 0.9 * _peak(h, 8.0, 1.5) + 0.7 * _peak(h, 20.0, 1.8)
        profile += 0.3 * _plateau(h, 10.0, 18.0)
        # The local PLC overrides the command near the limits, as real stations do.
        self.pump[self.level < 15.0] = True
        self.pump[self.level > 98.0] = False
        running = self.pump & ~self.fault & (self.level < 100.0)
        noise = 1.0 + self.rng.normal(0.0, 0.01, self.n)
        inflow = np.where(running, self.pump_cap * noise, 0.0)
        net = inflow - self.demand * profile
        self.level = np.clip(self.level + net * clk.dt / 3600.0 / self.volume * 100.0, 0.0, 100.0)
        return {"level_pct": self.level, "flow_m3h": inflow}


class Waste(_Model):
    """Waste container filling slowly in the daytime, emptied at 85-100 %."""

    FORMAT: ClassVar = {"fill_pct": (1, 5.0)}

    def setup(self, clk: Clock) -> None:
        self.rate = self.rng.uniform(4.0, 15.0, self.n) / DAY_S
        self.threshold = self.rng.uniform(85.0, 100.0, self.n)
        self.fill = self.rng.uniform(0.0, 80.0, self.n)

    def evolve(self, clk: Clock) -> dict[str, np.ndarray]:
        profile = 0.3 + 1.4 * _plateau(clk.hour, 7.0, 21.0)
        self.fill = np.minimum(self.fill + self.rate * profile * clk.dt, 100.0)
        full = self.fill >= self.threshold
        k = int(full.sum())
        self.fill[full] = self.rng.uniform(0.0, 3.0, k)
        self.threshold[full] = self.rng.uniform(85.0, 100.0, k)
        return {"fill_pct": self.fill}


class Building(_Model):
    """Public building: heating drives the indoor temperature towards the setpoint slowly."""

    FORMAT: ClassVar = {"temperature_c": (1, 0.3), "power_kw": (1, 2.0), "setpoint_c": (1, 0)}
    TAU_S = 20 * 3600.0  # thermal time constant of the envelope

    def setup(self, clk: Clock) -> None:
        r, n = self.rng, self.n
        self.size = r.uniform(20.0, 300.0, n)
        self.ua = self.size / 30.0  # kW/K: full heating holds 30 K above outdoor
        self.setpoint = self.bind("setpoint_c", r.choice([19.0, 19.0, 20.0, 21.0], n))
        self.temp = self.setpoint - r.uniform(0.0, 1.5, n)

    @staticmethod
    def outdoor(clk: Clock) -> float:
        """Return Dijon's outdoor temperature: seasonal and daily cycles."""
        yday = clk.day.timetuple().tm_yday
        return (
            11.0
            - 9.0 * math.cos(2 * math.pi * (yday - 15) / 365)
            + 4.0 * math.cos(2 * math.pi * (clk.hour - 15.0) / 24)
        )

    def evolve(self, clk: Clock) -> dict[str, np.ndarray]:
        out = self.outdoor(clk)
        # Feed-forward of the steady-state loss plus a proportional term on the error.
        hold = self.ua * (self.setpoint - out)
        heat = np.clip(hold + self.size * (self.setpoint - self.temp) * 0.5, 0.0, self.size)
        heat = np.where(self.fault, 0.0, heat)
        t_eq = out + heat / self.ua
        self.temp = t_eq + (self.temp - t_eq) * math.exp(-clk.dt / self.TAU_S)
        self.temp = np.minimum(self.temp, np.maximum(self.setpoint + 0.5, out))
        busy = clk.weekday < 5 and 7 <= clk.hour < 19
        base = self.size * (0.1 if busy else 0.03)
        power = (heat + base) * (1.0 + self.rng.normal(0.0, 0.01, self.n))
        return {"temperature_c": self.temp, "power_kw": power}


MODELS: dict[str, type[_Model]] = {
    "streetlight_cabinet": Lighting,
    "traffic_controller": Traffic,
    "bus": Bus,
    "bollard": Bollard,
    "info_panel": InfoPanel,
    "car_park": CarPark,
    "reservoir": Reservoir,
    "waste_container": Waste,
    "building": Building,
    "camera": Camera,
}


class _Channel:
    """One signal of one class: current values, what was last reported, when it is next due."""

    def __init__(self, tags: list[str], spec: TagSpec, fmt: tuple[int, float], due: np.ndarray):
        self.tags, self.kind, self.interval = tags, spec.kind, spec.interval_s
        self.decimals, self.deadband = fmt[0], 0.0 if spec.writable else fmt[1]
        self.value = _blank(spec.kind, len(tags))
        self.last = self.value.copy()
        self.due = due

    def set(self, values: np.ndarray) -> None:
        """Take new values, in reported form (rounded floats)."""
        if self.kind == "float":
            self.value = np.round(np.asarray(values, float), self.decimals) + 0.0  # no -0.0
        else:
            self.value = np.array(values, dtype=self.value.dtype)

    def changes(self, t: float) -> list[tuple[str, Value]]:
        """Return the tags to report now, and remember them as reported."""
        changed = self.value != self.last
        if self.kind == "float" and self.deadband > 0:
            due = self.due <= t
            big = np.abs(self.value - self.last) > self.deadband
            emit = changed & (due | big)
            self.due[due | emit] = t + self.interval
        else:
            emit = changed
        idx = np.flatnonzero(emit)
        if not idx.size:
            return []
        self.last[idx] = self.value[idx]
        return list(
            zip([self.tags[i] for i in idx.tolist()], self.value[idx].tolist(), strict=True)
        )


class Metropolis:
    """Every asset's simulated state, stepped in simulated time, reporting only changes."""

    def __init__(
        self,
        register: Register,
        *,
        seed: int,
        fault_rate_per_hour: float,
        start: datetime,
        timezone: str = "Europe/Paris",
    ):
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware")
        self.tz = ZoneInfo(timezone)
        self._t = start.timestamp()
        by_class: dict[str, list[Asset]] = defaultdict(list)
        for a in register.assets.values():
            by_class[a.asset_class].append(a)
        clk = self._clock(self._t, 0.0)
        phase = np.random.default_rng([seed, 0])
        self._blocks: list[tuple[_Model, dict[str, _Channel]]] = []
        self._where: dict[str, tuple[_Model, _Channel, int]] = {}
        self._models: dict[str, tuple[_Model, int]] = {}
        for cls_id in sorted(by_class):
            assets = by_class[cls_id]
            rng = np.random.default_rng([seed, zlib.crc32(cls_id.encode())])
            model = MODELS.get(cls_id, _Model)(assets, rng, fault_rate_per_hour)
            model.setup(clk)
            out = model.update(clk)
            chans: dict[str, _Channel] = {}
            for spec in assets[0].tags:
                tags = [a.tag(spec.signal) for a in assets]
                due = self._t + phase.uniform(0.0, spec.interval_s, len(assets))
                ch = _Channel(tags, spec, model.FORMAT.get(spec.signal, (3, math.inf)), due)
                if spec.signal in out:
                    ch.set(out[spec.signal])
                ch.last = ch.value.copy()
                chans[spec.signal] = ch
                for i, tag in enumerate(tags):
                    self._where[tag] = (model, ch, i)
            for i, a in enumerate(assets):
                self._models[a.id] = (model, i)
            self._blocks.append((model, chans))
        logger.info("simulating %d assets, %d tags", len(self._models), len(self._where))

    def _clock(self, t: float, dt: float) -> Clock:
        local = datetime.fromtimestamp(t, self.tz)
        hour = local.hour + local.minute / 60 + local.second / 3600
        return Clock(t, dt, hour, local.weekday(), local.date(), self.tz)

    @property
    def now(self) -> datetime:
        """Return the simulated time of the last step (UTC)."""
        return datetime.fromtimestamp(self._t, UTC)

    @property
    def tags(self) -> list[str]:
        """Return every simulated tag name."""
        return list(self._where)

    def values(self) -> dict[str, Value]:
        """Return the last reported value of every tag."""
        return {t: _py(ch.last[i]) for t, (_, ch, i) in self._where.items()}

    def value(self, tag: str) -> Value:
        """Return the last reported value of one tag."""
        _, ch, i = self._where[tag]
        return _py(ch.last[i])

    def step(self, now: datetime) -> list[tuple[str, Value]]:
        """Advance to `now` and return the (tag, value) pairs to report."""
        t = now.timestamp()
        dt = t - self._t
        if dt <= 0:
            return []
        self._t = t
        clk = self._clock(t, dt)
        changes: list[tuple[str, Value]] = []
        for model, chans in self._blocks:
            out = model.update(clk)
            for signal, ch in chans.items():
                if signal in out:
                    ch.set(out[signal])
                changes.extend(ch.changes(t))
        return changes

    def set_setpoint(self, tag: str, value: Any) -> Value | None:
        """Apply a written setpoint from the next step on; return the value accepted."""
        model, ch, i = self._where[tag]
        signal = tag.rsplit("/", 1)[1]
        if signal not in model.sp:
            raise KeyError(f"{tag} is not a writable signal")
        written = model.accept(signal, value)
        if written is None:
            logger.warning("ignored unusable setpoint %r for %s", value, tag)
            return None
        model.sp[signal][i] = written
        # The node now holds what the client wrote; report the accepted value if it differs.
        ch.last[i] = value if ch.kind != "float" else float(value)
        return written

    def force_fault(self, asset_id: str, on: bool | None) -> list[tuple[str, Value]]:
        """Force an asset's fault on or off (None: back to random faults); return changes."""
        model, i = self._models[asset_id]
        model.forced[i] = -1 if on is None else int(on)
        fault = bool(on) if on is not None else bool(model.fault_until[i] > self._t)
        model.fault[i] = fault
        chans = dict(self._blocks)[model]
        ch = chans.get("fault")
        if ch is None:
            return []
        ch.value[i] = fault
        if ch.last[i] == fault:
            return []
        ch.last[i] = fault
        return [(ch.tags[i], fault)]
