"""The contract every historian back end fulfils."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Literal

import pandas as pd

from beffroi.core.model import Sample

Agg = Literal["mean", "min", "max", "first", "last", "count", "sum"]
AGGREGATES: tuple[str, ...] = ("mean", "min", "max", "first", "last", "count", "sum")
COLUMNS = ["ts", "tag", "value", "quality"]


class Historian(ABC):
    """Stores samples and answers range, aggregate and latest-value queries.

    Query results are DataFrames with columns `ts` (aware UTC), `tag`, `value`, `quality`
    (int, see Quality), sorted by tag then time. `value` holds floats (booleans as 0/1);
    text values come back in `value` as strings when the tag is textual.
    """

    name: str = "historian"

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
