"""Vectorised dynamics of the simulated equipment, one model per asset class; no protocol code."""

from __future__ import annotations

import math
import zlib
from datetime import date, datetime
from typing import ClassVar
from zoneinfo import ZoneInfo

import numpy as np
from astral import Observer
from astral.sun import elevation, sun

from beffroi.core.model import Value
from beffroi.simulator.equipment import Clock, Model

DAY_S = 86_400.0
KM_PER_DEG = 111.0


def _plateau(h: float, start: float, end: float, k: float = 1.5) -> float:
    """Return ~1 between two local hours and ~0 outside, with smooth edges."""
    return 1.0 / (1.0 + math.exp(-(h - start) * k)) / (1.0 + math.exp((h - end) * k))


def _peak(h: float, at: float, width: float) -> float:
    return math.exp(-(((h - at) / width) ** 2))


class _Outages(Model):
    """Equipment with a network link: `online` drops during rare outages of a few minutes."""

    def setup(self, clk: Clock) -> None:
        self.offline_until = np.full(self.n, -np.inf)

    def evolve(self, clk: Clock) -> dict[str, np.ndarray]:
        new = self.events(self.fault_rate * 3600 / 3, clk.dt) & (self.offline_until <= clk.t)
        self.offline_until[new] = clk.t + self.rng.uniform(60.0, 900.0, int(new.sum()))
        return {"online": self.offline_until <= clk.t}


class Lighting(Model):
    """Street-lighting cabinet: lit from dusk to dawn, power = installed x dimming."""

    FORMAT: ClassVar = {"power_kw": (2, 0.25), "energy_kwh": (2, math.inf), "dimming_pct": (1, 0)}
    COUNTERS: ClassVar = ("energy_kwh",)

    def resume(self, signal: str, i: int, value: float) -> bool:
        if signal != "energy_kwh":
            return False
        self.energy[i] = value
        return True

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


FLASHING_PLAN = 9.0  # plans 0-8 run the junction; 9 is flashing amber (config.toml [control])
RECOVERY_S = 90.0  # after a grant the cross streets get their green back: about one cycle


class Traffic(Model):
    """Traffic-light controller: runs the plan it is told; grants or refuses bus priority."""

    # Each bus reaching the junction asks for priority, and the request counter counts it. The
    # green is extended or brought forward unless the controller is faulted or flashing amber,
    # granted one less than RECOVERY_S before, or the running phase cannot be cut short (a
    # pedestrian crossing): a share of requests that depends on the junction. Like a real
    # controller's, both counters only ever increase. They report each change at once, both in
    # the same step: a grant is never reported before the request it answers.
    FORMAT: ClassVar = {
        "bus_priority_requests": (0, 0),
        "bus_priority_granted": (0, 0),
        "plan": (0, 0),
    }
    COUNTERS: ClassVar = ("bus_priority_requests", "bus_priority_granted")

    def resume(self, signal: str, i: int, value: float) -> bool:
        if signal == "bus_priority_requests":
            self.requests[i] = value
        elif signal == "bus_priority_granted":
            self.granted[i] = value
        else:
            return False
        return True

    def setup(self, clk: Clock) -> None:
        r, n = self.rng, self.n
        self.plan = self.bind("plan", r.choice([0.0, 0.0, 0.0, 0.0, 1.0, 2.0], n))
        self.requests = r.integers(0, 5_000, n).astype(float)
        self.lines = r.uniform(0.5, 1.5, n)  # bus lines through this junction, vs the average
        self.bendable = r.uniform(0.8, 0.97, n)  # share of the cycle priority may cut into
        # The counters have run since commissioning: granted started at a plausible share.
        self.granted = np.floor(self.requests * self.bendable * r.uniform(0.75, 0.9, n))
        self.last_grant = np.full(n, -np.inf)

    def accept(self, signal: str, value: Value) -> Value | None:
        v = super().accept(signal, value)
        if signal == "plan" and v is not None:
            assert not isinstance(v, str)  # plan is a number signal (the register's template)
            return float(round(v))
        return v

    def evolve(self, clk: Clock) -> dict[str, np.ndarray]:
        r, dt, h = self.rng, clk.dt, clk.hour
        per_h = 12.0 if (7 <= h < 9.5 or 16.5 <= h < 19) else (8.0 if 6 <= h < 21 else 1.0)
        asks = r.poisson(self.lines * per_h * dt / 3600.0)
        if asks.any():
            self._decide(clk, asks)
        return {"bus_priority_requests": self.requests, "bus_priority_granted": self.granted}

    def _decide(self, clk: Clock, asks: np.ndarray) -> None:
        """Count the requests of this step and grant them in order of arrival."""
        k = int(asks.max())
        # Arrival times within the step, in order; columns past a junction's count stay unused.
        used = np.arange(k) < asks[:, None]
        u = self.rng.uniform(0.0, clk.dt, (self.n, k))
        at = clk.t - clk.dt + np.sort(np.where(used, u, np.inf), axis=1)
        phase_ok = self.rng.random((self.n, k)) < self.bendable[:, None]
        able = ~self.fault & (self.plan != FLASHING_PLAN)
        for j in range(k):
            grant = (asks > j) & able & phase_ok[:, j] & (at[:, j] - self.last_grant >= RECOVERY_S)
            self.last_grant[grant] = at[grant, j]
            self.granted += grant
        self.requests += asks


class Bus(Model):
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


class Bollard(Model):
    """Retractable bollard: moves to the commanded position; jammed, refuses it; vehicles pass."""

    def setup(self, clk: Clock) -> None:
        self.raised = self.rng.random(self.n) < 0.7
        self.command = self.bind("raised", self.raised.copy())
        self.presence_until = np.full(self.n, -np.inf)

    def refusal(self, signal: str, i: int) -> str | None:
        # A jammed bollard's controller locks out commands until the fault is reset on site.
        return "jammed" if self.fault[i] else None

    def evolve(self, clk: Clock) -> dict[str, np.ndarray]:
        ok = ~self.fault
        self.raised[ok] = self.command[ok]
        self.command[~ok] = self.raised[~ok]  # an order taken just before the jam is dropped
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


class CarPark(Model):
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


class Reservoir(Model):
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


class Waste(Model):
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


class Building(Model):
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


# The municipal fleet's modes: parked, on its shift's loop, back to the depot after the shift.
DEPOT, ON_SHIFT, RETURNING = 0, 1, 2
METRES_PER_DEG = 111_320.0


class Fleet(Model):
    """Municipal vehicle: parked at its depot out of hours; on shift, laps of its commune's streets.

    Each vehicle's round is a closed loop from its depot (its place in the register) through
    waypoints on a street grid of its commune (one orientation per commune, blocks of GRID_M,
    every fourth street a main road), turning at the grid's corners. Speed follows the road type
    and the hour; the service says when it works (`shifts`), what it does while moving (its
    state and, for work done at walking pace, its speed) and how it stops. At the end of a shift
    it finishes its lap back to the depot. Correct for steps from a second to a quarter of an
    hour: moving time is what is left of a step after a stop, a lap back ends at the depot.
    """

    FORMAT: ClassVar = {"lat": (6, math.inf), "lon": (6, math.inf), "speed_kmh": (1, 5.0)}
    GRID_M = 300.0
    K = 6  # waypoints of a round, besides the depot
    RADIUS_KM = (0.7, 1.8)
    MOVING = "driving"  # state while moving on shift
    WORK_KMH: float | None = None  # speed while working along the round (sweeping, collecting)
    PATROL = 1.0  # share of the road's speed while moving on shift
    PAUSE_PER_H = 0.5  # stops per hour on shift
    PAUSE_MIN = (5.0, 15.0)  # their length
    PAUSE_STATE = "stopped"

    def shifts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return each vehicle's shift windows: local start and end hours (n, 2), days (n, 7).

        An end past 24 runs into the next day; a window with start == end is unused.
        """
        n = self.n
        return np.full((n, 2), 8.0), np.tile([17.0, 8.0], (n, 1)), np.ones((n, 7), bool)

    def setup(self, clk: Clock) -> None:
        r, n, k, g = self.rng, self.n, self.K, self.GRID_M
        self.start_h, self.end_h, self.days = self.shifts()
        # The street grid's orientation is its commune's: every vehicle there follows the same.
        theta = np.array(
            [zlib.crc32(a.commune.encode()) % 9000 / 9000 * math.pi / 2 for a in self.assets]
        )[:, None]
        ang = np.arange(1, k + 1) * 2 * np.pi / (k + 1) + r.uniform(-0.25, 0.25, (n, k))
        ang += r.uniform(0, 2 * np.pi, (n, 1))
        rad = r.uniform(*self.RADIUS_KM, (n, 1)) * r.uniform(0.7, 1.2, (n, k)) * 1000.0
        u = np.round(rad * np.cos(ang) / g) * g  # along the grid's streets, in metres
        v = np.round(rad * np.sin(ang) / g) * g
        zero = np.zeros((n, 1))
        u, v = np.hstack([zero, u, zero]), np.hstack([zero, v, zero])  # depot, waypoints, depot
        # Between waypoints: along u first, then along v, turning at the corner (u[j+1], v[j]).
        pu = np.empty((n, 2 * (k + 1) + 1))
        pv = np.empty_like(pu)
        pu[:, 0::2], pv[:, 0::2] = u, v
        pu[:, 1::2], pv[:, 1::2] = u[:, 1:], v[:, :-1]
        x = pu * np.cos(theta) - pv * np.sin(theta)  # east, metres
        y = pu * np.sin(theta) + pv * np.cos(theta)  # north, metres
        coslat = np.cos(np.radians(self.lat))[:, None]
        self.wlat = self.lat[:, None] + y / METRES_PER_DEG
        self.wlon = self.lon[:, None] + x / (METRES_PER_DEG * coslat)
        du, dv = np.diff(pu), np.diff(pv)
        self.seg = np.maximum(np.abs(du) + np.abs(dv), 1.0)
        # Every fourth street of the grid is a main road: its own line index, along u or v.
        line = np.where(np.abs(du) > 0, pv[:, :-1], pu[:, :-1]) / g
        self.main = np.round(line) % 4 == 0
        self.cum = np.hstack([zero, np.cumsum(self.seg, axis=1)])
        self.total = self.cum[:, -1]
        self.mode = np.full(n, DEPOT, np.int8)
        self.s = np.zeros(n)
        self.pause_until = np.full(n, -np.inf)
        self.pace = r.uniform(0.85, 1.1, n)  # drivers and vehicles differ
        self.speed = np.zeros(n)

    def on_duty(self, clk: Clock) -> np.ndarray:
        """Return which vehicles are within one of their shifts at this local time."""
        h, wd = clk.hour, clk.weekday
        today = self.days[:, wd][:, None]
        yesterday = self.days[:, (wd - 1) % 7][:, None]
        within = (self.start_h <= h) & (h < self.end_h) & today
        carried = (h + 24.0 < self.end_h) & yesterday  # a night shift begun yesterday
        return (within | carried).any(axis=1)

    def _segment(self) -> np.ndarray:
        """Return the index of the segment each vehicle is on."""
        last = self.cum.shape[1] - 2
        return np.minimum((self.cum[:, 1:-1] <= self.s[:, None]).sum(axis=1), last)

    def evolve(self, clk: Clock) -> dict[str, np.ndarray]:
        r, t, dt, h, n = self.rng, clk.t, clk.dt, clk.hour, self.n
        on = self.on_duty(clk)
        leave = (self.mode == DEPOT) & on & ~self.fault
        self.mode[leave], self.s[leave] = ON_SHIFT, 0.0
        done = (self.mode == ON_SHIFT) & ~on
        self.mode[done], self.pause_until[done] = RETURNING, -np.inf
        rows = np.arange(n)
        i = self._segment()
        rush = 7 <= h < 9.5 or 16.5 <= h < 19
        traffic = 0.65 if rush else (1.15 if h < 6 or h >= 22 else 1.0)
        road = np.where(self.main[rows, i], 45.0, 28.0) * traffic * self.pace
        road = road * np.clip(1 + r.normal(0, 0.08, n), 0.7, 1.3)
        if dt > 120:  # coarse steps: an average over lights and junctions
            road = road * 0.85
        # Working services go to their round and back at road speed, and work along the rest.
        transit = (self.s < self.cum[:, 2]) | (self.s >= self.cum[:, -3])
        working = (self.mode == ON_SHIFT) & ~transit & (self.WORK_KMH is not None)
        v = np.where(self.mode == ON_SHIFT, road * self.PATROL, road)
        if self.WORK_KMH is not None:
            v = np.where(working, self.WORK_KMH * self.pace, v)
        stopped_for = np.clip(self.pause_until - (t - dt), 0.0, dt)
        moving_s = np.where((self.mode != DEPOT) & ~self.fault, dt - stopped_for, 0.0)
        s = self.s + v / 3.6 * moving_s
        on_lap = self.mode == ON_SHIFT
        self.s = np.where(on_lap, s % self.total, np.minimum(s, self.total))
        home = (self.mode == RETURNING) & (self.s >= self.total)
        self.mode[home], self.s[home] = DEPOT, 0.0
        new = on_lap & (self.pause_until <= t) & self.events(self.PAUSE_PER_H, dt)
        self.pause_until[new] = t + r.uniform(*self.PAUSE_MIN, int(new.sum())) * 60.0
        paused = on_lap & (self.pause_until > t)
        moving = (self.mode != DEPOT) & ~self.fault & ~paused
        self.speed = np.where(moving, v, 0.0)
        state = np.where(working, "working", self.MOVING).astype(object)
        state[self.mode == RETURNING] = "driving"
        state[paused] = self.PAUSE_STATE
        state[(self.mode != DEPOT) & self.fault] = "stopped"  # broken down where it was
        state[self.mode == DEPOT] = "depot"
        i = self._segment()
        f = (self.s - self.cum[rows, i]) / self.seg[rows, i]
        lat = self.wlat[rows, i] + f * (self.wlat[rows, i + 1] - self.wlat[rows, i])
        lon = self.wlon[rows, i] + f * (self.wlon[rows, i + 1] - self.wlon[rows, i])
        return {"lat": lat, "lon": lon, "speed_kmh": self.speed, "state": state}


def _jitter(r: np.random.Generator, n: int, hours: float) -> np.ndarray:
    """Return start offsets of up to ±hours, by quarters of an hour."""
    return np.round(r.uniform(-hours, hours, n) * 4) / 4


def _one_window(
    start: np.ndarray, end: np.ndarray, days: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return shifts of one window a day (the second unused) on the same weekdays for all."""
    zero = np.zeros_like(start)
    return (
        np.stack([start, zero], 1),
        np.stack([end, zero], 1),
        np.tile(days, (len(start), 1)),
    )


class PoliceVehicle(Fleet):
    """Police municipale: 24/7 in three shifts, each car on two of them; patrols, stops."""

    MOVING = "patrol"
    PATROL = 0.7
    PAUSE_PER_H = 1.0
    PAUSE_MIN = (5.0, 20.0)

    def shifts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        starts = np.array([6.0, 14.0, 22.0])
        k = np.arange(self.n) % 3
        start = np.stack([starts[k], starts[(k + 1) % 3]], axis=1)
        return start, start + 8.0, np.ones((self.n, 7), bool)


class MaintenanceVan(Fleet):
    """Road maintenance: weekdays 7:30-12:00 and 13:30-16:30, stopping at work sites."""

    PAUSE_PER_H = 0.8
    PAUSE_MIN = (30.0, 120.0)
    PAUSE_STATE = "working"

    def shifts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self.n
        start = np.tile([7.5, 13.5], (n, 1))
        days = np.tile(np.arange(7) < 5, (n, 1))
        return start, np.tile([12.0, 16.5], (n, 1)), days


class StreetSweeper(Fleet):
    """Street cleansing: early morning (5:00-11:30) or night (20:00-01:30) crews, Mon-Sat."""

    MOVING = "working"
    WORK_KMH = 8.0
    PAUSE_PER_H = 0.3
    PAUSE_MIN = (10.0, 20.0)

    def shifts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self.n
        night = np.arange(n) % 5 >= 3  # two crews in five work at night
        start = np.where(night, 20.0, 5.0) + _jitter(self.rng, n, 0.5)
        return _one_window(start, start + np.where(night, 5.5, 6.5), np.arange(7) < 6)


class WasteTruck(Fleet):
    """Waste collection: from about 5:00 to 12:00, Mon-Sat, stop-and-go along its round."""

    MOVING = "working"
    WORK_KMH = 9.0
    PAUSE_PER_H = 0.2
    PAUSE_MIN = (15.0, 30.0)

    def shifts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n = self.n
        start = 5.0 + _jitter(self.rng, n, 0.5)
        return _one_window(start, start + 7.0, np.arange(7) < 6)


MODELS: dict[str, type[Model]] = {
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
    "police_vehicle": PoliceVehicle,
    "maintenance_van": MaintenanceVan,
    "street_sweeper": StreetSweeper,
    "waste_truck": WasteTruck,
}
