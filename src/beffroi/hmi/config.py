"""Config of `[hmi]` and `[hmi.public]`: the web server, sessions, logins, the public feed."""

from __future__ import annotations

from typing import Protocol

from pydantic import Field

from beffroi.alerts.config import AlarmsConfig
from beffroi.control.config import ControlConfig
from beffroi.core.config import EnvName, Strict
from beffroi.core.site import Site
from beffroi.historian.config import CompressionConfig, HistorianConfig
from beffroi.kpi.config import KpiConfig


class PublicFeedConfig(Strict):
    """The unauthenticated open-data feed of car parks: cache and per-address rate limit."""

    enabled: bool = True
    asset_class: str = Field(default="car_park", alias="class")
    cache_s: float = Field(default=10.0, ge=0, le=3600)
    requests_per_min: int = Field(default=60, ge=1)
    max_clients: int = Field(default=10_000, ge=1)
    names: dict[str, str] = {}


class HmiConfig(Strict):
    """The web HMI: bind address, threads, users file, sessions and login throttling."""

    host: str = "127.0.0.1"
    port: int = Field(default=8050, ge=1, le=65535)
    threads: int = Field(default=8, ge=1, le=64)
    users_db: str = "var/users.duckdb"
    session_secret_env: EnvName = Field(default="BEFFROI_SESSION_SECRET", min_length=1)
    session_hours: float = Field(default=12, gt=0, le=24 * 30)
    login_attempts: int = Field(default=5, ge=1)
    login_window_s: float = Field(default=300, gt=0)
    public: PublicFeedConfig = PublicFeedConfig()


class HmiSite(Site, Protocol):
    """What the HMI reads of the config: its section and those of the features it shows."""

    @property
    def hmi(self) -> HmiConfig: ...

    @property
    def historian(self) -> HistorianConfig: ...

    @property
    def alarms(self) -> AlarmsConfig: ...

    @property
    def kpi(self) -> KpiConfig: ...

    @property
    def control(self) -> ControlConfig: ...

    # The KPIs page asks the KPI package which KPIs the config gives inputs for, handing it
    # this site: so the site is also a KpiSite, whose protocol includes compression.
    @property
    def compression(self) -> CompressionConfig: ...


def public_problems(site: HmiSite) -> list[str]:
    """Check that the public feed's class exists and has the signals the feed publishes."""
    public = site.hmi.public
    # The default names the demo's class: a config without car parks publishes nothing;
    # naming a class that does not exist is an error.
    if not public.enabled or (
        "asset_class" not in public.model_fields_set
        and public.asset_class not in site.asset_classes
    ):
        return []
    cls = site.asset_classes.get(public.asset_class)
    if cls is None:
        return [f"hmi.public.class: unknown asset class {public.asset_class!r}"]
    return [
        f"hmi.public: {public.asset_class} has no signal {name!r}"
        for name in ("capacity", "free_spaces")
        if cls.signal(name) is None
    ]
