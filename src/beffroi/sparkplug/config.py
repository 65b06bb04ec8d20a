"""Config of `[sparkplug]`: the broker, the group, the primary host and the edges."""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import Field, model_validator

from beffroi.collectors.config import CollectorConfig
from beffroi.core.config import Credentials, Slug, Strict
from beffroi.core.site import Site


class SparkplugEdgeConfig(Strict):
    """An edge node: the communes whose equipment it collects (`beffroi run --role edge`)."""

    name: Slug  # the Sparkplug edge node id
    communes: list[str] = []  # empty: every commune the collectors read


class SparkplugConfig(CollectorConfig, Credentials):
    """Edges and the central site joined through an MQTT broker with Sparkplug B 3.0.

    `name` is the primary host id of the central site (its STATE topic); as the central
    site's collector of every edge, it also names the `_system/collector/<name>/…` tags.
    """

    name: Slug = "beffroi-central"
    host: str = "127.0.0.1"
    port: int = Field(default=1883, ge=1, le=65535)
    group: Slug = "beffroi"  # the Sparkplug group id of every edge
    keepalive_s: int = Field(default=10, ge=2, le=3600)
    # Sparkplug asks QoS 0 for data; QoS 1 (the default) lets the edge know the broker has
    # each message before it counts it sent, so a cut link loses nothing (the spool keeps it).
    data_qos: Literal[0, 1] = 1
    # A command's answer (the value the equipment reports) is awaited this long.
    write_timeout_s: float = Field(default=15.0, gt=0)
    max_payload_bytes: int = Field(default=4_000_000, ge=1024)
    batch_metrics: int = Field(default=2000, ge=1, le=100_000)  # per data message
    edges: list[SparkplugEdgeConfig] = []

    @model_validator(mode="after")
    def _unique_edges(self) -> SparkplugConfig:
        names = [e.name for e in self.edges]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"edge names must be unique: {', '.join(dup)}")
        return self

    def edge(self, name: str) -> SparkplugEdgeConfig:
        """Return the config of one edge; KeyError naming the known ones when absent."""
        for e in self.edges:
            if e.name == name:
                return e
        known = ", ".join(e.name for e in self.edges) or "none"
        raise KeyError(f"no [[sparkplug.edges]] named {name!r} (known: {known})")


class SparkplugSite(Site, Protocol):
    """What the Sparkplug roles read of the config."""

    @property
    def sparkplug(self) -> SparkplugConfig: ...


def sparkplug_problems(site: Site, cfg: SparkplugConfig) -> list[str]:
    """Check the edges' communes against the site."""
    known = set(site.commune_ids())
    return [
        f"sparkplug.edges[{i}].communes: unknown commune {c!r}"
        for i, e in enumerate(cfg.edges)
        for c in e.communes
        if c not in known
    ]
