"""KPI values from summed cells, as historian samples; and what changed in closed periods."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd

from beffroi.core.model import Quality, Sample
from beffroi.core.seams import Historian
from beffroi.kpi.definitions import COVERAGE, KpiDef, series_tag
from beffroi.kpi.periods import Resolution
from beffroi.kpi.store import KpiStore, aware, naive

VALUE_COLUMNS = ["kpi", "resolution", "scope", "period_start", "value", "coverage", "filled"]


def values_from_sums(
    sums: pd.DataFrame,
    kpis: Iterable[KpiDef],
    params: Mapping[str, float],
    resolution: Resolution,
    start: datetime,
    period_hours: float = 1.0,
) -> pd.DataFrame:
    """Return one row per (KPI, scope) from components summed over one period.

    Coverage is over the whole period: hours not computed yet (the rest of today) count as
    not covered, so a day in progress shows how much of it is known.
    """
    return _values(sums, kpis, params, resolution, start, period_hours)


def many_values(
    sums: pd.DataFrame,
    kpis: Iterable[KpiDef],
    params: Mapping[str, float],
    resolution: Resolution,
) -> pd.DataFrame:
    """Return one row per (KPI, period, scope) from sums of many periods, all at once.

    `sums` has a `period` column (the period's start) and, for days and months, `hours`
    (hours computed) and `period_hours` (hours of the whole period) columns.
    """
    return _values(sums, kpis, params, resolution, None, 1.0)


def _values(
    sums: pd.DataFrame,
    kpis: Iterable[KpiDef],
    params: Mapping[str, float],
    resolution: Resolution,
    start: datetime | None,
    period_hours: float,
) -> pd.DataFrame:
    """Return KPI rows of one period (`start`), or of each row's `period` when start is None."""
    rows: list[pd.DataFrame] = []
    if sums.empty:
        return pd.DataFrame(columns=VALUE_COLUMNS)
    key = "scope" if start is not None else ["period", "scope"]
    table = {c: g.set_index(key) for c, g in sums.groupby("component", sort=False)}
    for k in kpis:
        if resolution not in k.resolutions or any(c not in table for c in k.components):
            continue
        scopes = table[k.components[0]].index
        for c in k.components[1:]:
            scopes = scopes.intersection(table[c].index)
        if scopes.empty:
            continue
        comps = {c: table[c].loc[scopes, "value"].to_numpy(float) for c in k.components}
        covered = sum(table[c].loc[scopes, "covered"].to_numpy(float) for c in k.coverage_from)
        expected = sum(_full(table[c].loc[scopes], period_hours) for c in k.coverage_from)
        filled = np.zeros(len(scopes), bool)
        for c in k.components:
            filled |= table[c].loc[scopes, "filled"].to_numpy(bool)
        with np.errstate(divide="ignore", invalid="ignore"):
            coverage = np.where(
                expected > 0, 100.0 * covered / np.where(expected > 0, expected, 1), 0
            )
        value = np.asarray(k.value(comps, params), float)
        if k.is_total:
            # A total with neither Good nor gap-filled input measured nothing: not 0 kWh.
            value = np.where((coverage > 0) | filled, value, np.nan)
        if start is None:  # (period, scope) pairs: each row's own period, as aware UTC
            period_start: Any = [aware(h) for h in scopes.get_level_values(0)]
            scope_names = scopes.get_level_values(1).to_numpy()
        else:
            period_start, scope_names = start, scopes.to_numpy()
        rows.append(
            pd.DataFrame(
                {
                    "kpi": k.name,
                    "resolution": resolution,
                    "scope": scope_names,
                    "period_start": period_start,
                    # Rounded (µWh, 1e-6 %) so exports print short numbers equal to the series.
                    "value": np.round(value, 6),
                    "coverage": np.round(np.minimum(coverage, 100.0), 6),
                    "filled": filled,
                }
            )
        )
    return pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=VALUE_COLUMNS)


def _full(rows: pd.DataFrame, period_hours: float) -> np.ndarray:
    """Return the expected seconds of a whole period, from those of the hours computed."""
    expected = rows["expected"].to_numpy(float)
    if "hours" not in rows:
        return expected
    whole: Any = rows["period_hours"].to_numpy(float) if "period_hours" in rows else period_hours
    return expected / np.maximum(rows["hours"].to_numpy(float), 1) * whole


def period_values(
    store: KpiStore,
    kpis: list[KpiDef],
    params: Mapping[str, float],
    resolution: Resolution,
    periods: list[tuple[datetime, datetime]],
) -> pd.DataFrame:
    """Return the KPI values of periods of one resolution, from the store's cells."""
    wanted = [k for k in kpis if resolution in k.resolutions]
    if not wanted or not periods:
        return pd.DataFrame(columns=VALUE_COLUMNS)
    frames = []
    if resolution == "hour":
        comps = sorted({c for k in wanted for c in k.components})
        cells = store.hourly(periods[0][0], periods[-1][1], comps)
        return many_values(cells.rename(columns={"hour": "period"}), wanted, params, "hour")
    for start, end in periods:
        sums = store.sums(start, end)
        n = (end - start).total_seconds() / 3600.0
        if not sums.empty:
            frames.append(sums.assign(period=naive(start), period_hours=n))
    if not frames:
        return pd.DataFrame(columns=VALUE_COLUMNS)
    return many_values(pd.concat(frames, ignore_index=True), wanted, params, resolution)


def to_samples(values: pd.DataFrame) -> list[Sample]:
    """Return value and coverage samples of KPI rows (see definitions for the tag scheme)."""
    out: list[Sample] = []
    for kpi, res, scope, start, value, coverage, filled in values[VALUE_COLUMNS].itertuples(
        index=False
    ):
        if not np.isfinite(value):
            quality = Quality.BAD
        else:
            quality = Quality.UNCERTAIN if filled else Quality.GOOD
        ts = aware(start)
        out.append(Sample(series_tag(kpi, res, scope), ts, float(value), quality))
        out.append(Sample(series_tag(kpi, res, scope, COVERAGE), ts, float(coverage)))
    return out


def write_values(historian: Historian, values: pd.DataFrame) -> int:
    """Write KPI rows as value and coverage samples (to_samples); return how many rows.

    A historian with a bulk path (`write_columns`, the DuckDB one) takes them as columns: a
    month of hours is some hundred thousand rows.
    """
    if values.empty:
        return 0
    bulk = getattr(historian, "write_columns", None)
    if bulk is None:
        historian.write(to_samples(values))
        return len(values)
    value = values["value"].to_numpy(float)
    quality = np.where(
        ~np.isfinite(value),
        int(Quality.BAD),
        np.where(values["filled"].to_numpy(bool), int(Quality.UNCERTAIN), int(Quality.GOOD)),
    )
    tags = [
        series_tag(k, r, sc)
        for k, r, sc in zip(values["kpi"], values["resolution"], values["scope"], strict=True)
    ]
    covs = [
        series_tag(k, r, sc, COVERAGE)
        for k, r, sc in zip(values["kpi"], values["resolution"], values["scope"], strict=True)
    ]
    names, index = np.unique(np.array(tags + covs, dtype=object), return_inverse=True)
    at = pd.to_datetime(values["period_start"], utc=True)
    ts_us = at.to_numpy("datetime64[us]").astype(np.int64)
    n = len(values)
    bulk(
        names.tolist(),
        index.astype(np.int64),
        np.concatenate([ts_us, ts_us]),
        np.concatenate([value, values["coverage"].to_numpy(float)]),
        np.concatenate([quality, np.full(n, int(Quality.GOOD))]).astype(np.uint8),
    )
    return n


def stored_values(historian: Historian, values: pd.DataFrame) -> pd.DataFrame:
    """Return what the historian holds for the same KPI rows: old value and coverage."""
    if values.empty:
        return values.assign(old_value=[], old_coverage=[])
    out = []
    for res, g in values.groupby("resolution", sort=False):
        res = str(res)
        tags = [series_tag(k, res, s) for k, s in zip(g["kpi"], g["scope"], strict=True)]
        cov = [series_tag(k, res, s, COVERAGE) for k, s in zip(g["kpi"], g["scope"], strict=True)]
        t0 = min(aware(t) for t in g["period_start"])
        t1 = max(aware(t) for t in g["period_start"]) + pd.Timedelta(seconds=1)
        df = historian.query(sorted(set(tags + cov)), t0, t1)
        old = {(tag, ts): v for tag, ts, v in zip(df["tag"], df["ts"], df["value"], strict=True)}
        starts = [pd.Timestamp(aware(t)) for t in g["period_start"]]
        out.append(
            g.assign(
                old_value=[old.get((t, s), np.nan) for t, s in zip(tags, starts, strict=True)],
                old_coverage=[old.get((t, s), np.nan) for t, s in zip(cov, starts, strict=True)],
                stored=[(t, s) in old for t, s in zip(tags, starts, strict=True)],
            )
        )
    return pd.concat(out, ignore_index=True)


def differences(compared: pd.DataFrame) -> pd.DataFrame:
    """Return the rows whose value or coverage differs from what was stored."""
    if compared.empty:
        return compared
    new, old = compared["value"].astype(float), compared["old_value"].astype(float)
    both_nan = new.isna() & old.isna()
    tol = 1e-9 * np.maximum(1.0, old.abs().fillna(0))
    value_moved = ~both_nan & ((new - old).abs().fillna(np.inf) > tol)
    cov_moved = (compared["coverage"].astype(float) - compared["old_coverage"]).abs() > 1e-6
    return compared[compared["stored"] & (value_moved | cov_moved.fillna(True))]
