"""Config of `[historian]`, `[historian.retention]` and `[compression]`, and their checks."""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import Field, field_validator, model_validator

from beffroi.core.config import Strict
from beffroi.core.site import Site
from beffroi.historian.influx.config import InfluxConfig


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
    """Where values are stored, how often the write buffer flushes, and the spool."""

    backend: Literal["duckdb", "influx"] = "duckdb"
    path: str = "var/beffroi.duckdb"
    flush_interval_s: float = Field(default=1.0, gt=0, le=60)
    max_batch: int = Field(default=100_000, ge=1)
    spool_dir: str = "var/spool"
    spool_max_mb: float = Field(default=1024, gt=0)
    compact_interval_s: float = Field(default=300, gt=0)
    retention: RetentionConfig = RetentionConfig()
    influx: InfluxConfig = InfluxConfig()


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


class HistorianSite(Site, Protocol):
    """What the historian reads of the config."""

    @property
    def historian(self) -> HistorianConfig: ...

    @property
    def compression(self) -> CompressionConfig: ...


def compression_problems(site: HistorianSite) -> list[str]:
    """Check that compression rules name float signals and have a span for deviation_pct."""
    problems: list[str] = []
    for cls_id, rules in site.compression.classes.items():
        cls = site.asset_classes.get(cls_id)
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
