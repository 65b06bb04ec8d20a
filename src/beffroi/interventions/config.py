"""Config of interventions and residents' reports (`[interventions]`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from pydantic import Field

from beffroi.alerts.config import AlarmsConfig, Severity
from beffroi.core.config import Strict
from beffroi.state.config import Place, StateSite

ROLES_WITH_CONTACTS = ("supervisor", "admin")


class ReportsConfig(Strict):
    """The residents' public report page and its JSON endpoint (no login)."""

    enabled: bool = True
    per_min: int = Field(default=3, ge=1, le=1000, description="reports per client address")
    max_clients: int = Field(default=10_000, ge=100)
    max_text_chars: int = Field(default=1000, ge=50, le=10_000)
    max_body_bytes: int = Field(default=16_384, ge=1024, le=1_048_576)


class InterventionsConfig(Strict):
    """Work orders: made from alarms by the `[alarms]` routes, by operators, from reports."""

    enabled: bool = True
    store: str = Field(default="", description="default: interventions.duckdb beside the historian")
    from_alarms: bool = True
    # Alarms of severity 1..auto_severity routed to a team open its intervention themselves;
    # the others wait for an operator.
    auto_severity: Severity = 3
    field_link_hours: float = Field(default=72.0, gt=0, le=24 * 31)
    link_secret_env: str = "BEFFROI_FIELD_LINK_SECRET"
    contact_retention_days: float = Field(default=30.0, ge=0, le=3650)
    contact_roles: list[str] = list(ROLES_WITH_CONTACTS)
    match_radius_m: float = Field(default=200.0, gt=0, le=5000)
    reports: ReportsConfig = ReportsConfig()


class InterventionsSite(StateSite, Protocol):
    """What interventions read of the config."""

    @property
    def interventions(self) -> InterventionsConfig: ...

    @property
    def alarms(self) -> AlarmsConfig: ...

    def hmi_url(self) -> str: ...


def interventions_path(cfg: InterventionsSite) -> Path:
    """Return the store: as configured, or interventions.duckdb in the data folder."""
    if cfg.interventions.store:
        return cfg.resolve(cfg.interventions.store)
    return cfg.data_dir() / "interventions.duckdb"


def interventions_place(cfg: InterventionsSite) -> Place:
    """Return where the store lives: its file, or the `interventions` schema in PostgreSQL."""
    return cfg.state.place(interventions_path(cfg), "interventions")


def interventions_problems(cfg: InterventionsSite, roles: Sequence[str]) -> list[str]:
    """Check the roles named in `[interventions]` against the HMI's."""
    return [
        f"interventions.contact_roles: unknown role {r!r}; expected one of {', '.join(roles)}"
        for r in cfg.interventions.contact_roles
        if r not in roles
    ]
