"""Daylight at an asset's place, from astral: the suppression of lighting-off alarms by day."""

from __future__ import annotations

import math
from datetime import date, datetime
from zoneinfo import ZoneInfo

from astral import Observer
from astral.sun import elevation, sun


class Daylight:
    """Tell whether the sun is up (between civil dawn and dusk) at a place, cached per day."""

    def __init__(self, timezone: str = "Europe/Paris"):
        self.tz = ZoneInfo(timezone)
        self._day: date | None = None
        self._cells: dict[tuple[float, float], tuple[float, float]] = {}

    def _twilight(self, lat: float, lon: float, day: date) -> tuple[float, float]:
        obs = Observer(lat, lon)
        try:
            s = sun(obs, date=day, tzinfo=self.tz)
            return s["dawn"].timestamp(), s["dusk"].timestamp()
        except ValueError:  # polar day or night: no civil twilight that day
            noon = datetime(day.year, day.month, day.day, 12, tzinfo=self.tz)
            dark = elevation(obs, noon) < -6.0
            return (math.inf, math.inf) if dark else (-math.inf, math.inf)

    def is_day(self, lat: float, lon: float, now: datetime) -> bool:
        """Return True between civil dawn and dusk at (lat, lon), as the cabinets switch."""
        day = now.astimezone(self.tz).date()
        if day != self._day:
            self._day, self._cells = day, {}
        # Places in the same 0.01° cell (~1 km) share a twilight within seconds.
        key = (round(lat, 2), round(lon, 2))
        tw = self._cells.get(key)
        if tw is None:
            tw = self._cells[key] = self._twilight(key[0], key[1], day)
        t = now.timestamp()
        return tw[0] <= t < tw[1]
