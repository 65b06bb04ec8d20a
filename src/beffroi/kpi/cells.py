"""Hourly cells: per-asset matrices summed into scopes (metropolis, communes, breakdowns)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from beffroi.core.model import Asset
from beffroi.core.register import Register
from beffroi.kpi.config import KpiSite
from beffroi.kpi.definitions import BREAKDOWNS, scopes_of
from beffroi.kpi.in_service import ALWAYS, InService, expected_seconds
from beffroi.kpi.inputs import Reader
from beffroi.kpi.timeline import COMM_LOSS, Grid, Samples

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
    # Assets added or retired while running: each counts only while in service (None: all
    # assets of the register count for every hour, as for an engine that never saw a change).
    in_service: InService | None = None
    _by_class: dict[str, list[Asset]] | None = field(default=None, init=False, repr=False)
    # The tenure of each asset record handed out by assets_of, by identity: a retired record
    # and its successor (reclassified, or added again) share an id but not their tenure.
    _windows: dict[int, tuple[float, float]] = field(default_factory=dict, init=False, repr=False)

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
        """Return the assets of a class in service during the hours, sorted by tag path."""
        if self.in_service is None:
            found: Iterator[Asset] | list[Asset] = (
                a for a in self.register.assets.values() if a.asset_class == cls_id
            )
        else:
            if self._by_class is None:
                self._by_class = {}
                start, end = self.start.timestamp(), self.end.timestamp()
                for t in self.in_service.tenures(self.register, start, end):
                    self._by_class.setdefault(t.asset.asset_class, []).append(t.asset)
                    if (t.since, t.until) != ALWAYS:
                        self._windows[id(t.asset)] = (t.since, t.until)
            found = self._by_class.get(cls_id, [])
        return sorted(found, key=lambda a: a.tag(""))

    def retired_assets(self) -> list[Asset]:
        """Return the records retired while running that count in some of these hours."""
        assets = self.register.assets
        return [a for group in (self._by_class or {}).values() for a in group
                if assets.get(a.id) is not a]  # fmt: skip

    def window(self, asset: Asset) -> tuple[float, float]:
        """Return an asset's tenure [since, until) in epoch seconds (always, for most)."""
        return self._windows.get(id(asset), ALWAYS)

    def expected(self, assets: Sequence[Asset]) -> np.ndarray:
        """Return each asset-hour's expected seconds: the part of the hour it is in service."""
        if not self._windows:
            return full_hours(len(assets), self.grid.n)
        return expected_seconds([self.window(a) for a in assets], self.grid.edges)

    def chunks(self, assets: list[Asset]) -> Iterator[list[Asset]]:
        """Yield assets in chunks, so memory stays bounded with 10,000s of tags."""
        for i in range(0, len(assets), self.chunk):
            yield assets[i : i + self.chunk]

    def scopes(self, assets: Sequence[Asset], family: str) -> ScopeMap:
        """Return the scopes of assets for a family's breakdowns."""
        domains = {k: c.domain for k, c in self.cfg.asset_classes.items()}
        return ScopeMap(assets, domains, BREAKDOWNS.get(family, ("",)))

    def read(self, assets: Sequence[Asset], signal: str) -> Samples:
        """Read the samples of one signal of assets around the hours, cut to their tenures."""
        s = self.reader.read([a.tag(signal) for a in assets], self.start, self.end, self.margin)
        if not self._windows:
            return s
        windows = [self.window(a) for a in assets]
        if all(w == ALWAYS for w in windows):
            return s
        return within(s, windows)


def within(s: Samples, windows: Sequence[tuple[float, float]]) -> Samples:
    """Keep each tag's samples inside its tenure; a tenure's end is a hole from then on.

    The hole (a CommLoss mark at the retirement) ends the value path there: a held value does
    not run on after the asset left, and nothing after it is covered or filled.
    """
    w = np.array(windows, float).reshape(-1, 2)
    since, until = w[s.tag, 0], w[s.tag, 1]
    keep = (s.t >= since) & (s.t < until)
    ends = np.flatnonzero(np.isfinite(w[:, 1]))
    if not len(ends):
        return s.take(keep)
    tag = np.concatenate([s.tag[keep], ends])
    t = np.concatenate([s.t[keep], w[ends, 1]])
    v = np.concatenate([s.v[keep], np.full(len(ends), math.nan)])
    q = np.concatenate([s.q[keep], np.full(len(ends), COMM_LOSS, s.q.dtype)])
    order = np.lexsort((t, tag))
    return Samples(tag[order], t[order], v[order], q[order], s.n_tags)
