"""The seams between packages, as Protocols: what crosses them, and nothing more.

Collectors push `Sample` batches into a `Sink` and write setpoints; historians store samples
and answer queries; small state stores keep the gateway's journals, audit log and users. The
packages implement these (`collectors/base.py`, `historian/base.py`, `state/duckdb.py`); every
other package types against them here, so none depends on another's implementation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from beffroi.core.model import Sample, TagSpec, Value, WriteResult

if TYPE_CHECKING:  # pandas is what queries answer with; core itself never needs it at run time
    import pandas as pd

Sink = Callable[[Sequence[Sample]], None]
Agg = Literal["mean", "min", "max", "first", "last", "count", "sum", "twa", "integral"]


class Collector(Protocol):
    """Reads the tags of one source into a sink, and writes setpoints confirmed by read-back."""

    @property
    def name(self) -> str: ...

    @property
    def protocol(self) -> str: ...

    @property
    def tags(self) -> Mapping[str, TagSpec]: ...

    @property
    def status_tag(self) -> str: ...

    async def start(self, stack: contextlib.AsyncExitStack) -> None:
        """Connect and collect in the background; register the stop on the stack."""
        ...

    async def write(self, tag: str, value: Value) -> WriteResult:
        """Write a setpoint and confirm it by reading it back."""
        ...

    def status(self) -> dict[str, Any]:
        """Return the collector's state for the HMI and /healthz."""
        ...


class Writer(Protocol):
    """Where the write buffer sends samples: a historian, or an edge's Sparkplug publisher."""

    def write(self, batch: Sequence[Sample]) -> int:
        """Store (or hand on) a batch durably; return how many samples went; raise if not."""
        ...


class Historian(Protocol):
    """Stores samples and answers range, aggregate and latest-value queries.

    Query results are DataFrames with columns `ts` (aware UTC), `tag`, `value`, `quality`
    (raw and downsampled queries add `status`), sorted by tag then time.
    """

    @property
    def name(self) -> str: ...

    def write(self, batch: Sequence[Sample]) -> int:
        """Store a batch durably; return how many samples were stored."""
        ...

    def query(
        self,
        tags: Sequence[str],
        start: datetime,
        end: datetime,
        every: timedelta | None = None,
        agg: Agg | None = None,
        max_points: int | None = None,
    ) -> pd.DataFrame:
        """Return values of tags in [start, end), raw, aggregated per `every`, or downsampled."""
        ...

    def latest(self, tags: Sequence[str] | None = None) -> pd.DataFrame:
        """Return the most recent value of each tag (all tags when None)."""
        ...

    def tags(self) -> list[str]:
        """Return every tag that has stored values."""
        ...

    def count(self) -> int:
        """Return the number of stored samples."""
        ...

    def close(self) -> None:
        """Release the storage."""
        ...


class SmallStore(Protocol):
    """A small transactional SQL store of the gateway's state: journal, audit, users, KPIs."""

    @property
    def path(self) -> Path:
        """The store's file (for PostgreSQL, a name of its schema, never its URL)."""
        ...

    @property
    def shared(self) -> bool:
        """True when other processes write the same tables (PostgreSQL, a pair of gateways)."""
        ...

    @property
    def errors(self) -> tuple[type[BaseException], ...]:
        """The exceptions a failed statement raises (the driver's)."""
        ...

    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Keep other threads out for a block: its statements and the state kept beside them."""
        ...

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Run a block's statements as one transaction, rolled back if the block fails."""
        ...

    def exclusive(self, name: str) -> contextlib.AbstractContextManager[None]:
        """A transaction that every other writer of `name`, in any process, waits for."""
        ...

    def run(
        self, sql: str, params: Sequence[Any] = (), views: Mapping[str, Any] | None = None
    ) -> None:
        """Execute a statement; `views` names the tables (DataFrames, Arrow) it reads."""
        ...

    def rows(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Return the rows of a query as tuples."""
        ...

    def one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Return the first value of a query's first row (None when there is no row)."""
        ...

    def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Return the rows of a query as dicts."""
        ...

    def frame(self, sql: str, params: Sequence[Any] = ()) -> pd.DataFrame:
        """Return the result of a query as a DataFrame."""
        ...

    def events(
        self,
        table: str,
        key: str,
        time: str,
        start: datetime | None = None,
        end: datetime | None = None,
        matching: Mapping[str, Sequence[Any]] | None = None,
        *,
        limit: int | None = None,
        aware: Sequence[str] = (),
    ) -> pd.DataFrame:
        """Return a log's rows in [start, end) matching the lists, by `key` (the newest `limit`)."""
        ...

    def close(self) -> None:
        """Checkpoint and close the store."""
        ...
