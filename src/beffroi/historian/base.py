"""The base of every historian back end: the contract of `core.seams.Historian`, checked."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Self, get_args

import pandas as pd

from beffroi.core.model import Sample
from beffroi.core.register import Register
from beffroi.core.scheduler import Scheduler
from beffroi.core.seams import Agg
from beffroi.historian.config import HistorianSite

AGGREGATES: tuple[str, ...] = get_args(Agg)
COLUMNS = ["ts", "tag", "value", "quality"]
# Raw queries add the OPC UA status code the sample was written with (0 for plain Good).
RAW_COLUMNS = [*COLUMNS, "status"]
_DTYPES = {
    "ts": "datetime64[us, UTC]",
    "tag": "object",
    "value": "float64",
    "quality": "int64",
    "status": "int64",
}


def empty_result(columns: Sequence[str] = COLUMNS) -> pd.DataFrame:
    """Return a query result without rows, its columns typed as the contract says."""
    return pd.DataFrame({c: pd.Series(dtype=_DTYPES[c]) for c in columns})


class HistorianBackend(ABC):
    """Stores samples and answers range, aggregate and latest-value queries.

    Query results are DataFrames with columns `ts` (aware UTC), `tag`, `value`, `quality`
    (int, see Quality), sorted by tag then time; raw and downsampled queries add `status`, the
    full OPC UA status code of each sample (`Sample.status`, 0 for plain Good). `value` holds
    floats (booleans as 0/1); text values come back in `value` as strings when the tag is
    textual.

    Writing a sample with the same tag and timestamp as a stored one replaces it (replaying a
    spool twice is harmless). Aggregates work on numeric values per bucket of width `every`,
    aligned on multiples of `every` since the Unix epoch, over the samples inside the bucket:
    `twa` is the time-weighted mean and `integral` the trapezoidal integral in value·hours
    (kW → kWh), both linear between consecutive samples of the bucket; the bucket's quality is
    the worst of its samples.
    """

    name: str = "historian"

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: HistorianSite, register: Register) -> Self:
        """Open the back end as `[historian]` configures it."""

    def schedule(self, scheduler: Scheduler, cfg: HistorianSite) -> None:  # noqa: B027
        """Register the back end's maintenance jobs (compaction, retention); none by default."""

    @abstractmethod
    def write(self, batch: Sequence[Sample]) -> int:
        """Store a batch durably; return how many samples were stored."""

    @abstractmethod
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

    @staticmethod
    def check_query(every: timedelta | None, agg: str | None, max_points: int | None) -> None:
        """Refuse query arguments that mean nothing, with a message saying why."""
        if agg is not None and agg not in AGGREGATES:
            raise ValueError(f"unknown aggregate {agg!r}; expected one of {', '.join(AGGREGATES)}")
        if (every is None) != (agg is None):
            raise ValueError("`every` and `agg` go together")
        if every is not None and every <= timedelta(0):
            raise ValueError("`every` must be positive")
        if max_points is not None and max_points < 3:
            raise ValueError("max_points must be at least 3")

    @abstractmethod
    def latest(self, tags: Sequence[str] | None = None) -> pd.DataFrame:
        """Return the most recent value of each tag (all tags when None)."""

    @abstractmethod
    def tags(self) -> list[str]:
        """Return every tag that has stored values."""

    @abstractmethod
    def count(self) -> int:
        """Return the number of stored samples."""

    def close(self) -> None:  # noqa: B027 - back ends without resources need not override
        """Release the storage."""
