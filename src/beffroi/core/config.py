"""Load config.toml into validated pydantic models; every error names the file and TOML path."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from beffroi.core.errors import ConfigError

SLUG = r"^[a-z0-9][a-z0-9_-]*$"
ASSET_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
Slug = Annotated[str, Field(pattern=SLUG, max_length=64)]


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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
    prefix: Annotated[str, Field(pattern=r"^[A-Z]{1,4}$")]
    share: float = Field(ge=0, description="share of the generated register")
    spread_km: float = Field(default=1.5, gt=0)
    signals: list[SignalConfig] = Field(min_length=1)

    @field_validator("signals")
    @classmethod
    def _unique_signals(cls, signals: list[SignalConfig]) -> list[SignalConfig]:
        seen: set[str] = set()
        for s in signals:
            if s.name in seen:
                raise ValueError(f"signal {s.name!r} is defined twice")
            seen.add(s.name)
        return signals


class FixedAssetConfig(Strict):
    """An asset placed by hand in addition to the generated register."""

    id: Annotated[str, Field(pattern=ASSET_ID, max_length=64)]
    asset_class: str = Field(alias="class")
    commune: str
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)


class RegisterConfig(Strict):
    """The deterministic generated equipment register."""

    assets: int = Field(default=1000, ge=0, le=200_000)
    seed: int = 42
    fixed: list[FixedAssetConfig] = []


class SimulatorConfig(Strict):
    """The simulated metropolis served over OPC UA."""

    enabled: bool = True
    endpoint: str = "opc.tcp://127.0.0.1:4840/beffroi/"
    namespace: str = "urn:beffroi:simulator"
    seed: int = 7
    speed: float = Field(default=1.0, gt=0, le=10_000)
    tick_s: float = Field(default=1.0, gt=0)
    fault_rate_per_hour: float = Field(default=0.2, ge=0)

    @field_validator("endpoint")
    @classmethod
    def _opc_url(cls, v: str) -> str:
        return _check_opc_url(v)


class OpcUaCollectorConfig(Strict):
    """An OPC UA server to subscribe to."""

    name: Slug
    url: str
    namespace: str = "urn:beffroi:simulator"
    publishing_interval_ms: int = Field(default=500, ge=10)
    chunk_size: int = Field(default=1000, ge=1)
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=30.0, gt=0)
    timeout_s: float = Field(default=4.0, gt=0)
    communes: list[str] = []
    classes: list[str] = []

    @field_validator("url")
    @classmethod
    def _opc_url(cls, v: str) -> str:
        return _check_opc_url(v)


class CollectorsConfig(Strict):
    """Collectors by protocol; the table name is the registry key."""

    opcua: list[OpcUaCollectorConfig] = []

    @model_validator(mode="after")
    def _unique_names(self) -> CollectorsConfig:
        names = [c.name for c in self.opcua]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"collector names must be unique, repeated: {', '.join(dupes)}")
        return self


class RetentionConfig(Strict):
    """How long raw samples are kept; hourly and daily aggregates stay."""

    raw_days: float | None = Field(default=None, gt=0, description="default for every tag")
    rules: dict[str, float] = Field(
        default={}, description="tag pattern (`*` within one level) → days of raw samples"
    )

    @field_validator("rules")
    @classmethod
    def _patterns(cls, rules: dict[str, float]) -> dict[str, float]:
        for pattern, days in rules.items():
            if pattern.count("/") != 2:
                raise ValueError(f"{pattern!r}: expected commune/asset/signal, e.g. */BUS-*/lat")
            if days <= 0:
                raise ValueError(f"{pattern!r}: days must be above 0, got {days}")
        return rules


class HistorianConfig(Strict):
    """Where values are stored."""

    backend: Literal["duckdb"] = "duckdb"
    path: str = "var/beffroi.duckdb"
    flush_interval_s: float = Field(default=1.0, gt=0, le=60)
    max_batch: int = Field(default=100_000, ge=1)
    spool_dir: str = "var/spool"
    spool_max_mb: float = Field(default=1024, gt=0)
    compact_interval_s: float = Field(default=300, gt=0)
    retention: RetentionConfig = RetentionConfig()


class HmiConfig(Strict):
    """The web HMI's bind address."""

    host: str = "127.0.0.1"
    port: int = Field(default=8050, ge=1, le=65535)
    threads: int = Field(default=8, ge=1, le=64)
    users_db: str = "var/users.duckdb"
    session_secret_env: str = Field(default="BEFFROI_SESSION_SECRET", pattern=r"^[A-Za-z_]\w*$")
    session_hours: float = Field(default=12, gt=0, le=24 * 30)
    login_attempts: int = Field(default=5, ge=1)
    login_window_s: float = Field(default=300, gt=0)


class Config(Strict):
    """The whole config.toml."""

    metropolis: MetropolisConfig = MetropolisConfig()
    communes: list[CommuneConfig] = Field(min_length=1)
    asset_classes: dict[Slug, AssetClassConfig] = Field(min_length=1)
    equipment: RegisterConfig = Field(default=RegisterConfig(), alias="register")
    simulator: SimulatorConfig = SimulatorConfig()
    collectors: CollectorsConfig = CollectorsConfig()
    historian: HistorianConfig = HistorianConfig()
    hmi: HmiConfig = HmiConfig()
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


_OPC_URL = re.compile(r"^opc\.tcp://[^/:\s]+(:\d{1,5})?(/\S*)?$")


def _check_opc_url(v: str) -> str:
    if not _OPC_URL.match(v):
        raise ValueError(f"not a valid opc.tcp URL (expected opc.tcp://host:port/path), got {v!r}")
    return v


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


def _message(err: dict) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    msg = err["msg"]
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    if kind not in ("value_error", "assertion_error") and "input" in err:
        got = err["input"]
        if not isinstance(got, dict | list):
            msg += f" (got {got!r})"
    return msg


def _cross_checks(cfg: Config) -> list[str]:
    """Check references between sections that a single model cannot see."""
    problems: list[str] = []
    ids = cfg.commune_ids()
    for i, cid in enumerate(ids):
        if cid in ids[:i]:
            problems.append(f"communes[{i}].id: duplicate commune id {cid!r}")
    known = set(ids)
    seen_assets: dict[str, int] = {}
    for i, a in enumerate(cfg.equipment.fixed):
        where = f"register.fixed[{i}]"
        if a.commune not in known:
            problems.append(f"{where}.commune: unknown commune {a.commune!r}")
        if a.asset_class not in cfg.asset_classes:
            problems.append(f"{where}.class: unknown asset class {a.asset_class!r}")
        if a.id in seen_assets:
            problems.append(
                f"{where}.id: duplicate asset id {a.id!r}"
                f" (also register.fixed[{seen_assets[a.id]}])"
            )
        seen_assets.setdefault(a.id, i)
    for i, col in enumerate(cfg.collectors.opcua):
        for j, c in enumerate(col.communes):
            if c not in known:
                problems.append(f"collectors.opcua[{i}].communes[{j}]: unknown commune {c!r}")
        for j, k in enumerate(col.classes):
            if k not in cfg.asset_classes:
                problems.append(f"collectors.opcua[{i}].classes[{j}]: unknown asset class {k!r}")
    if sum(c.share for c in cfg.asset_classes.values()) <= 0 and cfg.equipment.assets > 0:
        problems.append("asset_classes: at least one class needs a share above 0")
    return problems


def parse_config(text: str, source: str = "config.toml") -> Config:
    """Parse TOML text into a Config, raising ConfigError with one line per problem."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(source, [f"(syntax): malformed TOML: {exc}"]) from None
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as exc:
        problems = [f"{_loc(e['loc'])}: {_message(e)}" for e in exc.errors()]
        raise ConfigError(source, problems) from None
    problems = _cross_checks(cfg)
    if problems:
        raise ConfigError(source, problems)
    cfg._source = Path(source)
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a config file."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(str(path), [f"(file): cannot read: {exc.strerror}"]) from None
    except UnicodeDecodeError:
        raise ConfigError(str(path), ["(file): not UTF-8 text"]) from None
    return parse_config(text, str(path))
