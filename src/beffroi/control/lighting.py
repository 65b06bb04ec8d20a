"""Adaptive street lighting: a dimming schedule per cabinet, applied through the setpoint service.

Each cabinet's level follows its own place's civil dusk and dawn (astral) plus offsets: the
evening level from dusk, a reduced level in the middle of the night, the day level after dawn;
a presence boost while a presence sensor near the cabinet has seen someone recently. The
cabinet class has no presence sensor of its own in the demo, so a cabinet uses the `presence`
signal of any asset within `presence_radius_m` (bollards), its own included if its class has one;
a cabinet with no sensor near it gets no boost. Commands go out as the `system` user, audited
like any other; setpoints held by an operator or a playbook are left alone.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import elevation, sun

from beffroi.control.config import ControlSite, LightingLevels
from beffroi.control.config import LightingScheduleConfig as LightingConfig
from beffroi.control.geo import GridIndex
from beffroi.control.model import SYSTEM
from beffroi.control.setpoints import SetpointService
from beffroi.core.live import LiveValues
from beffroi.core.model import Asset, Quality, utcnow
from beffroi.core.register import Register

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Levels:
    """The schedule of one cabinet: offsets, levels and the night window."""

    dusk_offset_min: float
    dawn_offset_min: float
    evening_pct: float
    night_pct: float
    night_start: str
    night_end: str
    presence_pct: float
    day_pct: float

    @classmethod
    def merged(cls, base: LightingConfig, over: LightingLevels | None) -> Levels:
        """Return the default schedule with a profile's keys laid over it."""

        def pick(name: str) -> Any:
            v = getattr(over, name, None) if over is not None else None
            return getattr(base, name) if v is None else v

        return cls(*(pick(f) for f in cls.__slots__))


def _hm(text: str) -> time:
    return time(0) if text == "24:00" else time(int(text[:2]), int(text[3:]))


def in_window(t: time, start: str, end: str) -> bool:
    """Tell whether a local time is within [start, end), the window crossing midnight if needed."""
    a, b = _hm(start), _hm(end)
    if a == b:
        return False
    return a <= t < b if a < b else (t >= a or t < b)


class Twilight:
    """Civil dawn and dusk per place (~1 km cells) and local day, from astral."""

    def __init__(self, timezone: str):
        self.tz = ZoneInfo(timezone)
        self._cache: dict[tuple[float, float, date], tuple[datetime, datetime]] = {}

    def of(self, lat: float, lon: float, day: date) -> tuple[datetime, datetime]:
        """Return (dawn, dusk) of a local day; polar days and nights as extreme times."""
        key = (round(lat, 2), round(lon, 2), day)
        if key not in self._cache:
            if len(self._cache) > 100_000:  # days go by: forget old ones
                self._cache.clear()
            obs = Observer(key[0], key[1])
            try:
                s = sun(obs, date=day, tzinfo=self.tz)
                self._cache[key] = (s["dawn"], s["dusk"])
            except ValueError:  # no civil twilight: dark all day, or light all day
                noon = datetime(day.year, day.month, day.day, 12, tzinfo=self.tz)
                lo, hi = datetime.min.replace(tzinfo=self.tz), datetime.max.replace(tzinfo=self.tz)
                dark = elevation(obs, noon) < -6.0
                self._cache[key] = (hi, hi) if dark else (lo, hi)
        return self._cache[key]


def target_pct(
    levels: Levels, dawn: datetime, dusk: datetime, now: datetime, local: time, boosted: bool
) -> tuple[float, str]:
    """Return a cabinet's dimming level now and why (pure: the schedule's rules)."""
    try:
        on_at = dusk + timedelta(minutes=levels.dusk_offset_min)
        off_at = dawn + timedelta(minutes=levels.dawn_offset_min)
    except OverflowError:  # polar extremes
        on_at, off_at = dusk, dawn
    if off_at <= now < on_at:
        return levels.day_pct, "day"
    if in_window(local, levels.night_start, levels.night_end):
        level, why = levels.night_pct, "night reduction"
    else:
        level, why = levels.evening_pct, "dusk to night"
    if boosted and levels.presence_pct > level:
        return levels.presence_pct, "presence"
    return level, why


class LightingScheduler:
    """Compute every cabinet's level each tick and command the ones that differ."""

    def __init__(
        self,
        cfg: ControlSite,
        register: Register,
        live: LiveValues,
        setpoints: SetpointService,
        *,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.lc = cfg.control.lighting
        self.live, self.setpoints, self.clock = live, setpoints, clock
        self.tz = ZoneInfo(cfg.metropolis.timezone)
        self.twilight = Twilight(cfg.metropolis.timezone)
        self.register = register
        self.cabinets: list[Asset] = []
        self.levels: dict[str, Levels] = {}
        self.sensors: dict[str, list[str]] = {}
        self._revision = -1
        self._take_register()
        self._boost_until: dict[str, datetime] = {}
        self._retry_at: dict[str, datetime] = {}
        self._busy: set[str] = set()
        self.closed = False
        self.commands = 0

    def _take_register(self) -> None:
        """List the cabinets, their levels and nearby sensors from the register as it is.

        Called again at the first tick after the register changed: a cabinet imported or
        discovered while running is scheduled, a moved one gets its own twilight, and a
        retired one or one removed at source is no longer commanded.
        """
        register, lc = self.register, self.lc
        revision = register.revision
        tags = register.tags
        cabinets = [
            a
            for a in register.assets.values()
            if a.asset_class == lc.asset_class
            and a.state != "removed"
            and (not lc.communes or a.commune in lc.communes)
            and a.tag(lc.signal) in tags
            and tags[a.tag(lc.signal)].writable
        ]
        with_sensor = [a for a in register.assets.values() if a.tag(lc.presence_signal) in tags]
        index = GridIndex(with_sensor)
        self.levels = {a.id: Levels.merged(lc, self._profile(a)) for a in cabinets}
        self.sensors = {
            a.id: [
                s.tag(lc.presence_signal) for s in index.within(a.lat, a.lon, lc.presence_radius_m)
            ]
            for a in cabinets
        }
        self.cabinets = cabinets
        first = self._revision < 0
        self._revision = revision
        log.log(
            logging.INFO if first else logging.DEBUG,
            "lighting schedule for %d cabinets, %d with presence sensors within %g m",
            len(cabinets),
            sum(1 for v in self.sensors.values() if v),
            lc.presence_radius_m,
        )

    def _profile(self, asset: Asset) -> LightingLevels | None:
        for p in self.lc.profiles:
            if asset.id in p.assets or asset.commune in p.communes:
                return p
        return None

    def _boosted(self, cab: Asset, now: datetime) -> bool:
        """Tell whether someone was seen near the cabinet within presence_hold_s."""
        for tag in self.sensors.get(cab.id, ()):
            s = self.live.get(tag)
            if s is not None and s.quality is Quality.GOOD and s.value is True:
                self._boost_until[cab.id] = now + timedelta(seconds=self.lc.presence_hold_s)
                return True
        until = self._boost_until.get(cab.id)
        return until is not None and now < until

    def target(self, cab: Asset, now: datetime) -> tuple[float, str]:
        """Return the level a cabinet should have now, and why."""
        local = now.astimezone(self.tz)
        dawn, dusk = self.twilight.of(cab.lat, cab.lon, local.date())
        boosted = self._boosted(cab, now)
        return target_pct(self.levels[cab.id], dawn, dusk, now, local.time(), boosted)

    def due(self, now: datetime) -> list[tuple[Asset, str, float, str]]:
        """Return the cabinets whose reported level differs from their target."""
        if self.register.revision != self._revision:
            self._take_register()
        out = []
        for cab in self.cabinets:
            tag = cab.tag(self.lc.signal)
            if tag in self._busy or self._retry_at.get(cab.id, now) > now:
                continue
            if self.setpoints.held(tag) is not None:
                continue  # an operator or a playbook has it
            s = self.live.get(tag)
            if s is None or s.quality is not Quality.GOOD or isinstance(s.value, str | bool):
                continue  # no known state (communication lost): nothing sensible to send
            pct, why = self.target(cab, now)
            if math.isfinite(s.value) and abs(s.value - pct) <= self.lc.tolerance_pct:
                continue
            out.append((cab, tag, pct, why))
        return out

    async def tick(self) -> int:
        """Send the commands due now (the scheduler's job); return how many were sent."""
        if self.closed:
            return 0
        todo = self.due(self.clock())
        if todo:
            await asyncio.gather(*(self._apply(*item) for item in todo))
        return len(todo)

    async def _apply(self, cab: Asset, tag: str, pct: float, why: str) -> None:
        self._busy.add(tag)
        try:
            result = await self.setpoints.command(
                SYSTEM, tag, pct, f"lighting schedule: {why}", source="lighting", wait_rate=True
            )
        finally:
            self._busy.discard(tag)
        self.commands += 1
        if not result.ok:
            # Left alone for a while: a broken cabinet must not fill the audit log every tick.
            self._retry_at[cab.id] = self.clock() + timedelta(seconds=self.lc.retry_after_s)
            log.info(
                "lighting: %s not set to %g%% (%s): %s", tag, pct, result.outcome, result.detail
            )

    def status(self) -> dict[str, Any]:
        """Return counters for /healthz."""
        return {"cabinets": len(self.cabinets), "commands": self.commands}
