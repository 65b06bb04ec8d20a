"""Config shared by every collector table: reconnect backoff and the register slice it reads."""

from __future__ import annotations

from pydantic import Field, model_validator

from beffroi.core.config import Slug, Strict
from beffroi.core.site import Site


class CollectorConfig(Strict):
    """What every `[[collectors.<protocol>]]` entry has: a name and its reconnect backoff."""

    name: Slug
    # The first retries come after reconnect_min_s, then the delay doubles up to
    # reconnect_max_s: values resume at most that long after the equipment is back.
    reconnect_min_s: float = Field(default=0.5, gt=0)
    reconnect_max_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _backoff_ordered(self) -> CollectorConfig:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must not exceed "
                f"reconnect_max_s ({self.reconnect_max_s})"
            )
        return self


def scope_problems(site: Site, where: str, communes: list[str], classes: list[str]) -> list[str]:
    """Check a collector's `communes` and `classes` filters against the site."""
    known = set(site.commune_ids())
    problems = [
        f"{where}.communes[{j}]: unknown commune {c!r}"
        for j, c in enumerate(communes)
        if c not in known
    ]
    problems += [
        f"{where}.classes[{j}]: unknown asset class {k!r}"
        for j, k in enumerate(classes)
        if k not in site.asset_classes
    ]
    return problems
