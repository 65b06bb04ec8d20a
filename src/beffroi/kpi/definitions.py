"""The KPI catalogue: units, formulas, the hourly components they are made of, series names.

Every KPI is a function of additive hourly components (kWh, seconds, counts) summed over the
period, so a day is the sum of its 23, 24 or 25 hours and a month the sum of its days; ratios
are taken last. Stored series (historian tags outside the register):

    _kpi/<kpi>.<resolution>/<scope>            the value, at the period's start (UTC)
    _kpi/<kpi>.<resolution>.coverage/<scope>   % of the period backed by Good-quality inputs

resolution is hour, day or month (local days and months); scope is `metropolis` or a commune
id, optionally followed by `/domain-<domain>` or `/class-<class>`. The value's quality is Good
when only measured data went into it, Uncertain when gap-filled inputs did, and Bad (no value)
when it is undefined (no data, a ratio over zero).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from beffroi.kpi.periods import Resolution

PREFIX = "_kpi/"
TOTALS = frozenset(
    {"energy_kwh", "lighting_kwh", "lighting_baseline_kwh", "bus_priority_requests",
     "car_park_full_h", "waste_collections"}
)  # fmt: skip
METROPOLIS = "metropolis"
COVERAGE = "coverage"
Components = Mapping[str, np.ndarray]


def _ratio(num: np.ndarray, den: np.ndarray, scale: float = 1.0) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, scale * num / np.where(den > 0, den, 1.0), np.nan)


@dataclass(frozen=True, slots=True)
class KpiDef:
    """One KPI: unit, formula, the components it is computed from, the breakdowns it has."""

    name: str
    family: str
    unit: str
    label: str
    formula: str
    components: tuple[str, ...]
    coverage_from: tuple[str, ...]
    value: Callable[[Components, Mapping[str, float]], np.ndarray]
    resolutions: tuple[Resolution, ...] = ("day", "month")

    @property
    def is_total(self) -> bool:
        """Tell whether the KPI is a plain sum (kWh, counts): 0 without data means nothing."""
        return self.name in TOTALS


def _c(name: str) -> Callable[[Components, Mapping[str, float]], np.ndarray]:
    return lambda c, _p: c[name]


def _savings(c: Components, _p: Mapping[str, float]) -> np.ndarray:
    return 100.0 - _ratio(c["lighting_kwh"], c["lighting_baseline_kwh"], 100.0)


KPIS: tuple[KpiDef, ...] = (
    KpiDef(
        "energy_kwh", "energy", "kWh", "Energy",
        "sum over the scope's assets of the energy in the period: increase of the kWh counter "
        "(rollovers and resets unwrapped) or time integral of the kW power, both cut at the "
        "period's edges by interpolation",
        ("energy_kwh",), ("energy_kwh",), _c("energy_kwh"), ("hour", "day", "month"),
    ),
    KpiDef(
        "lighting_kwh", "lighting", "kWh", "Public lighting, measured",
        "measured energy of the cabinets that have a baseline",
        ("lighting_kwh",), ("lighting_kwh",), _c("lighting_kwh"),
    ),
    KpiDef(
        "lighting_baseline_kwh", "lighting", "kWh", "Public lighting, baseline",
        "sum over cabinets of pre-renovation installed kW × hours between dusk and dawn at the "
        "cabinet's place (astral, sun below the configured depression), counted while the "
        "cabinet's measured energy is known, so that both cover the same time",
        ("lighting_baseline_kwh",), ("lighting_baseline_kwh",), _c("lighting_baseline_kwh"),
    ),
    KpiDef(
        "lighting_savings_pct", "lighting", "%", "Lighting savings",
        "100 × (1 - lighting_kwh / lighting_baseline_kwh)",
        ("lighting_kwh", "lighting_baseline_kwh"), ("lighting_kwh",), _savings,
    ),
    KpiDef(
        "lighting_progress_pct", "lighting", "%", "Progress toward the savings target",
        "100 × lighting_savings_pct / target_pct",
        ("lighting_kwh", "lighting_baseline_kwh"), ("lighting_kwh",),
        lambda c, p: 100.0 * _savings(c, p) / p["target_pct"],
    ),
    KpiDef(
        "availability_pct", "availability", "%", "Availability",
        "100 × time in service / time known (in service, faulted, or in CommLoss when it "
        "counts as down); in service = every down condition false and data Good",
        ("up_s", "known_s"), ("known_s",), lambda c, _p: _ratio(c["up_s"], c["known_s"], 100.0),
    ),
    KpiDef(
        "mttr_h", "availability", "h", "Mean time to repair",
        "sum of (clear - activation) of fault alarms cleared in the period / their number",
        ("repair_s", "repairs"), ("known_s",),
        lambda c, _p: _ratio(c["repair_s"], c["repairs"], 1 / 3600),
    ),
    KpiDef(
        "mtbf_h", "availability", "h", "Mean time between failures",
        "time in service / number of fault alarms activated in the period",
        ("up_s", "failures"), ("known_s",),
        lambda c, _p: _ratio(c["up_s"], c["failures"], 1 / 3600),
    ),
    KpiDef(
        "bus_priority_requests", "mobility", "requests", "Bus priority requests",
        "increase of the controllers' request counters",
        ("bus_requests",), ("bus_requests",), _c("bus_requests"),
    ),
    KpiDef(
        "bus_priority_granted_pct", "mobility", "%", "Bus priority granted",
        "100 × increase of granted counters / increase of request counters",
        ("bus_granted", "bus_requests"), ("bus_granted", "bus_requests"),
        lambda c, _p: _ratio(c["bus_granted"], c["bus_requests"], 100.0),
    ),
    KpiDef(
        "bus_delay_s", "mobility", "s", "Mean bus delay",
        "time-weighted mean of the buses' delay",
        ("bus_delay_int", "bus_delay_time"), ("bus_delay_time",),
        lambda c, _p: _ratio(c["bus_delay_int"], c["bus_delay_time"]),
    ),
    KpiDef(
        "car_park_occupancy_pct", "mobility", "%", "Car-park occupancy",
        "time-weighted mean of the car parks' occupancy",
        ("car_park_occ_int", "car_park_time"), ("car_park_time",),
        lambda c, _p: _ratio(c["car_park_occ_int"], c["car_park_time"]),
    ),
    KpiDef(
        "car_park_full_h", "mobility", "h", "Car-park hours full",
        "sum over car parks of the time with occupancy ≥ full_pct",
        ("car_park_full_s",), ("car_park_time",), lambda c, _p: c["car_park_full_s"] / 3600.0,
    ),
    KpiDef(
        "reservoir_compliance_pct", "water", "%", "Reservoir level compliance",
        "100 × time with low ≤ level ≤ high / time with a Good level",
        ("reservoir_in_band_s", "reservoir_time"), ("reservoir_time",),
        lambda c, _p: _ratio(c["reservoir_in_band_s"], c["reservoir_time"], 100.0),
    ),
    KpiDef(
        "waste_collections", "waste", "collections", "Waste collections",
        "falls of the fill level of at least drop_pct between Good samples",
        ("waste_collections",), ("waste_collections",), _c("waste_collections"),
    ),
    KpiDef(
        "waste_early_pct", "waste", "%", "Collections below the full threshold",
        "100 × collections with a fill level below full_pct before emptying / collections",
        ("waste_early", "waste_collections"), ("waste_collections",),
        lambda c, _p: _ratio(c["waste_early"], c["waste_collections"], 100.0),
    ),
)  # fmt: skip
BY_NAME: dict[str, KpiDef] = {k.name: k for k in KPIS}

# Which breakdowns each family's scopes have, beyond the metropolis and each commune.
BREAKDOWNS: dict[str, tuple[str, ...]] = {
    "energy": ("", "domain", "class"),
    "availability": ("", "class"),
}


def series_tag(kpi: str, resolution: str, scope: str, field: str = "") -> str:
    """Return the historian tag of a KPI series (field: "" for values, "coverage")."""
    suffix = f".{field}" if field else ""
    return f"{PREFIX}{kpi}.{resolution}{suffix}/{scope}"


def parse_series_tag(tag: str) -> tuple[str, str, str, str] | None:
    """Return (kpi, resolution, field, scope) of a KPI series tag, or None."""
    if not tag.startswith(PREFIX):
        return None
    head, _, scope = tag[len(PREFIX) :].partition("/")
    parts = head.split(".")
    if len(parts) not in (2, 3) or not scope:
        return None
    return parts[0], parts[1], parts[2] if len(parts) == 3 else "", scope


def scopes_of(commune: str, domain: str, asset_class: str, breakdowns: tuple[str, ...]) -> list:
    """Return the scopes an asset counts in: the metropolis and its commune, by breakdown."""
    out = []
    for where in (METROPOLIS, commune):
        for b in breakdowns:
            if not b:
                out.append(where)
            else:
                out.append(f"{where}/{b}-{domain if b == 'domain' else asset_class}")
    return out


def scope_commune(scope: str) -> str | None:
    """Return the commune a scope belongs to (None for the metropolis's scopes)."""
    where = scope.split("/", 1)[0]
    return None if where == METROPOLIS else where


def kpis_for(names: list[str] | None, families: set[str]) -> list[KpiDef]:
    """Return the KPIs of the active families, optionally only some names."""
    return [k for k in KPIS if k.family in families and (not names or k.name in names)]
