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

from beffroi.core.alarm_config import AlarmsConfig, alarm_problems
from beffroi.core.collector_config import (  # noqa: F401  (re-exported)
    CollectorsConfig,
    ModbusCollectorConfig,
    MqttCollectorConfig,
    OpcUaCollectorConfig,
    collector_problems,
)
from beffroi.core.collector_config import check_opc_url as _check_opc_url
from beffroi.core.control_config import ControlConfig, PublicFeedConfig, control_problems
from beffroi.core.errors import ConfigError
from beffroi.core.kpi_config import KpiConfig, kpi_problems

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


EnvName = Annotated[str, Field(pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$")]


class InfluxConfig(Strict):
    """The InfluxDB server of the `influx` back end; secrets come from environment variables."""

    url: str = "http://127.0.0.1:8086"
    api: Literal["v1", "v2"] = "v2"
    database: str = Field(default="beffroi", min_length=1)
    retention_policy: str = ""
    bucket: str = ""
    org: str = ""
    token_env: EnvName = ""
    username_env: EnvName = ""
    password_env: EnvName = ""
    ca_file: str = ""
    timeout_s: float = Field(default=10.0, gt=0, le=300)

    @field_validator("url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+(/\S*)?$", v):
            raise ValueError(f"not an http(s) URL (expected http://host:8086), got {v!r}")
        return v

    @model_validator(mode="after")
    def _credentials(self) -> InfluxConfig:
        if self.token_env and (self.username_env or self.password_env):
            raise ValueError("give token_env or username_env and password_env, not both")
        if bool(self.username_env) != bool(self.password_env):
            raise ValueError("username_env and password_env go together")
        return self


class CompressionRule(Strict):
    """How one signal's values are thinned before storage, as in the PI System."""

    method: Literal["off", "deadband", "swinging_door"] = "swinging_door"
    deviation: float | None = Field(default=None, gt=0)
    deviation_pct: float | None = Field(default=None, gt=0, le=100)
    span: float | None = Field(default=None, gt=0)
    min_time_s: float = Field(default=0.0, ge=0)
    max_time_s: float = Field(default=600.0, gt=0)

    @model_validator(mode="after")
    def _one_deviation(self) -> CompressionRule:
        if self.method != "off" and (self.deviation is None) == (self.deviation_pct is None):
            raise ValueError("give one of deviation (absolute) or deviation_pct (% of span)")
        if self.min_time_s >= self.max_time_s:
            raise ValueError(f"min_time_s ({self.min_time_s}) must be below max_time_s")
        return self


class CompressionConfig(Strict):
    """Compression before storage per asset class and signal; signals without a rule are whole."""

    enabled: bool = True
    classes: dict[str, dict[str, CompressionRule]] = {}


class HistorianConfig(Strict):
    """Where values are stored."""

    backend: Literal["duckdb", "influx"] = "duckdb"
    path: str = "var/beffroi.duckdb"
    flush_interval_s: float = Field(default=1.0, gt=0, le=60)
    max_batch: int = Field(default=100_000, ge=1)
    spool_dir: str = "var/spool"
    spool_max_mb: float = Field(default=1024, gt=0)
    compact_interval_s: float = Field(default=300, gt=0)
    retention: RetentionConfig = RetentionConfig()
    influx: InfluxConfig = InfluxConfig()


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
    public: PublicFeedConfig = PublicFeedConfig()


class Config(Strict):
    """The whole config.toml."""

    metropolis: MetropolisConfig = MetropolisConfig()
    communes: list[CommuneConfig] = Field(min_length=1)
    asset_classes: dict[Slug, AssetClassConfig] = Field(min_length=1)
    equipment: RegisterConfig = Field(default=RegisterConfig(), alias="register")
    simulator: SimulatorConfig = SimulatorConfig()
    collectors: CollectorsConfig = CollectorsConfig()
    historian: HistorianConfig = HistorianConfig()
    compression: CompressionConfig = CompressionConfig()
    hmi: HmiConfig = HmiConfig()
    alarms: AlarmsConfig = AlarmsConfig()
    kpi: KpiConfig = KpiConfig()
    control: ControlConfig = ControlConfig()
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
    problems.extend(collector_problems(cfg))
    if sum(c.share for c in cfg.asset_classes.values()) <= 0 and cfg.equipment.assets > 0:
        problems.append("asset_classes: at least one class needs a share above 0")
    return problems


def _compression_checks(cfg: Config) -> list[str]:
    """Check that compression rules name float signals and have a span for deviation_pct."""
    problems: list[str] = []
    for cls_id, rules in cfg.compression.classes.items():
        cls = cfg.asset_classes.get(cls_id)
        if cls is None:
            problems.append(f"compression.classes.{cls_id}: unknown asset class {cls_id!r}")
            continue
        signals = {s.name: s for s in cls.signals}
        for name, rule in rules.items():
            where, sig = f"compression.classes.{cls_id}.{name}", signals.get(name)
            if sig is None:
                problems.append(f"{where}: {cls_id} has no signal {name!r}")
            elif rule.method != "off" and sig.kind != "float":
                problems.append(f"{where}: only float signals can be compressed ({sig.kind})")
            elif (
                rule.deviation_pct is not None
                and rule.span is None
                and (sig.low is None or sig.high is None or sig.high <= sig.low)
            ):
                problems.append(f"{where}: deviation_pct needs a span: set span, or low and high")
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
    problems = _cross_checks(cfg) + _compression_checks(cfg)
    problems += alarm_problems(cfg)
    problems += kpi_problems(cfg)
    problems += control_problems(cfg)
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
