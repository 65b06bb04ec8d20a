"""Small DuckDB files that services keep beside the historian: open, query, filter, close."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd

from beffroi.core.errors import BeffroiError
from beffroi.state.sql import MIGRATIONS_TABLE, EventReader, Migrations


# Still a duckdb.IOException, what DuckDB raised before, so `except duckdb.Error` keeps working;
# a BeffroiError, so `beffroi run` shows it as a message rather than a traceback.
class StoreLocked(duckdb.IOException, BeffroiError):
    """Another process holds the file: DuckDB lets one process at a time open it for writing."""


def _connect(path: Path, read_only: bool, what: str) -> duckdb.DuckDBPyConnection:
    """Open the file, or raise StoreLocked naming it when another process holds it."""
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.IOException as exc:
        if "lock" not in str(exc).lower():
            raise
        pid = re.search(r"PID (\d+)", str(exc))
        holder = f" (PID {pid[1]})" if pid else ""
        raise StoreLocked(f"{path}: the {what} is locked by another process{holder}") from exc


class SideStore(EventReader):
    """One DuckDB file of a service's own, its schema made at open, safe across threads."""

    # One process writes the file (DuckDB locks it): what a caller keeps in memory beside it
    # (a counter, a chain's head) stays true, and `exclusive` needs no lock of its own.
    shared = False
    errors: tuple[type[BaseException], ...] = (duckdb.Error,)

    def __init__(
        self, path: str | Path, migrations: Migrations, *, read_only: bool = False, what: str
    ):
        self.path = Path(path)
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._con = _connect(self.path, read_only, what)
        # One connection, one lock: the traffic is small and DuckDB connections are not meant to
        # be used by several threads at once. Re-entrant, so locked() can group statements.
        self._lock = threading.RLock()
        if not read_only:
            self._migrate(migrations)

    def _migrate(self, migrations: Migrations) -> None:
        """Bring the file to its schema's newest version, each step once, in a transaction."""
        with self.transaction():
            self._con.execute(MIGRATIONS_TABLE)
            versions = self._con.execute("SELECT version FROM schema_migrations").fetchall()
            done = {r[0] for r in versions}
            for version, script in enumerate(migrations, start=1):
                if version not in done:
                    self._con.execute(script).fetchall()
                    self._con.execute(
                        "INSERT INTO schema_migrations VALUES (?, ?)",
                        [version, datetime.now(UTC).replace(tzinfo=None)],
                    )

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Keep other threads out for a block: its statements and the state kept beside them."""
        with self._lock:
            yield

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Run a block's statements as one transaction, rolled back if the block fails."""
        with self._lock:
            self._con.execute("BEGIN")
            try:
                yield
                self._con.execute("COMMIT")
            except BaseException:
                self._con.execute("ROLLBACK")
                raise

    @contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """A transaction no other writer of `name` runs beside (this process is the only one)."""
        with self.transaction():
            yield

    def run(
        self, sql: str, params: Sequence[Any] = (), views: Mapping[str, Any] | None = None
    ) -> None:
        """Execute a statement; `views` names the DataFrames or Arrow tables it reads."""
        views = views or {}
        with self._lock:
            for name, data in views.items():
                self._con.register(name, data)
            try:
                self._con.execute(sql, list(params)).fetchall()
            finally:
                for name in views:
                    self._con.unregister(name)

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple]:
        """Return the rows of a query as tuples."""
        with self._lock:
            return self._con.execute(sql, list(params)).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Return the first value of a query's first row (None when there is no row)."""
        rows = self.rows(sql, params)
        return rows[0][0] if rows else None

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Return the rows of a query as dicts."""
        with self._lock:
            cur = self._con.execute(sql, list(params))
            names = [d[0] for d in cur.description]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """Return the result of a query as a DataFrame."""
        with self._lock:
            return self._con.execute(sql, list(params)).df()

    def close(self) -> None:
        """Checkpoint and close the file."""
        with self._lock:
            try:
                self._con.execute("CHECKPOINT").fetchall()
            except duckdb.Error:
                pass  # read-only: nothing to write
            self._con.close()
