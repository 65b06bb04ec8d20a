"""Hourly cells: per-asset matrices summed into scopes (metropolis, communes, breakdowns)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from beffroi.core.model import Asset
from beffroi.core.register import Register
from beffroi.kpi.config import KpiSite
from beffroi.kpi.definitions import BREAKDOWNS, scopes_of
from beffroi.kpi.inputs import Reader
from beffroi.kpi.timeline import Grid, Samples

CELL_COLUMNS = ["component", "scope", "hour", "value", "covered", "expected", "filled"]


class ScopeMap:
    """Which scopes each asset of a list counts in, as index arrays for fast sums."""

    def __init__(
        self, assets: Sequence[Asset], domains: Mapping[str, str], breakdowns: tuple[str, ...]
    ):
        self.names: list[str] = []
        ids: dict[str, int] = {}
        per_asset = [
            scopes_of(a.commune, domains[a.asset_class], a.asset_class, breakdowns) for a in assets
        ]
        width = len(per_asset[0]) if per_asset else 0
        self.members = np.zeros((width, len(assets)), np.int64)
        for j, scopes in enumerate(per_asset):
            for i, name in enumerate(scopes):
                if name not in ids:
                    ids[name] = len(self.names)
                    self.names.append(name)
                self.members[i, j] = ids[name]

    def sum(self, matrix: np.ndarray) -> np.ndarray:
        """Sum an (assets, hours) matrix into a (scopes, hours) one."""
        out = np.zeros((len(self.names), matrix.shape[1]))
        for row in self.members:
            np.add.at(out, row, matrix)
        return out


class CellSink:
    """Accumulate components per (scope, hour) over chunks of assets."""

    def __init__(self, hours: list[datetime]):
        self.hours = hours
        self._acc: dict[tuple[str, str], list[np.ndarray]] = {}

    def add(
        self,
        component: str,
        scopes: ScopeMap,
        value: np.ndarray,
        covered: np.ndarray,
        expected: np.ndarray,
        filled: np.ndarray | None = None,
    ) -> None:
        """Add per-asset (assets, hours) matrices of one component to their scopes."""
        if not scopes.names:
            return
        sums = [scopes.sum(m) for m in (value, covered, expected)]
        flag = scopes.sum(filled.astype(float)) if filled is not None else np.zeros_like(sums[0])
        for i, name in enumerate(scopes.names):
            key = (component, name)
            rows = [sums[0][i], sums[1][i], sums[2][i], flag[i]]
            acc = self._acc.get(key)
            if acc is None:
                self._acc[key] = rows
            else:
                for a, r in zip(acc, rows, strict=True):
                    a += r

    def frame(self) -> pd.DataFrame:
        """Return the cells as rows: component, scope, hour (naive UTC), value, covered, ..."""
        if not self._acc:
            return pd.DataFrame({c: [] for c in CELL_COLUMNS})
        n = len(self.hours)
        keys = list(self._acc)
        hours = pd.DatetimeIndex(self.hours).tz_convert("UTC").tz_localize(None)
        stack = np.array([np.stack(self._acc[k]) for k in keys])  # (cells, 4, hours)
        return pd.DataFrame(
            {
                "component": np.repeat([k[0] for k in keys], n),
                "scope": np.repeat([k[1] for k in keys], n),
                "hour": np.tile(hours.to_numpy(), len(keys)),
                "value": stack[:, 0, :].ravel(),
                "covered": stack[:, 1, :].ravel(),
                "expected": stack[:, 2, :].ravel(),
                "filled": stack[:, 3, :].ravel() > 0,
            }
        )


def hold_after_s(cfg: KpiSite, cls_id: str, signal: str, override: float | None = None) -> float:
    """Return the silence after which a value is taken as held rather than a line.

    Stored samples of a compressed signal are at most max_time_s apart while values arrive, and
    equipment reports at least every interval_s while a value moves; a longer silence means
    nothing changed (report by exception).
    """
    if override is not None:
        return override
    spec = next(s for s in cfg.asset_classes[cls_id].signals if s.name == signal)
    hold = 3.0 * spec.interval_s
    rule = cfg.compression.classes.get(cls_id, {}).get(signal)
    if cfg.compression.enabled and rule is not None and rule.method != "off":
        hold = max(hold, rule.max_time_s)
    return hold


def full_hours(n_assets: int, n_hours: int) -> np.ndarray:
    """Return the expected seconds of each asset-hour: the whole hour."""
    return np.full((n_assets, n_hours), 3600.0)


@dataclass(slots=True)
class CellContext:
    """What a family's calculator needs to fill cells for a range of hours."""

    cfg: KpiSite
    register: Register
    reader: Reader
    grid: Grid
    hours: list[datetime]
    sink: CellSink
    margin: timedelta
    events: Callable[[datetime, datetime], pd.DataFrame] | None = None
    chunk: int = 2000
    # When the earliest hole filled in this range began: hours before the range that it covers
    # were computed while it was open, and must be computed again now that it is closed.
    hole_from: float = float("inf")

    def note_fill(self, hole_from: float) -> None:
        """Remember the start of a filled hole."""
        self.hole_from = min(self.hole_from, hole_from)

    @property
    def start(self) -> datetime:
        """Return the first hour's start."""
        return self.hours[0]

    @property
    def end(self) -> datetime:
        """Return the last hour's end."""
        return self.hours[-1] + timedelta(hours=1)

    def assets_of(self, cls_id: str) -> list[Asset]:
        """Return the assets of a class, sorted by id so their tags come back in order."""
        return sorted(
            (a for a in self.register.assets.values() if a.asset_class == cls_id),
            key=lambda a: a.tag(""),
        )

    def chunks(self, assets: list[Asset]) -> Iterator[list[Asset]]:
        """Yield assets in chunks, so memory stays bounded with 10,000s of tags."""
        for i in range(0, len(assets), self.chunk):
            yield assets[i : i + self.chunk]

    def scopes(self, assets: Sequence[Asset], family: str) -> ScopeMap:
        """Return the scopes of assets for a family's breakdowns."""
        domains = {k: c.domain for k, c in self.cfg.asset_classes.items()}
        return ScopeMap(assets, domains, BREAKDOWNS.get(family, ("",)))

    def read(self, tags: list[str]) -> Samples:
        """Read the samples of tags around the hours."""
        return self.reader.read(tags, self.start, self.end, self.margin)
