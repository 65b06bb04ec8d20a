"""Config of `[inventory]`: files imported at start, the store, and how long a gone tag waits."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from pydantic import Field

from beffroi.core.config import Strict
from beffroi.state.config import Place, StateSite


class InventoryConfig(Strict):
    """The living inventory: what is imported at start, where it is kept, removal's grace."""

    # CSV or GeoJSON files imported at every start, in order (a later file wins for an id);
    # each is the whole inventory of its origin: an asset it no longer lists is retired.
    files: list[str] = []
    store: str = Field(default="", description="default: inventory.duckdb beside the historian")
    # A tag or asset the server no longer offers is "removed at source" after this long, with
    # a system alarm; before, it is only Bad (BadNodeIdUnknown), as a short outage would be.
    removed_after_s: float = Field(default=3600.0, ge=0)


class InventorySite(StateSite, Protocol):
    """What the inventory reads of the config."""

    @property
    def inventory(self) -> InventoryConfig: ...


def store_path(site: InventorySite) -> Path:
    """Return the inventory store: as configured, or inventory.duckdb in the data folder."""
    if site.inventory.store:
        return site.resolve(site.inventory.store)
    return site.data_dir() / "inventory.duckdb"


def store_place(site: InventorySite) -> Place:
    """Return where the inventory lives: its file, or the `inventory` schema in PostgreSQL."""
    return site.state.place(store_path(site), "inventory")
