"""The gateway's small stores: DuckDB files on one machine, or PostgreSQL for a pair."""

from __future__ import annotations

from pathlib import Path

from beffroi.core.seams import SmallStore
from beffroi.state.config import PgPlace, Place
from beffroi.state.duckdb import SideStore
from beffroi.state.postgres import PgStore
from beffroi.state.sql import Migrations


def open_store(
    where: Place | str, migrations: Migrations, *, what: str, read_only: bool = False
) -> SmallStore:
    """Open a store where it lives, its schema migrated to the newest version (unless read-only)."""
    if isinstance(where, PgPlace):
        return PgStore(
            where, migrations, read_only=read_only, what=what, connect_timeout_s=where.timeout_s
        )
    return SideStore(Path(where), migrations, read_only=read_only, what=what)
