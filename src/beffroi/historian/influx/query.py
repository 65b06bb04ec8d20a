"""InfluxQL statements answering the historian contract; their answers read by `frames.py`."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np
import pandas as pd

from beffroi.historian.influx.frames import (
    Rows,
    add_samples,
    columns_of,
    field_column,
    first_cell,
    floats,
    present,
)
from beffroi.historian.influx.http import InfluxHttp
from beffroi.historian.influx.layout import QUALITY_SUFFIX, Layout, Location, ident, series_key

log = logging.getLogger(__name__)

# Series (asset or path) per statement: keeps statements short and index lookups cheap.
SERIES_PER_STATEMENT = 100
# Beyond this many per-bucket statements, twa and integral are computed here from raw points.
MAX_PUSHDOWN_STATEMENTS = 2000
US_PER_HOUR = 3_600_000_000


def _time(lo_us: int, hi_us: int) -> str:
    """Return the InfluxQL condition for [lo, hi) (bare integers are nanoseconds)."""
    return f"time >= {lo_us * 1000} AND time < {hi_us * 1000}"


def _pairs(group: Sequence[Location]) -> list[tuple[str, str]]:
    """Return the distinct (number field, quality field) pairs of a group of locations."""
    return list(dict.fromkeys((loc.number, loc.quality) for loc in group if loc.number))


class QueryBuilder:
    """Build InfluxQL for raw, aggregated and latest queries and read the answers."""

    def __init__(self, layout: Layout, http: InfluxHttp, database: str, retention_policy: str):
        self.layout = layout
        self.http = http
        self.database = database
        self.retention_policy = retention_policy

    def _from(self, measurement: str) -> str:
        if self.retention_policy:
            return ".".join(map(ident, (self.database, self.retention_policy, measurement)))
        return ident(measurement)

    def _groups(self, locs: Sequence[Location]) -> Iterator[tuple[str, list[Location], str]]:
        """Yield (measurement, locations, WHERE on their series) in statement-sized groups."""
        by_meas: dict[str, dict[tuple, list[Location]]] = {}
        for loc in locs:
            by_meas.setdefault(loc.measurement, {}).setdefault(loc.series, []).append(loc)
        for meas, by_series in by_meas.items():
            keys = list(by_series)
            for i in range(0, len(keys), SERIES_PER_STATEMENT):
                chunk = keys[i : i + SERIES_PER_STATEMENT]
                where = " OR ".join(by_series[k][0].where() for k in chunk)
                yield meas, [loc for k in chunk for loc in by_series[k]], where

    @staticmethod
    def _index(locs: Sequence[Location]) -> dict[tuple, list[Location]]:
        index: dict[tuple, list[Location]] = {}
        for loc in locs:
            index.setdefault(series_key(loc.measurement, loc.series), []).append(loc)
        return index

    def _answers(
        self, statements: list[str], index: dict[tuple, list[Location]]
    ) -> Iterator[tuple[int, Location, dict[str, np.ndarray]]]:
        """Yield (statement number, location, columns of its series) for every wanted series."""
        for sid, series_list in enumerate(self.http.query(statements)):
            for s in series_list:
                wanted = index.get(series_key(s["name"], s["tags"]))
                if not wanted or not s["values"]:
                    continue
                cols = columns_of(s)
                for loc in wanted:
                    if loc.quality in cols or loc.number in cols:
                        yield sid, loc, cols

    def raw(self, locs: Sequence[Location], lo: int, hi: int) -> pd.DataFrame:
        """Return stored samples in [lo, hi) µs: tag, ts (µs), value, quality, status."""
        statements = []
        for meas, group, where in self._groups(locs):
            fields = dict.fromkeys(f for loc in group for f in (*loc.fields, loc.status))
            statements.append(
                f"SELECT {', '.join(map(ident, fields))} FROM {self._from(meas)} "
                f"WHERE ({where}) AND {_time(lo, hi)} GROUP BY *"
            )
        rows = Rows()
        for _, loc, cols in self._answers(statements, self._index(locs)):
            add_samples(rows, cols, loc)
        return rows.frame()

    def aggregate(
        self, locs: Sequence[Location], lo: int, hi: int, every_us: int, agg: str
    ) -> pd.DataFrame:
        """Return one row per tag and bucket of `every_us` aligned on the epoch."""
        locs = [loc for loc in locs if loc.number]  # text has no aggregates
        if agg in ("twa", "integral"):
            return self._time_weighted(locs, lo, hi, every_us, agg)
        statements = []
        for meas, group, where in self._groups(locs):
            select = ", ".join(
                f"{agg}({ident(n)}) AS {ident(n)}, max({ident(q)}) AS {ident(q)}"
                for n, q in _pairs(group)
            )
            statements.append(
                f"SELECT {select} FROM {self._from(meas)} WHERE ({where}) AND {_time(lo, hi)} "
                f"GROUP BY time({every_us}u), * fill(none)"
            )
        rows = Rows()
        for _, loc, cols in self._answers(statements, self._index(locs)):
            sel = present(cols[loc.quality])
            values = floats(field_column(cols, loc.number), sel)
            if agg == "count":
                values = np.nan_to_num(values, nan=0.0)
            codes = cols[loc.quality][sel].astype(np.int64)
            rows.add(loc.tag, cols["time"][sel], values, codes >> 1)
        return rows.frame()

    def _time_weighted(
        self, locs: Sequence[Location], lo: int, hi: int, every_us: int, agg: str
    ) -> pd.DataFrame:
        """Integral or twa inside each bucket: one statement per bucket, no GROUP BY time.

        InfluxQL's integral() under GROUP BY time() interpolates across bucket edges (it adds
        the area up to the edge toward the next bucket's first point); the contract integrates
        only between samples inside the bucket, which a statement bounded to the bucket does.
        """
        buckets = range(lo // every_us * every_us, hi, every_us)
        groups = list(self._groups(locs))
        per_bucket = sum(1 + (2 * len(_pairs(g)) if agg == "twa" else 0) for _, g, _ in groups)
        if len(buckets) * per_bucket > MAX_PUSHDOWN_STATEMENTS:
            log.debug("%s over %d buckets computed from raw points", agg, len(buckets))
            return time_weighted_from_raw(self.raw(locs, lo, hi), every_us, agg)
        statements: list[str] = []
        roles: list[tuple[int, str, str | None]] = []  # bucket, function, field (first, last)
        for b in buckets:
            when = _time(max(b, lo), min(b + every_us, hi))
            for meas, group, where in groups:
                head = f"FROM {self._from(meas)} WHERE ({where}) AND {when} GROUP BY *"
                pairs = _pairs(group)
                select = ", ".join(
                    f"integral({ident(n)}, 1h) AS {ident(n)}, max({ident(q)}) AS {ident(q)}"
                    for n, q in pairs
                )
                statements.append(f"SELECT {select} {head}")
                roles.append((b, "integral", None))
                for n, _ in pairs if agg == "twa" else ():
                    # One selector per statement, so that InfluxDB returns the point's own time.
                    for fn in ("first", "last"):
                        statements.append(f"SELECT {fn}({ident(n)}) AS {ident(n)} {head}")
                        roles.append((b, fn, n))
        cells: dict[tuple[str, int], dict] = {}
        for sid, loc, cols in self._answers(statements, self._index(locs)):
            b, role, field = roles[sid]
            if field is not None and field != loc.number:
                continue
            cell = cells.setdefault((loc.tag, b), {})
            if role == "integral":
                # InfluxDB answers integral() and max() on separate rows (their times differ).
                quality = first_cell(cols.get(loc.quality))
                area = first_cell(field_column(cols, loc.number))
                if quality is not None:
                    cell["q"] = int(quality) >> 1
                cell["area"] = area
            else:
                assert field is not None  # first and last name their field, the tag's number
                cell[role] = (int(cols["time"][0]), cols[field][0])
        rows = []
        for (tag, b), cell in cells.items():
            if "q" not in cell:
                continue
            rows.append((tag, b, _weighted_value(cell, agg), cell["q"]))
        return pd.DataFrame(rows, columns=["tag", "ts", "value", "quality"])

    def latest(self, locs: Sequence[Location] | None, values: bool = True) -> pd.DataFrame:
        """Return each tag's newest sample (or only its time and quality when not `values`)."""
        targets: list[tuple[str, str | None, str, list[str]]] = []
        if locs is None:
            for meas, fields in self._field_keys().items():
                for f in fields:
                    if f.endswith(QUALITY_SUFFIX):
                        base = [f.removesuffix(QUALITY_SUFFIX)]
                    elif f == "q":
                        base = ["value", "text"]
                    else:
                        continue
                    targets.append((meas, None, f, [b for b in base if b in fields]))
        else:
            for meas, group, series in self._groups(locs):
                pairs = dict.fromkeys((loc.quality, loc.fields[:-1]) for loc in group)
                for quality, value_fields in pairs:
                    targets.append((meas, series, quality, list(value_fields)))
        statements, roles = [], []
        for meas, where, q, vals in targets:
            cond = f" WHERE {where}" if where else ""
            for field in [q, *vals] if values else [q]:
                statements.append(
                    f"SELECT last({ident(field)}) FROM {self._from(meas)}{cond} GROUP BY *"
                )
                roles.append((meas, field, field == q))
        wanted = None if locs is None else {loc.tag for loc in locs}
        newest: dict[str, tuple[int, int]] = {}
        candidates: dict[str, list[tuple[int, str | float]]] = {}
        for sid, series_list in enumerate(self.http.query(statements)):
            meas, field, is_quality = roles[sid]
            for s in series_list:
                tag = self.layout.tag_of(meas, s["tags"], field)
                if tag is None or (wanted is not None and tag not in wanted) or not s["values"]:
                    continue
                t, v = s["values"][0][0], s["values"][0][1]
                if is_quality:
                    newest[tag] = (int(t), int(v))
                elif v is not None:
                    candidates.setdefault(tag, []).append((int(t), v))
        rows = []
        for tag, (t, code) in newest.items():
            value: str | float = float("nan")
            if not code & 1:
                value = next((v for tv, v in candidates.get(tag, []) if tv == t), value)
            rows.append((tag, t, value if isinstance(value, str) else float(value), code >> 1))
        return pd.DataFrame(rows, columns=["tag", "ts", "value", "quality"])

    def count(self) -> int:
        """Return the number of stored samples (points of every quality field)."""
        statements = []
        for meas, fields in self._field_keys().items():
            qs = [f for f in fields if f.endswith(QUALITY_SUFFIX) or f == "q"]
            if qs:
                select = ", ".join(f"count({ident(q)}) AS {ident(q)}" for q in qs)
                statements.append(f"SELECT {select} FROM {self._from(meas)}")
        total = 0
        for series_list in self.http.query(statements):
            for s in series_list:
                for row in s["values"]:
                    total += sum(int(v) for v in row[1:] if v is not None)
        return total

    def _field_keys(self) -> dict[str, dict[str, str]]:
        """Return every measurement's field names and types."""
        stmt = "SHOW FIELD KEYS"
        if self.retention_policy:
            stmt += f" FROM {ident(self.database)}.{ident(self.retention_policy)}./.*/"
        out: dict[str, dict[str, str]] = {}
        for series_list in self.http.query([stmt]):
            for s in series_list:
                out[s["name"]] = {k: t for k, t in s["values"]}
        return out


def _weighted_value(cell: dict, agg: str) -> float:
    """Return a bucket's integral (value·h) or time-weighted mean from its statement answers."""
    area = cell.get("area")
    if area is None or pd.isna(area):
        return float("nan")
    if agg == "integral":
        return float(area)
    (t0, v0), (t1, _) = cell.get("first", (0, None)), cell.get("last", (0, None))
    if v0 is None:
        return float("nan")
    return float(area) * US_PER_HOUR / (t1 - t0) if t1 > t0 else float(v0)


def time_weighted_from_raw(raw: pd.DataFrame, every_us: int, agg: str) -> pd.DataFrame:
    """Compute integral (value·h) or twa per tag and bucket from raw points, trapezoid rule."""
    rows = []
    if raw.empty:
        return raw
    raw = raw.assign(bucket=raw["ts"] // every_us * every_us)
    for (tag, b), g in raw.groupby(["tag", "bucket"], sort=True):
        assert isinstance(b, int | np.integer)  # buckets are int64 µs, as `ts`
        v = pd.to_numeric(g["value"], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(v)
        v, t = v[ok], g["ts"].to_numpy(dtype=np.int64)[ok]
        t = (t - t[:1]) / US_PER_HOUR  # hours since the bucket's first valued sample
        if not len(v):
            value = float("nan")
        elif agg == "integral":
            value = float(np.trapezoid(v, t)) if len(v) > 1 else 0.0
        else:
            value = float(np.trapezoid(v, t) / t[-1]) if t[-1] > 0 else float(v[0])
        rows.append((tag, int(b), value, int(g["quality"].max())))
    return pd.DataFrame(rows, columns=["tag", "ts", "value", "quality"])
