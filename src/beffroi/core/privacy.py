"""Privacy of staff positions: who sees where a municipal vehicle is, and how precisely.

A vehicle driven by the city's staff (police, road works, cleansing, waste collection) tells
where a person is. Only roles that need it for their work see the exact position; everyone
else sees it snapped to a coarse grid (`[privacy] coarse_position_m`), the same grid wherever
it is shown (map, trends, the token API), so that two views cannot be combined into more.
Classes without `personal_positions` (buses, fixed equipment) are always shown as they are.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from beffroi.core.config import Slug, Strict

if TYPE_CHECKING:
    from beffroi.core.register import Register
    from beffroi.core.site import Site

# The signals that carry a position, in every class template that has one.
POSITION_SIGNALS = ("lat", "lon")
METRES_PER_DEG_LAT = 111_320.0


class PrivacyConfig(Strict):
    """`[privacy]`: which roles see staff positions exactly, and the grid everyone else sees."""

    precise_position_roles: list[Slug] = Field(
        default=["supervisor", "admin"],
        description="roles whose work needs the exact position of a staff vehicle",
    )
    coarse_position_m: float = Field(
        default=500.0, ge=50.0, le=20_000.0, description="cell size of the coarse grid"
    )
    api_role: Slug = Field(
        default="viewer",
        description="role the token API answers as (scripts, exports): coarse unless precise",
    )

    @field_validator("precise_position_roles")
    @classmethod
    def _unique(cls, roles: list[str]) -> list[str]:
        dupes = sorted({r for r in roles if roles.count(r) > 1})
        if dupes:
            raise ValueError(f"roles listed twice: {', '.join(dupes)}")
        return roles


def privacy_problems(site: Site, roles: Sequence[str]) -> list[str]:
    """Check that `[privacy]` names only roles the HMI knows."""
    cfg = site.privacy
    known = ", ".join(roles)
    problems = [
        f"privacy.precise_position_roles[{i}]: unknown role {r!r}; expected one of {known}"
        for i, r in enumerate(cfg.precise_position_roles)
        if r not in roles
    ]
    if cfg.api_role not in roles:
        problems.append(f"privacy.api_role: unknown role {cfg.api_role!r}; expected one of {known}")
    return problems


class PositionPolicy:
    """Decide, per role and asset class, whether a position is shown exactly or coarsely."""

    def __init__(
        self,
        personal_classes: Iterable[str],
        precise_roles: Iterable[str],
        coarse_m: float = 500.0,
        ref_lat: float = 47.3,
    ) -> None:
        if not (math.isfinite(coarse_m) and coarse_m > 0):
            raise ValueError(f"coarse_m: expected a positive number of metres, got {coarse_m!r}")
        self.personal_classes = frozenset(personal_classes)
        self.precise_roles = frozenset(precise_roles)
        self.coarse_m = coarse_m
        # One longitude step for the whole site (at its mean latitude), so that a lon tag read
        # alone (trends, API) snaps to the same cells as a (lat, lon) pair on the map.
        self.step_lat = coarse_m / METRES_PER_DEG_LAT
        self.step_lon = coarse_m / (METRES_PER_DEG_LAT * max(math.cos(math.radians(ref_lat)), 0.01))

    @classmethod
    def from_config(cls, cfg: Site) -> PositionPolicy:
        """Build the policy of a site: its personal classes and its `[privacy]` section."""
        lats = [c.lat for c in cfg.communes]
        return cls(
            (k for k, c in cfg.asset_classes.items() if c.personal_positions),
            cfg.privacy.precise_position_roles,
            cfg.privacy.coarse_position_m,
            sum(lats) / len(lats) if lats else 47.3,
        )

    def personal(self, asset_class: str) -> bool:
        """Tell whether a class's position is a staff member's (a municipal vehicle)."""
        return asset_class in self.personal_classes

    def precise(self, role: str | None) -> bool:
        """Tell whether a role's work needs exact staff positions."""
        return role is not None and role in self.precise_roles

    def exact_for(self, role: str | None, asset_class: str | None) -> bool:
        """Tell whether a role sees this class's positions exactly (unknown class: coarse)."""
        if asset_class is not None and not self.personal(asset_class):
            return True
        return self.precise(role)

    def coarse_lat(self, lat: float) -> float:
        """Return the centre latitude of the grid cell holding `lat`."""
        return _snap(lat, self.step_lat)

    def coarse_lon(self, lon: float) -> float:
        """Return the centre longitude of the grid cell holding `lon`."""
        return _snap(lon, self.step_lon)

    def show(
        self, role: str | None, asset_class: str, lat: float, lon: float
    ) -> tuple[float, float]:
        """Return the position a role may see: exact, or the centre of its coarse grid cell."""
        if self.exact_for(role, asset_class):
            return lat, lon
        return self.coarse_lat(lat), self.coarse_lon(lon)

    def coarsen(self, signal: str, value: float) -> float:
        """Return a `lat` or `lon` value snapped to the grid; other signals unchanged."""
        if signal == "lat":
            return self.coarse_lat(value)
        if signal == "lon":
            return self.coarse_lon(value)
        return value

    def shown_value(self, signal: str, value: object) -> float:
        """Return a stored position value as a coarse reader sees it, whatever its type.

        Fails closed: any real number (numpy's included) is snapped, whatever its quality (a
        value marked CommLoss may still carry the position); anything else is no value.
        """
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            return math.nan
        number = float(value)
        return self.coarsen(signal, number) if math.isfinite(number) else math.nan


@dataclass(frozen=True, slots=True)
class PositionViewer:
    """One reader of stored values (a user's role, the token API) and the policy it is under."""

    policy: PositionPolicy
    role: str | None
    register: Register

    def hidden(self, tags: Iterable[str]) -> set[str]:
        """Return the position tags this reader sees only coarsely."""
        if self.policy.precise(self.role):
            return set()
        out: set[str] = set()
        for tag in tags:
            parts = tag.split("/")
            if len(parts) != 3 or parts[2] not in POSITION_SIGNALS:
                continue
            asset = self.register.assets.get(parts[1]) or self.register.retired.get(parts[1])
            # An asset the register does not know (any more) may have been a vehicle: coarse.
            if not self.policy.exact_for(self.role, asset.asset_class if asset else None):
                out.add(tag)
        return out


def _snap(value: float, step: float) -> float:
    """Return the centre of the cell of width `step` holding `value` (NaN stays NaN)."""
    if not math.isfinite(value):
        return value
    return round((math.floor(value / step) + 0.5) * step, 6)
