"""Distances on the ground between assets and places, and who is near whom."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable

from beffroi.core.model import Asset

EARTH_M = 6_371_008.8


def distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    """Return the great-circle distance in metres (haversine)."""
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_M * math.asin(min(1.0, math.sqrt(h)))


def near(
    assets: Iterable[Asset], lat: float, lon: float, within_m: float, nearest: int | None = None
) -> list[tuple[Asset, float]]:
    """Return (asset, distance) within a radius, nearest first, at most `nearest` of them."""
    found = [(a, distance_m(lat, lon, a.lat, a.lon)) for a in assets]
    found = sorted((f for f in found if f[1] <= within_m), key=lambda f: (f[1], f[0].id))
    return found[:nearest] if nearest else found


class GridIndex:
    """Assets bucketed in ~1 km cells, for neighbours within a few hundred metres at scale."""

    CELL = 0.01  # degrees of latitude, ~1.1 km

    def __init__(self, assets: Iterable[Asset]):
        self._cells: dict[tuple[int, int], list[Asset]] = defaultdict(list)
        for a in assets:
            self._cells[self._key(a.lat, a.lon)].append(a)

    def _key(self, lat: float, lon: float) -> tuple[int, int]:
        return math.floor(lat / self.CELL), math.floor(lon / self.CELL)

    def within(self, lat: float, lon: float, radius_m: float) -> list[Asset]:
        """Return the assets within radius_m of a place."""
        span = math.ceil(radius_m / 1000.0 / 0.55) + 1  # cells are ≥ 0.55 km wide here
        ki, kj = self._key(lat, lon)
        out = []
        for i in range(ki - span, ki + span + 1):
            for j in range(kj - span, kj + span + 1):
                for a in self._cells.get((i, j), ()):
                    if distance_m(lat, lon, a.lat, a.lon) <= radius_m:
                        out.append(a)
        return out
