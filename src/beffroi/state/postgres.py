"""The gateway's small stores in PostgreSQL: one schema per store, shared by a pair of gateways.

The same contract as the DuckDB files (`core.seams.SmallStore`), so the journal, audit log,
users, KPI and inventory stores run unchanged on either. Statements keep DuckDB's `?`
placeholders (turned into psycopg's here); DataFrames and Arrow tables a statement reads go in
as temporary tables by COPY. Each store's schema is migrated to its newest version at open,
under an advisory lock, so two gateways starting at once do not race.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import threading
import zlib
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pandas as pd
import psycopg
import pyarrow as pa
from psycopg import sql as pgsql

from beffroi.core.errors import BeffroiError
from beffroi.state.config import PgPlace
from beffroi.state.sql import MIGRATIONS_TABLE, EventReader, Migrations

log = logging.getLogger(__name__)

# PostgreSQL type OIDs whose Python values a DataFrame column holds as something else.
_TIMESTAMPS = {1114, 1184}  # timestamp, timestamptz
_INTEGERS = {20, 21, 23}  # bigint, smallint, integer
_FLOATS = {700, 701, 1700}  # real, double precision, numeric (sums of bigint are numeric)
_BOOLEAN = 16
# A transaction left idle this long is ended by the server (a client gone mid-transaction);
# a lock waited for this long fails the statement (its transaction rolls back, said).
IDLE_IN_TRANSACTION_MS = 10_000
LOCK_TIMEOUT_MS = 15_000
_INSERT_INTO = re.compile(r"\s*INSERT\s+INTO\s+(\w+)", re.IGNORECASE)


class StoreUnavailable(psycopg.OperationalError, BeffroiError):
    """PostgreSQL cannot be reached: the store's statements fail until it comes back."""


@functools.lru_cache(maxsize=4096)
def _pg(sql: str) -> str:
    """Return a statement with psycopg's placeholders: `?` → `%s`, a literal `%` doubled."""
    return sql.replace("%", "%%").replace("?", "%s")


def _pg_type(t: pa.DataType) -> str:
    """Return the column type of a temporary table holding an Arrow column."""
    if pa.types.is_boolean(t):
        return "BOOLEAN"
    if pa.types.is_integer(t):
        return "BIGINT"
    if pa.types.is_floating(t) or pa.types.is_decimal(t):
        return "DOUBLE PRECISION"
    if pa.types.is_timestamp(t):
        return "TIMESTAMP"
    if pa.types.is_date(t):
        return "DATE"
    return "TEXT"


def _arrow(frame: pd.DataFrame) -> pa.Table:
    """Return a DataFrame as an Arrow table (its types name the temporary table's columns)."""
    return pa.Table.from_pandas(frame, preserve_index=False)


def _plain(v: Any) -> Any:
    """Return a value as PostgreSQL stores it: aware times as naive UTC (TIMESTAMP columns)."""
    if isinstance(v, datetime) and v.tzinfo is not None:
        return v.astimezone(UTC).replace(tzinfo=None)
    return v


def _column(values: list[Any], oid: int) -> Any:
    """Return a result column typed as DuckDB's `.df()` types it, so callers see one shape."""
    if oid in _TIMESTAMPS:
        return pd.to_datetime(pd.Series(values, dtype=object), utc=False)
    if oid in _FLOATS:
        return pd.Series([float(v) if isinstance(v, Decimal) else v for v in values], dtype=float)
    if oid in _INTEGERS:
        return pd.Series(values, dtype=float if None in values else "int64")
    if oid == _BOOLEAN and None not in values:
        return pd.Series(values, dtype=bool)
    return pd.Series(values, dtype=object)


class PgStore(EventReader):
    """One store's schema in PostgreSQL, its own connection, safe across threads."""

    # Several processes write the same tables: callers that keep a counter or a chain head in
    # memory read it again inside `exclusive` (the DuckDB file has one writer, itself).
    shared = True
    errors: tuple[type[BaseException], ...] = (psycopg.Error,)

    def __init__(
        self,
        place: PgPlace,
        migrations: Migrations,
        *,
        read_only: bool = False,
        what: str,
        connect_timeout_s: float = 5.0,
    ):
        self.place, self.what = place, what
        self.path = Path(str(place))
        self.read_only = read_only
        self._timeout = connect_timeout_s
        self._lock = threading.RLock()
        self._con: psycopg.Connection[Any] | None = None
        with self._lock:
            self._connection()
            if not read_only:
                self._migrate(migrations)

    # -- connection ---------------------------------------------------------------------------

    def _connection(self) -> psycopg.Connection[Any]:
        """Return the open connection, opening it again after a loss."""
        if self._con is not None and not self._con.closed and not self._con.broken:
            return self._con
        try:
            self._con = psycopg.connect(
                self.place.url,
                autocommit=True,
                connect_timeout=max(1, round(self._timeout)),
                application_name=f"beffroi {self.place.schema}",
                # UTC: naive times are UTC everywhere in Beffroi, TIMESTAMPTZ columns too. The
                # server gives up on a client that vanished mid-transaction (its locks, the
                # audit chain's and the journal's, would block the other gateway of a pair)
                # and on a lock held too long, instead of waiting for TCP's two hours.
                options=(
                    f"-c search_path={self.place.schema} -c TimeZone=UTC "
                    f"-c idle_in_transaction_session_timeout={IDLE_IN_TRANSACTION_MS} "
                    f"-c lock_timeout={LOCK_TIMEOUT_MS} -c tcp_keepalives_idle=5 "
                    "-c tcp_keepalives_interval=2 -c tcp_keepalives_count=3"
                ),
                # A cut network shows within seconds, not after the kernel's two hours.
                keepalives=1,
                keepalives_idle=5,
                keepalives_interval=2,
                keepalives_count=2,
                tcp_user_timeout=int(self._timeout * 2000),
            )
        except psycopg.OperationalError as exc:
            self._con = None
            raise StoreUnavailable(f"the {self.what} ({self.place}) is unreachable: {exc}") from exc
        return self._con

    def _execute(self, sql: str, params: Sequence[Any]) -> psycopg.Cursor[Any]:
        """Run a statement on the connection; a lost connection is dropped, to open anew."""
        con = self._connection()
        try:
            if not params:  # no binding: a script of several statements runs as it is
                return con.execute(sql)
            return con.execute(_pg(sql), [_plain(p) for p in params])
        except psycopg.OperationalError:
            if con.broken or con.closed:
                self._con = None
            raise

    def _migrate(self, migrations: Migrations) -> None:
        """Bring the schema to its newest version, each step once, under an advisory lock."""
        schema = pgsql.Identifier(self.place.schema)
        con = self._connection()
        with con.transaction():
            key = zlib.crc32(f"beffroi migrate {self.place.schema}".encode())
            con.execute("SELECT pg_advisory_xact_lock(%s)", [key])
            con.execute(pgsql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(schema))
            con.execute(MIGRATIONS_TABLE)
            done = {r[0] for r in con.execute("SELECT version FROM schema_migrations")}
            for version, script in enumerate(migrations, start=1):
                if version in done:
                    continue
                con.execute(script)
                con.execute(
                    "INSERT INTO schema_migrations VALUES (%s, %s)",
                    [version, datetime.now(UTC).replace(tzinfo=None)],
                )
                log.info("%s (%s): schema version %d applied", self.what, self.place, version)

    # -- the SmallStore contract --------------------------------------------------------------

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Keep other threads out for a block: its statements and the state kept beside them."""
        with self._lock:
            yield

    @contextlib.contextmanager
    def transaction(self) -> Iterator[None]:
        """Run a block's statements as one transaction, rolled back if the block fails."""
        with self._lock, self._connection().transaction():
            yield

    @contextlib.contextmanager
    def exclusive(self, name: str) -> Iterator[None]:
        """A transaction that every other writer of `name`, in any process, waits for."""
        with self.transaction():
            self._execute("SELECT pg_advisory_xact_lock(?)", [zlib.crc32(name.encode())])
            yield

    def run(
        self, sql: str, params: Sequence[Any] = (), views: Mapping[str, Any] | None = None
    ) -> None:
        """Execute a statement; `views` names the DataFrames or Arrow tables it reads."""
        with self._lock:
            if not views:
                self._execute(sql, params)
                return
            with self._connection().transaction():
                target = self._column_types(sql)
                for name, data in views.items():
                    self._load(name, data, target)
                self._execute(sql, params)
                for name in views:
                    self._execute(f"DROP TABLE {name}", ())

    def _column_types(self, sql: str) -> dict[str, str]:
        """Return the column types of the table an INSERT fills (none for other statements)."""
        found = _INSERT_INTO.match(sql)
        if found is None:
            return {}
        rows = self._execute(
            "SELECT attname, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = to_regclass(?) AND attnum > 0 AND NOT attisdropped",
            [found[1]],
        ).fetchall()
        return dict(rows)

    def _load(self, name: str, data: Any, target: Mapping[str, str]) -> None:
        """COPY a DataFrame or Arrow table into a temporary table of that name.

        A column the INSERT's table also has takes its type there (an all-NULL column has no
        type of its own, and PostgreSQL casts no text into a timestamp); others, Arrow's.
        """
        table = data if isinstance(data, pa.Table) else _arrow(data)
        columns = ", ".join(
            f'"{f.name}" {target.get(f.name) or _pg_type(f.type)}' for f in table.schema
        )
        self._execute(f"CREATE TEMP TABLE {name} ({columns})", ())
        con = self._connection()
        with con.cursor() as cur, cur.copy(f"COPY {name} FROM STDIN") as copy:
            for row in zip(*(c.to_pylist() for c in table.columns), strict=True):
                copy.write_row([_plain(v) for v in row])

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Return the rows of a query as tuples."""
        with self._lock:
            return self._execute(sql, params).fetchall()

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Return the first value of a query's first row (None when there is no row)."""
        rows = self.rows(sql, params)
        return rows[0][0] if rows else None

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Return the rows of a query as dicts."""
        with self._lock:
            cur = self._execute(sql, params)
            names = [d.name for d in cur.description or ()]
            return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """Return the result of a query as a DataFrame, columns typed as DuckDB types them."""
        with self._lock:
            cur = self._execute(sql, params)
            rows = cur.fetchall()
            described = cur.description or []
        columns = {
            d.name: _column([r[i] for r in rows], d.type_code) for i, d in enumerate(described)
        }
        return pd.DataFrame(columns)

    def close(self) -> None:
        """Close the connection (every statement is already committed)."""
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
