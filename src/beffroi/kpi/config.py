"""Config of `[kpi]`: energy, lighting baseline, availability, mobility, water, waste."""

from __future__ import annotations

import csv
import logging
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol
from zoneinfo import ZoneInfo

from pydantic import Field, model_validator

from beffroi.alerts.config import AlarmsConfig
from beffroi.core.config import Slug, Strict
from beffroi.core.model import Asset
from beffroi.core.register import Register
from beffroi.historian.config import CompressionConfig
from beffroi.state.config import Place, StateSite

log = logging.getLogger(__name__)

Kw = Annotated[float, Field(gt=0, le=10_000)]


class EnergySourceConfig(Strict):
    """How one asset class's energy is measured: a kWh counter, or kW power integrated."""

    signal: Slug
    method: Literal["counter", "power"]
    # Between two Good samples closer than hold_after_s the value moves linearly (a swinging-door
    # archive); a longer silence from report-by-exception equipment means "unchanged": held.
    interpolation: Literal["linear", "step"] = "linear"
    hold_after_s: float | None = Field(default=None, gt=0, le=86_400)
    # CommLoss/Bad holes in power data: interpolated between the Good values around them
    # (flagged gap-filled), or left out. Counter holes are always spread: the kWh are measured.
    fill: Literal["linear", "none"] = "linear"
    rollover: float | None = Field(default=None, gt=0, description="the counter wraps after this")


class LightingSavingsConfig(Strict):
    """Public-lighting savings against the pre-renovation baseline, dusk to dawn."""

    asset_class: Slug = Field(default="streetlight_cabinet", alias="class")
    target_pct: float = Field(default=65.0, gt=0, le=100)
    # Cabinets switch at civil twilight (6°); 0.833 gives sunset and sunrise.
    depression_deg: float = Field(default=6.0, ge=0, le=18)
    default_kw: Kw | None = None
    commune_kw: dict[str, Kw] = {}
    baseline_kw: dict[str, Kw] = {}
    baseline_file: str = ""


class AvailabilityConfig(Strict):
    """Time in service per class and commune, from fault states and CommLoss."""

    classes: list[Slug] = []
    down_when: dict[str, list[str]] = {}
    commloss: Literal["down", "unknown"] = "down"


class MobilityConfig(Strict):
    """Bus priority at traffic lights, bus delay, car-park occupancy."""

    traffic_class: Slug = "traffic_controller"
    requests: Slug = "bus_priority_requests"
    granted: Slug | Literal[""] = ""
    bus_class: Slug = "bus"
    delay: Slug = "delay_s"
    car_park_class: Slug = "car_park"
    occupancy: Slug = "occupancy_pct"
    full_pct: float = Field(default=98.0, gt=0, le=100)


class WaterConfig(Strict):
    """Reservoir level compliance: share of time within [low, high]."""

    asset_class: Slug = Field(default="reservoir", alias="class")
    signal: Slug = "level_pct"
    low: float = 30.0
    high: float = 95.0

    @model_validator(mode="after")
    def _band(self) -> WaterConfig:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be below high ({self.high})")
        return self


class WasteConfig(Strict):
    """Waste collections: emptied above full_pct (useful) or below (a useless round)."""

    asset_class: Slug = Field(default="waste_container", alias="class")
    signal: Slug = "fill_pct"
    full_pct: float = Field(default=80.0, gt=0, le=100)
    drop_pct: float = Field(default=30.0, gt=0, le=100)


class KpiConfig(Strict):
    """The `[kpi]` section: what is computed, from which signals, and how often."""

    enabled: bool = True
    store: str = ""
    every_min: int = Field(default=15, ge=1, le=60)
    settle_min: float = Field(default=5.0, ge=0, le=120)
    late_days: int = Field(default=7, ge=1, le=92)
    carry_days: int = Field(default=31, ge=1, le=400)
    fill_max_h: float = Field(default=72.0, gt=0, le=24 * 31)
    energy: dict[str, EnergySourceConfig] = {}
    lighting: LightingSavingsConfig | None = None
    availability: AvailabilityConfig | None = None
    mobility: MobilityConfig | None = None
    water: WaterConfig | None = None
    waste: WasteConfig | None = None

    @model_validator(mode="before")
    @classmethod
    def _old_name_of_store(cls, data: Any) -> Any:
        """Read `journal`, the old name of `store` (the word is the alarm journal's now)."""
        if not isinstance(data, dict) or "journal" not in data:
            return data
        if "store" in data:
            raise ValueError("journal is the old name of store: keep store only")
        log.warning("[kpi] journal is now called store; read as store")
        return {("store" if k == "journal" else k): v for k, v in data.items()}

    @property
    def active(self) -> bool:
        """Tell whether the engine has anything to compute."""
        sections = (self.lighting, self.availability, self.mobility, self.water, self.waste)
        return self.enabled and (bool(self.energy) or any(s is not None for s in sections))


class KpiSite(StateSite, Protocol):
    """What the KPI engine reads of the config: its section, the alarm journal's place (MTTR,
    MTBF), and compression settings (how long a value holds)."""

    @property
    def kpi(self) -> KpiConfig: ...

    @property
    def alarms(self) -> AlarmsConfig: ...

    @property
    def compression(self) -> CompressionConfig: ...


def kpi_store_path(cfg: KpiSite) -> Path:
    """Return the KPI store: as configured, or kpi.duckdb in the gateway's data folder."""
    if cfg.kpi.store:
        return cfg.resolve(cfg.kpi.store)
    return cfg.data_dir() / "kpi.duckdb"


def kpi_store_place(cfg: KpiSite) -> Place:
    """Return where the KPI store lives: its file, or the `kpi` schema in PostgreSQL."""
    return cfg.state.place(kpi_store_path(cfg), "kpi")


def down_signals(cfg: KpiSite, cls_id: str) -> list[str]:
    """Return the down conditions of a class: `fault` (down when true), `!online` (when false)."""
    kc = cfg.kpi.availability
    if kc is not None and cls_id in kc.down_when:
        return list(kc.down_when[cls_id])
    cls = cfg.asset_classes[cls_id]
    return ["fault"] if any(s.name == "fault" and s.kind == "bool" for s in cls.signals) else []


def availability_classes(cfg: KpiSite) -> list[str]:
    """Return the classes whose availability is computed."""
    kc = cfg.kpi.availability
    if kc is None:
        return []
    ids = kc.classes or list(cfg.asset_classes)
    return [c for c in ids if c in cfg.asset_classes and down_signals(cfg, c)]


def _signal(cfg: KpiSite, where: str, cls_id: str, signal: str, kinds: set[str]) -> list[str]:
    cls = cfg.asset_classes.get(cls_id)
    if cls is None:
        return [f"{where}: unknown asset class {cls_id!r}"]
    sig = next((s for s in cls.signals if s.name == signal), None)
    if sig is None:
        return [f"{where}: {cls_id} has no signal {signal!r}"]
    if sig.kind not in kinds:
        wanted = " or ".join(sorted(kinds))
        return [f"{where}: {cls_id}.{signal} is {sig.kind}, expected {wanted}"]
    return []


def _whole_hours(timezone: str) -> bool:
    """Tell whether local midnights fall on UTC hours (daily KPIs sum hourly cells)."""
    try:
        tz = ZoneInfo(timezone)
    except (KeyError, ValueError):
        return True  # not our error to report
    year = datetime.now(UTC).year
    for month in (1, 4, 7, 10):
        off = datetime(year, month, 1, 12, tzinfo=tz).utcoffset()
        if off is not None and off.total_seconds() % 3600:
            return False
    return True


def kpi_problems(cfg: KpiSite) -> list[str]:
    """Check references of [kpi] to classes, signals and communes."""
    kc, problems = cfg.kpi, []
    for cls_id, src in kc.energy.items():
        where = f"kpi.energy.{cls_id}"
        if cls_id not in cfg.asset_classes:
            problems.append(f"{where}: unknown asset class {cls_id!r}")
            continue
        problems += _signal(cfg, f"{where}.signal", cls_id, src.signal, {"float"})
    if kc.lighting is not None:
        lc = kc.lighting
        problems += _check_lighting(cfg, lc)
    if kc.availability is not None:
        av = kc.availability
        for i, cls_id in enumerate(av.classes):
            if cls_id not in cfg.asset_classes:
                problems.append(f"kpi.availability.classes[{i}]: unknown asset class {cls_id!r}")
        for cls_id, conditions in av.down_when.items():
            where = f"kpi.availability.down_when.{cls_id}"
            if cls_id not in cfg.asset_classes:
                problems.append(f"{where}: unknown asset class {cls_id!r}")
                continue
            if not conditions:
                problems.append(f'{where}: give at least one signal, e.g. ["fault", "!online"]')
            for j, cond in enumerate(conditions):
                problems += _signal(cfg, f"{where}[{j}]", cls_id, cond.lstrip("!"), {"bool"})
    if kc.mobility is not None:
        mc, where = kc.mobility, "kpi.mobility"
        problems += _signal(cfg, f"{where}.requests", mc.traffic_class, mc.requests, {"float"})
        if mc.granted:
            problems += _signal(cfg, f"{where}.granted", mc.traffic_class, mc.granted, {"float"})
        problems += _signal(cfg, f"{where}.delay", mc.bus_class, mc.delay, {"float"})
        problems += _signal(cfg, f"{where}.occupancy", mc.car_park_class, mc.occupancy, {"float"})
    for name, sec in (("water", kc.water), ("waste", kc.waste)):
        if sec is not None:
            problems += _signal(cfg, f"kpi.{name}.signal", sec.asset_class, sec.signal, {"float"})
    if kc.active and not _whole_hours(cfg.metropolis.timezone):
        problems.append(
            "metropolis.timezone: KPIs need a time zone whose offsets are whole hours "
            f"(local days are built from UTC hours), got {cfg.metropolis.timezone!r}"
        )
    return problems


def _check_lighting(cfg: KpiSite, lc: LightingSavingsConfig) -> list[str]:
    where = "kpi.lighting"
    if lc.asset_class not in cfg.asset_classes:
        return [f"{where}.class: unknown asset class {lc.asset_class!r}"]
    problems = []
    if lc.asset_class not in cfg.kpi.energy:
        problems.append(
            f"{where}.class: no [kpi.energy.{lc.asset_class}] source measures these cabinets"
        )
    communes = set(cfg.commune_ids())
    problems += [
        f"{where}.commune_kw.{c}: unknown commune {c!r}" for c in lc.commune_kw if c not in communes
    ]
    return problems


def read_baseline_file(path: Path) -> dict[str, float]:
    """Read `asset,installed_kw` rows (a header line is optional); raise ValueError if broken."""
    out: dict[str, float] = {}
    with path.open(newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            if not row or row[0].startswith("#") or (n == 1 and row[0].strip() == "asset"):
                continue
            try:
                kw = float(row[1])
            except (IndexError, ValueError):
                raise ValueError(f"line {n}: expected asset,installed_kw, got {row!r}") from None
            if not 0 < kw <= 10_000:
                raise ValueError(f"line {n}: installed_kw must be in (0, 10000], got {kw}")
            out[row[0].strip()] = kw
    return out


def lighting_baseline(
    cfg: KpiSite, register: Register, retired: Iterable[Asset] = ()
) -> tuple[dict[str, float], list[str]]:
    """Return each cabinet's pre-renovation kW and the problems found (unknown assets, file).

    `retired`: cabinets retired while running, which still count up to their retirement.
    """
    lc = cfg.kpi.lighting
    if lc is None:
        return {}, []
    problems: list[str] = []
    listed: dict[str, tuple[str, float]] = {}
    if lc.baseline_file:
        path = cfg.resolve(lc.baseline_file)
        try:
            for asset, installed in read_baseline_file(path).items():
                listed[asset] = (f"kpi.lighting.baseline_file ({path.name}): {asset}", installed)
        except OSError as exc:
            problems.append(f"kpi.lighting.baseline_file: cannot read {path}: {exc.strerror}")
        except ValueError as exc:
            problems.append(f"kpi.lighting.baseline_file: {path.name}: {exc}")
    for asset, given in lc.baseline_kw.items():
        listed[asset] = (f"kpi.lighting.baseline_kw.{asset}", given)
    for asset, (where, _) in listed.items():
        a = register.assets.get(asset)
        if a is None:
            problems.append(f"{where}: unknown asset {asset!r}")
        elif a.asset_class != lc.asset_class:
            problems.append(f"{where}: {asset} is a {a.asset_class}, not a {lc.asset_class}")
    out: dict[str, float] = {}
    for a in [*retired, *register.assets.values()]:  # the asset in service wins for its id
        if a.asset_class != lc.asset_class:
            continue
        kw: float | None = listed[a.id][1] if a.id in listed else None
        if kw is None:
            kw = lc.commune_kw.get(a.commune, lc.default_kw)
        if kw is not None:
            out[a.id] = kw
    return out, problems


def kpi_register_problems(cfg: KpiSite, register: Register) -> list[str]:
    """Check what needs the register: the cabinets named by the lighting baseline."""
    return lighting_baseline(cfg, register)[1]
