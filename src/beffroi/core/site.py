"""The site every part reads: the metropolis, its communes, asset-class templates, the register.

`SiteConfig` holds the tables of config.toml that describe the city itself; the root `Config`
of the composition root (`app/config.py`) extends it with every package's section. Packages
never import that root: each names what it reads in a `Protocol` extending `Site`, so a type
checker follows every section from the file to the code that reads it.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Literal, Protocol

from pydantic import Field, PrivateAttr, field_validator, model_validator

from beffroi.core.config import AssetId, Slug, Strict
from beffroi.core.privacy import PrivacyConfig


class MetropolisConfig(Strict):
    """The metropolis as a whole."""

    name: str = "Metropolis"
    timezone: str = "Europe/Paris"


class CommuneConfig(Strict):
    """One commune: id, name, centre and population (weights the generated register)."""

    id: Slug
    name: str
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    population: int = Field(ge=0)


class SignalConfig(Strict):
    """One signal of an asset-class template; becomes the tag `commune/asset/signal`."""

    name: Slug
    kind: Literal["float", "bool", "str"] = "float"
    unit: str = ""
    writable: bool = False
    low: float | None = None
    high: float | None = None
    interval_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _range_ordered(self) -> SignalConfig:
        if self.low is not None and self.high is not None and self.low > self.high:
            raise ValueError(f"low ({self.low}) must not exceed high ({self.high})")
        return self


Domain = Literal[
    "lighting", "traffic", "mobility", "security", "water", "waste", "buildings", "parking"
]


class AssetClassConfig(Strict):
    """A class of equipment and the template of its tags."""

    domain: Domain
    label: str
    prefix: str = Field(pattern=r"^[A-Z]{1,4}$")
    share: float = Field(ge=0, description="share of the generated register")
    spread_km: float = Field(default=1.5, gt=0)
    signals: list[SignalConfig] = Field(min_length=1)
    # A family groups classes shown together (the map's "fleet": every municipal vehicle).
    family: Slug | None = None
    # Its positions are where staff are (a municipal vehicle): shown exactly only to the roles
    # of `[privacy] precise_position_roles`.
    personal_positions: bool = False

    @field_validator("signals")
    @classmethod
    def _unique_signals(cls, signals: list[SignalConfig]) -> list[SignalConfig]:
        seen: set[str] = set()
        for s in signals:
            if s.name in seen:
                raise ValueError(f"signal {s.name!r} is defined twice")
            seen.add(s.name)
        return signals

    def signal(self, name: str) -> SignalConfig | None:
        """Return the template's signal of that name, or None."""
        return next((s for s in self.signals if s.name == name), None)


class FixedAssetConfig(Strict):
    """An asset placed by hand in addition to the generated register."""

    id: AssetId
    asset_class: str = Field(alias="class")
    commune: str
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class RegisterConfig(Strict):
    """The deterministic generated equipment register (`[register]`)."""

    assets: int = Field(default=1000, ge=0, le=200_000)
    seed: int = 42
    fixed: list[FixedAssetConfig] = []


class Site(Protocol):
    """What every package may read of the config: the city, where files go, where the HMI is."""

    @property
    def metropolis(self) -> MetropolisConfig: ...

    @property
    def communes(self) -> list[CommuneConfig]: ...

    @property
    def asset_classes(self) -> dict[str, AssetClassConfig]: ...

    @property
    def register(self) -> RegisterConfig: ...

    @property
    def privacy(self) -> PrivacyConfig: ...

    @property
    def source(self) -> Path | None: ...

    def commune_ids(self) -> list[str]:
        """Return the commune ids in config order."""
        ...

    def resolve(self, path: str) -> Path:
        """Resolve a path from the config relative to the config file's folder."""
        ...

    def data_dir(self) -> Path:
        """Return the folder of the gateway's files (state files default to it)."""
        ...

    def hmi_url(self) -> str:
        """Return where the HMI answers, for links sent out (e-mails)."""
        ...


# A pydantic model's metaclass is an ABCMeta, whose `register` (of virtual subclasses) the field
# `register` hides: pydantic warns at class creation. `[register]` is the config file's word,
# and the attribute keeps it; the ABC method is never used on config models.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", 'Field name "register"', UserWarning)

    class SiteConfig(Strict):
        """The tables of config.toml that describe the metropolis and its equipment."""

        metropolis: MetropolisConfig = MetropolisConfig()
        communes: list[CommuneConfig] = Field(min_length=1)
        asset_classes: dict[Slug, AssetClassConfig] = Field(min_length=1)
        register: RegisterConfig = RegisterConfig()
        privacy: PrivacyConfig = PrivacyConfig()
        _source: Path | None = PrivateAttr(default=None)

        @property
        def source(self) -> Path | None:
            """Return the file this config was read from."""
            return self._source

        def commune_ids(self) -> list[str]:
            """Return the commune ids in config order."""
            return [c.id for c in self.communes]

        def resolve(self, path: str) -> Path:
            """Resolve a path from the config relative to the config file's folder."""
            p = Path(path)
            if p.is_absolute() or self.source is None:
                return p
            return self.source.parent / p


def site_problems(site: Site) -> list[str]:
    """Check references between the site's tables that a single model cannot see."""
    problems: list[str] = []
    ids = site.commune_ids()
    for i, cid in enumerate(ids):
        if cid in ids[:i]:
            problems.append(f"communes[{i}].id: duplicate commune id {cid!r}")
    known = set(ids)
    seen_assets: dict[str, int] = {}
    for i, a in enumerate(site.register.fixed):
        where = f"register.fixed[{i}]"
        if a.commune not in known:
            problems.append(f"{where}.commune: unknown commune {a.commune!r}")
        if a.asset_class not in site.asset_classes:
            problems.append(f"{where}.class: unknown asset class {a.asset_class!r}")
        if a.id in seen_assets:
            problems.append(
                f"{where}.id: duplicate asset id {a.id!r}"
                f" (also register.fixed[{seen_assets[a.id]}])"
            )
        seen_assets.setdefault(a.id, i)
    if sum(c.share for c in site.asset_classes.values()) <= 0 and site.register.assets > 0:
        problems.append("asset_classes: at least one class needs a share above 0")
    return problems
