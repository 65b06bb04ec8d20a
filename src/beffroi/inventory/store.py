"""The inventory's own file: every asset record that is not the generated register's, and the log.

The generated demo register is rebuilt from the config at every start; this file keeps what
came on top of it — imported records, discovered assets and operators' confirmations, retired
and removed states — so that a restart brings back the inventory as it was.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import date, datetime
from typing import Any

import pandas as pd

from beffroi.core.model import Asset, naive_utc, utcnow
from beffroi.core.seams import SmallStore
from beffroi.state import open_store
from beffroi.state.config import Place

SCHEMA = """
CREATE TABLE IF NOT EXISTS assets (
    id VARCHAR PRIMARY KEY, class VARCHAR NOT NULL, commune VARCHAR NOT NULL,
    lat DOUBLE PRECISION NOT NULL, lon DOUBLE PRECISION NOT NULL, name VARCHAR,
    address VARCHAR, model VARCHAR,
    installed DATE, attributes VARCHAR, source VARCHAR NOT NULL, origin VARCHAR,
    state VARCHAR NOT NULL, updated TIMESTAMP NOT NULL
);
CREATE TABLE IF NOT EXISTS changes (
    ts TIMESTAMP NOT NULL, user_name VARCHAR NOT NULL, source VARCHAR, change VARCHAR NOT NULL,
    asset VARCHAR NOT NULL, commune VARCHAR, detail VARCHAR
);
"""
MIGRATIONS = (SCHEMA,)
COLUMNS = [
    "id", "class", "commune", "lat", "lon", "name", "address", "model", "installed",
    "attributes", "source", "origin", "state", "updated",
]  # fmt: skip


class InventoryStore:
    """Asset records beyond the generated register, and the log of every change."""

    def __init__(self, where: Place | str, read_only: bool = False):
        self._db: SmallStore = open_store(where, MIGRATIONS, read_only=read_only, what="inventory")
        self.path = self._db.path

    def records(self) -> list[dict[str, Any]]:
        """Return every stored record, oldest change first."""
        rows = self._db.fetch(f"SELECT {', '.join(COLUMNS)} FROM assets ORDER BY updated, id")
        for r in rows:
            r["attributes"] = json.loads(r["attributes"] or "{}")
        return rows

    def save(self, assets: Iterable[Asset]) -> int:
        """Store (or replace) the records of assets, in one transaction."""
        now = naive_utc(utcnow())
        # One row per id: the last record given wins (a reclassified asset: old, then new).
        rows = list({a.id: _row(a, now) for a in assets}.values())
        if not rows:
            return 0
        frame = pd.DataFrame(rows, columns=COLUMNS)
        with self._db.transaction():
            self._db.run(
                "DELETE FROM assets WHERE id IN (SELECT id FROM incoming)", (), {"incoming": frame}
            )
            self._db.run("INSERT INTO assets SELECT * FROM incoming", (), {"incoming": frame})
        return len(rows)

    def log(self, entries: Iterable[tuple[str, str, str, str, str, dict[str, Any]]]) -> None:
        """Keep changes: (user, source, change, asset, commune, detail) each."""
        now = naive_utc(utcnow())
        rows: list[tuple[Any, ...]] = [
            (now, u, s, c, a, m, json.dumps(d, default=str)) for u, s, c, a, m, d in entries
        ]
        if not rows:
            return
        frame = pd.DataFrame(
            rows, columns=["ts", "user_name", "source", "change", "asset", "commune", "detail"]
        )
        self._db.run("INSERT INTO changes SELECT * FROM incoming", (), {"incoming": frame})

    def changes(self, limit: int = 1000) -> pd.DataFrame:
        """Return the newest changes, newest first."""
        return self._db.frame("SELECT * FROM changes ORDER BY ts DESC LIMIT ?", [int(limit)])

    def close(self) -> None:
        """Checkpoint and close the file."""
        self._db.close()


def _row(a: Asset, now: datetime) -> tuple[Any, ...]:
    installed: date | None = a.installed
    return (
        a.id, a.asset_class, a.commune, a.lat, a.lon, a.name, a.address, a.model, installed,
        json.dumps(a.attributes, ensure_ascii=False, sort_keys=True), a.source, a.origin,
        a.state, now,
    )  # fmt: skip
