"""Config of `[hmi]`, `[hmi.http]` and `[hmi.public]`: web server, sessions, public feed."""

from __future__ import annotations

import ipaddress
import re
from typing import Protocol

from pydantic import Field, field_validator, model_validator

from beffroi.alerts.config import AlarmsConfig
from beffroi.control.config import ControlConfig
from beffroi.core.config import EnvName, Strict
from beffroi.historian.config import CompressionConfig, HistorianConfig
from beffroi.kpi.config import KpiConfig
from beffroi.state.config import StateSite


class PublicFeedConfig(Strict):
    """The unauthenticated open-data feed of car parks: cache and per-address rate limit."""

    enabled: bool = True
    asset_class: str = Field(default="car_park", alias="class")
    cache_s: float = Field(default=10.0, ge=0, le=3600)
    requests_per_min: int = Field(default=60, ge=1)
    max_clients: int = Field(default=10_000, ge=1)
    names: dict[str, str] = {}
    # A count older than this is shown as unavailable: a resident must not drive on stale news.
    stale_s: float = Field(default=900.0, gt=0)
    # The trend compares free spaces now with their mean between trend_min and trend_min/2 ago.
    trend_min: float = Field(default=30.0, ge=2, le=240)
    # Fewer free spaces than this share of capacity: "almost full".
    almost_full_pct: float = Field(default=5.0, ge=0, le=50)
    # How often the residents' page fetches the counts again (it never reloads whole).
    page_refresh_s: float = Field(default=30.0, ge=1, le=600)


class HttpConfig(Strict):
    """The HMI's HTTP front: limits and deadlines that keep slow or abusive clients out."""

    # Every figure bounds what one client can hold: a connection waiting on its client
    # (headers, body or keep-alive) is closed at these deadlines, whatever it trickles.
    max_connections: int = Field(default=1000, ge=16, le=100_000)
    max_per_address: int = Field(default=64, ge=0)  # an IPv4 address or IPv6 /64; 0 = no cap
    header_timeout_s: float = Field(default=10, gt=0, le=300)
    body_timeout_s: float = Field(default=30, gt=0, le=3600)
    idle_timeout_s: int = Field(default=30, ge=1, le=3600)
    max_header_bytes: int = Field(default=64 * 1024, ge=4096, le=1024 * 1024)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, le=1024**3)
    trusted_proxy: str = ""  # the reverse proxy's address ("*": any), whose X-Forwarded-For counts

    @field_validator("trusted_proxy")
    @classmethod
    def _proxy_address(cls, v: str) -> str:
        if v not in ("", "*"):
            try:
                ipaddress.ip_address(v)
            except ValueError:
                raise ValueError(f"expected an IP address or '*', got {v!r}") from None
        return v


_TILE_URL = re.compile(r"^https?://[^/\s]+\S*$")


class TileLayerConfig(Strict):
    """One raster tile layer of the maps: a URL template {z}/{x}/{y}, its credit, its zooms."""

    name: str = Field(min_length=1, max_length=80)
    url: str
    # The provider's credit, shown on the map: every tile service's terms require it.
    attribution: str = Field(default="", validate_default=True)
    subdomains: str = ""  # letters that {s} takes in turn, e.g. "abc"
    min_zoom: int = Field(default=0, ge=0, le=24)
    max_zoom: int = Field(default=19, ge=0, le=24)

    @field_validator("url")
    @classmethod
    def _template(cls, v: str) -> str:
        if not _TILE_URL.match(v):
            raise ValueError(f"expected an http(s) URL template, got {v!r}")
        missing = [p for p in ("{z}", "{x}", "{y}") if p not in v]
        if missing:
            raise ValueError(f"the URL template lacks {', '.join(missing)}: {v!r}")
        return v

    @field_validator("attribution")
    @classmethod
    def _credited(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("required: the tile provider's credit, shown on the map")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> TileLayerConfig:
        if "{s}" in self.url and not self.subdomains:
            raise ValueError('the URL uses {s}: set subdomains (e.g. "abc")')
        if self.min_zoom > self.max_zoom:
            raise ValueError(f"min_zoom ({self.min_zoom}) exceeds max_zoom ({self.max_zoom})")
        return self


class MapConfig(Strict):
    """The maps' background: tile layers (the first is the default) and the offline schematic."""

    layers: list[TileLayerConfig] = []
    # The schematic drawn from the communes (works offline); by default only without layers.
    schematic: bool | None = None
    zoom: int = Field(default=12, ge=3, le=19)

    @field_validator("layers")
    @classmethod
    def _unique_names(cls, v: list[TileLayerConfig]) -> list[TileLayerConfig]:
        names = [layer.name for layer in v]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"layer names must be unique, repeated: {', '.join(twice)}")
        return v

    @property
    def draws_schematic(self) -> bool:
        """Tell whether the offline schematic is drawn (always when there is no tile layer)."""
        return not self.layers or bool(self.schematic)


class HmiConfig(Strict):
    """The web HMI: bind address, threads, users file, sessions and login throttling."""

    host: str = "127.0.0.1"
    port: int = Field(default=8050, ge=1, le=65535)
    threads: int = Field(default=8, ge=1, le=64)
    users_db: str = "var/users.duckdb"
    session_secret_env: EnvName = Field(default="BEFFROI_SESSION_SECRET", min_length=1)
    # A session ends session_hours after login, or session_idle_min after its last request
    # (the pages' refreshes count: an open page stays logged in), whichever comes first.
    session_hours: float = Field(default=12, gt=0, le=24 * 30)
    session_idle_min: float = Field(default=30, gt=0, le=24 * 60 * 30)
    # Logins: past login_attempts failures on one name from one address (login_address_attempts
    # on any names), each failure doubles the wait, from 1 s up to login_delay_max_s; failures
    # are forgotten after login_window_s without one (longer than the longest wait).
    login_attempts: int = Field(default=5, ge=1)
    login_address_attempts: int = Field(default=10, ge=1)
    login_delay_max_s: float = Field(default=300, gt=0)
    login_window_s: float = Field(default=900, gt=0)
    public: PublicFeedConfig = PublicFeedConfig()
    http: HttpConfig = HttpConfig()
    map: MapConfig = MapConfig()

    @model_validator(mode="after")
    def _window_outlasts_waits(self) -> HmiConfig:
        # Otherwise a guesser that waits the longest wait finds its failures forgotten.
        if self.login_window_s <= self.login_delay_max_s:
            raise ValueError(
                f"login_window_s ({self.login_window_s}) must exceed "
                f"login_delay_max_s ({self.login_delay_max_s})"
            )
        return self


class HmiSite(StateSite, Protocol):
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
