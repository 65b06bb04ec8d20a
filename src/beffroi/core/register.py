"""Build the deterministic equipment register from the communes and asset-class templates."""

from __future__ import annotations

import logging
import math
import random
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from beffroi.core.errors import ConfigError
from beffroi.core.model import Asset, Commune, TagSpec, tag_name
from beffroi.core.site import AssetClassConfig, Site

log = logging.getLogger(__name__)

KM_PER_DEG_LAT = 111.0


@dataclass(frozen=True, slots=True)
class RegisterChange:
    """What one change of the register did, as its listeners need it."""

    added: tuple[Asset, ...] = ()  # new assets (and the new record of a reclassified one)
    retired: tuple[Asset, ...] = ()  # gone from service (and the old record of a reclassified)
    updated: tuple[tuple[Asset, Asset], ...] = ()  # (before, after): same tags, new attributes
    user: str = "system"
    source: str = ""

    def __bool__(self) -> bool:
        return bool(self.added or self.retired or self.updated)


Listener = Callable[[RegisterChange], None]


class Register:
    """Every commune, asset and tag of the metropolis, indexed for lookups; it changes live.

    Readers (HMI threads, jobs) iterate `assets` and `tags` without a lock: a change builds new
    mappings and swaps them in at once (copy on write), so a reader sees before or after, never
    half. Changes go through `apply`, which tells the listeners (alarms, collectors, KPIs).
    Retired assets leave `assets` and `tags` for `retired`: their history stays in the historian.
    """

    def __init__(
        self,
        communes: dict[str, Commune],
        assets: dict[str, Asset],
        tags: dict[str, TagSpec],
        retired: dict[str, Asset] | None = None,
    ) -> None:
        self.communes = communes
        self.assets = assets
        self.tags = tags
        self.retired: dict[str, Asset] = retired or {}
        self.revision = 0
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def assets_of(self, communes: Iterable[str] | None = None) -> list[Asset]:
        """Return the assets of some communes (all when None)."""
        if communes is None:
            return list(self.assets.values())
        wanted = set(communes)
        return [a for a in self.assets.values() if a.commune in wanted]

    def asset_of_tag(self, tag: str) -> Asset | None:
        """Return the asset a tag belongs to."""
        spec = self.tags.get(tag)
        return self.assets.get(spec.asset) if spec else None

    def subscribe(self, listener: Listener) -> None:
        """Call `listener` with every change applied from now on."""
        self._listeners.append(listener)

    def apply(self, change: RegisterChange) -> RegisterChange:
        """Apply a change, swap the new mappings in, then tell every listener."""
        if not change:
            return change
        with self._lock:
            assets, retired = dict(self.assets), dict(self.retired)
            for old in change.retired:
                assets.pop(old.id, None)
                retired[old.id] = old
            for _before, after in change.updated:
                assets[after.id] = after
            for new in change.added:
                retired.pop(new.id, None)
                assets[new.id] = new
            self.assets, self.retired = assets, retired
            self.tags = {t.name: t for a in assets.values() for t in a.tags}
            self.revision += 1
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:  # one failing part must not keep the others from the change
                log.exception("register listener %r failed on a change", listener)
        return change


def tags_for(asset_id: str, commune: str, cls: AssetClassConfig) -> list[TagSpec]:
    """Return the tags of an asset of a class: one per signal of its template."""
    return [
        TagSpec(
            name=tag_name(commune, asset_id, s.name),
            asset=asset_id,
            commune=commune,
            signal=s.name,
            kind=s.kind,
            unit=s.unit,
            writable=s.writable,
            low=s.low,
            high=s.high,
            interval_s=s.interval_s,
        )
        for s in cls.signals
    ]


def _allocate(total: int, weights: dict[str, float]) -> dict[str, int]:
    """Split a total over keys by weight, largest remainders first, exactly summing to total."""
    wsum = sum(weights.values())
    if wsum <= 0 or total <= 0:
        return dict.fromkeys(weights, 0)
    exact = {k: total * w / wsum for k, w in weights.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    rest = total - sum(counts.values())
    for k in sorted(exact, key=lambda k: exact[k] - counts[k], reverse=True)[:rest]:
        counts[k] += 1
    return counts


def build_register(cfg: Site, assets: int | None = None) -> Register:
    """Generate the same register for the same config, seed and size."""
    rng = random.Random(cfg.register.seed)
    communes = {
        c.id: Commune(id=c.id, name=c.name, lat=c.lat, lon=c.lon, population=c.population)
        for c in cfg.communes
    }
    total = cfg.register.assets if assets is None else assets
    per_class = _allocate(total, {k: c.share for k, c in cfg.asset_classes.items()})
    # Every commune gets equipment; larger ones get more (the power keeps Dijon from taking all).
    weights = {c.id: max(c.population, 1) ** 0.7 for c in cfg.communes}
    out: dict[str, Asset] = {}
    for class_id, count in per_class.items():
        cls = cfg.asset_classes[class_id]
        per_commune = _allocate(count, weights)
        n = 0
        for commune_id, k in per_commune.items():
            centre = communes[commune_id]
            scale = cls.spread_km * math.sqrt(max(centre.population, 200) / 10_000)
            scale = min(max(scale, 0.3), 3.0)
            for _ in range(k):
                n += 1
                asset_id = f"{cls.prefix}-{n:05d}" if count > 9999 else f"{cls.prefix}-{n:04d}"
                lat = centre.lat + rng.gauss(0, scale / 2) / KM_PER_DEG_LAT
                lon = centre.lon + rng.gauss(0, scale / 2) / (
                    KM_PER_DEG_LAT * math.cos(math.radians(centre.lat))
                )
                out[asset_id] = Asset(
                    id=asset_id,
                    asset_class=class_id,
                    commune=commune_id,
                    lat=round(lat, 6),
                    lon=round(lon, 6),
                    domain=cls.domain,
                    tags=tags_for(asset_id, commune_id, cls),
                )
    clashes = [
        f"register.fixed[{i}].id: asset id {f.id!r} is also a generated id; choose another"
        for i, f in enumerate(cfg.register.fixed)
        if f.id in out
    ]
    if clashes:
        raise ConfigError(str(cfg.source or "config"), clashes)
    for f in cfg.register.fixed:
        cls = cfg.asset_classes[f.asset_class]
        out[f.id] = Asset(
            id=f.id,
            asset_class=f.asset_class,
            commune=f.commune,
            lat=f.lat,
            lon=f.lon,
            domain=cls.domain,
            tags=tags_for(f.id, f.commune, cls),
        )
    tags = {t.name: t for a in out.values() for t in a.tags}
    return Register(communes=communes, assets=out, tags=tags)
