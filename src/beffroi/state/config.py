"""Config of `[state]`: where the gateway's small stores live, DuckDB files or PostgreSQL."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from pydantic import Field

from beffroi.core.config import Strict
from beffroi.core.errors import MissingCredentials
from beffroi.core.site import Site


@dataclass(frozen=True, slots=True)
class PgPlace:
    """A store in PostgreSQL: the server's URL (libpq) and the schema holding its tables."""

    url: str
    schema: str
    timeout_s: float = 5.0  # to connect, and to notice a connection that went silent

    def __str__(self) -> str:
        # Never the URL: it may carry a password, and this text goes to logs and messages.
        return f"postgresql schema {self.schema}"


# Where a store lives: its DuckDB file, or its schema in PostgreSQL.
Place = Path | PgPlace


class StateConfig(Strict):
    """The alarm journal, outboxes, audit log, users, KPI and inventory stores: their back end."""

    # duckdb: one file per store beside the historian (one machine). postgres: one schema per
    # store in a shared database, what a redundant pair of gateways needs.
    backend: Literal["duckdb", "postgres"] = "duckdb"
    # The environment variable holding the libpq URL (postgresql://user@host:5432/db); its
    # password, if any, may also come from PGPASSWORD or ~/.pgpass, as libpq reads them.
    url_env: str = Field(default="BEFFROI_STATE_URL", min_length=1)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=60)

    def url(self) -> str:
        """Return the PostgreSQL URL from the environment; MissingCredentials when it is not set."""
        url = os.environ.get(self.url_env, "").strip()
        if not url:
            raise MissingCredentials(
                f"state.url_env: the environment variable {self.url_env} is not set; "
                '[state] backend = "postgres" reads the URL of PostgreSQL from it '
                "(e.g. postgresql://beffroi@db.example:5432/beffroi)"
            )
        return url

    def place(self, path: Path, schema: str) -> Place:
        """Return where a store lives: its file `path`, or `schema` in PostgreSQL."""
        if self.backend == "duckdb":
            return path
        return PgPlace(self.url(), schema, self.connect_timeout_s)


class StateSite(Site, Protocol):
    """What a package keeping a store reads of the config: `[state]`."""

    @property
    def state(self) -> StateConfig: ...


def exists(place: Place) -> bool:
    """Tell whether a store is there to read: its file, or (PostgreSQL) always, to be asked."""
    return place.exists() if isinstance(place, Path) else True
