"""Config of `[[collectors.opcua]]`: the server, monitoring rules, discovery and security."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from beffroi.collectors.config import CollectorConfig, scope_problems
from beffroi.core.config import Credentials, OpcUrl, Strict
from beffroi.core.site import Site


class OpcUaRuleConfig(Strict):
    """Monitoring settings for the tags whose name matches a glob; the first match wins."""

    match: str = "*"
    sampling_interval_ms: float | None = Field(default=None, ge=0)
    queue_size: int | None = Field(default=None, ge=1, le=10_000)
    deadband: float = Field(default=0.0, ge=0)
    deadband_type: Literal["none", "absolute", "percent"] = "none"

    @model_validator(mode="after")
    def _percent_range(self) -> OpcUaRuleConfig:
        if self.deadband_type == "percent" and self.deadband > 100:
            raise ValueError(f"a percent deadband is at most 100, got {self.deadband}")
        if self.deadband_type == "none" and self.deadband > 0:
            raise ValueError("deadband needs deadband_type = 'absolute' or 'percent'")
        return self


class OpcUaDiscoveryConfig(Strict):
    """Find tags by browsing `root/<commune>/<asset>/<signal>` instead of listing node ids."""

    root: str = Field(min_length=1, description="browse path under Objects, or a node id")


class OpcUaCollectorConfig(CollectorConfig, Credentials):
    """An OPC UA server to subscribe to (or to poll)."""

    url: OpcUrl
    namespace: str = "urn:beffroi:simulator"
    mode: Literal["subscribe", "poll"] = "subscribe"
    publishing_interval_ms: int = Field(default=500, ge=10)
    keepalive_s: float = Field(default=5.0, gt=0, le=600)
    queue_size: int = Field(default=10, ge=1, le=10_000)
    chunk_size: int = Field(default=1000, ge=1)
    timeout_s: float = Field(default=4.0, gt=0)
    security_policy: Literal["None", "Basic256Sha256"] = "None"
    security_mode: Literal["None", "Sign", "SignAndEncrypt"] = "None"
    pki_dir: str = "var/pki"
    trust_on_first_use: bool = False
    communes: list[str] = []
    classes: list[str] = []
    rules: list[OpcUaRuleConfig] = []
    discovery: OpcUaDiscoveryConfig | None = None
    # Look at the server again this often (0: never): with discovery, browse again (assets
    # added while running join the inventory, tags gone are not offered any more); with
    # register tags, read their nodes (a node deleted, or back, is noticed even from a server
    # that does not say so).
    rediscover_s: float = Field(default=600.0, ge=0)

    @model_validator(mode="after")
    def _security_pair(self) -> OpcUaCollectorConfig:
        if (self.security_policy == "None") != (self.security_mode == "None"):
            raise ValueError(
                f"security_policy {self.security_policy!r} and security_mode "
                f"{self.security_mode!r} do not go together (None with None, Basic256Sha256 "
                "with Sign or SignAndEncrypt)"
            )
        return self


def opcua_problems(site: Site, configs: list[OpcUaCollectorConfig]) -> list[str]:
    """Check the OPC UA collectors' references to communes and asset classes."""
    problems: list[str] = []
    for i, col in enumerate(configs):
        problems += scope_problems(site, f"collectors.opcua[{i}]", col.communes, col.classes)
    return problems
