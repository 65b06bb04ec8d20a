"""The embedded back end's own behaviour: compaction, replacement, rollups and retention."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from beffroi.core.model import Quality, Sample
from beffroi.historian.duckdb import DuckDBHistorian

T0 = datetime(2026, 3, 1, tzinfo=UTC)
P = "dijon/LC-0001/power_kw"
LAT = "dijon/BUS-0001/lat"


@pytest.fixture
def h(tmp_path):
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    yield hist
    hist.close()


def _minutes(tag: str, n: int, start: datetime = T0, fn=lambda i: float(i)) -> list[Sample]:
    return [Sample(tag, start + timedelta(minutes=i), fn(i)) for i in range(n)]


def test_compaction_keeps_every_value_and_queries_see_both_tables(h) -> None:
    """Values are the same before and after compaction, and new ones are visible at once."""
    h.write(_minutes(P, 120))
    before = h.query([P], T0, T0 + timedelta(hours=3))
    assert h.compact() == 120
    h.write(_minutes(P, 10, start=T0 + timedelta(hours=2)))
    after = h.query([P], T0, T0 + timedelta(hours=3))
    assert list(after.value[:120]) == list(before.value)
    assert len(after) == 130
    assert h.count() == 130


def test_same_tag_and_time_replaces_before_and_after_compaction(h) -> None:
    """A replayed or corrected value replaces the stored one, whether it was compacted or not."""
    h.write(_minutes(P, 60))
    h.write([Sample(P, T0 + timedelta(minutes=5), 500.0)])  # both in hot
    assert h.query([P], T0, T0 + timedelta(hours=1)).value.iloc[5] == 500.0
    h.compact()
    h.write([Sample(P, T0 + timedelta(minutes=5), 555.0, Quality.UNCERTAIN)])  # late, after
    df = h.query([P], T0, T0 + timedelta(hours=1))
    assert len(df) == 60
    assert df.value.iloc[5] == 555.0 and df.quality.iloc[5] == Quality.UNCERTAIN
    h.compact()
    df = h.query([P], T0, T0 + timedelta(hours=1))
    assert len(df) == 60 and df.value.iloc[5] == 555.0
    assert h.count() == 60


def test_late_samples_update_the_rollup_of_their_hour(h) -> None:
    """A sample arriving after its hour was rolled up changes that hour's aggregates."""
    h.write(_minutes(P, 180, fn=lambda i: 10.0))
    h.write(_minutes("dijon/LC-0002/power_kw", 240))  # moves the watermark past hour 3
    h.compact()
    hourly = h.query([P], T0, T0 + timedelta(hours=3), every=timedelta(hours=1), agg="max")
    assert list(hourly.value) == [10.0, 10.0, 10.0]
    h.write([Sample(P, T0 + timedelta(hours=1, minutes=30, seconds=30), 99.0)])
    h.compact()
    hourly = h.query([P], T0, T0 + timedelta(hours=3), every=timedelta(hours=1), agg="max")
    assert list(hourly.value) == [10.0, 99.0, 10.0]


@pytest.mark.parametrize(
    "agg", ["mean", "min", "max", "first", "last", "count", "sum", "twa", "integral"]
)
def test_rollup_answers_equal_raw_answers(tmp_path, agg: str) -> None:
    """Daily aggregates from hourly rollups equal the same aggregates over raw samples."""
    rng = np.random.default_rng(1)
    samples = []
    ts = T0
    while ts < T0 + timedelta(days=3):
        samples.append(Sample(P, ts, float(rng.normal(5, 2))))
        ts += timedelta(seconds=float(rng.integers(20, 200)))  # irregular spacing
    h = DuckDBHistorian(tmp_path / "r.duckdb")
    h.write(samples)
    h.write([Sample("x/y/z", T0 + timedelta(days=4), 0.0)])
    h.compact()
    end = T0 + timedelta(days=3)
    via_rollup = h.query([P], T0, end, every=timedelta(days=1), agg=agg)
    assert h._rollups_cover(T0, end, timedelta(days=1))
    h2 = DuckDBHistorian(tmp_path / "raw.duckdb")
    h2.write(samples)  # not compacted: answered from raw samples
    direct = h2.query([P], T0, end, every=timedelta(days=1), agg=agg)
    assert list(via_rollup.ts) == list(direct.ts)
    assert list(via_rollup.value) == pytest.approx(list(direct.value), rel=1e-9)
    h.close()
    h2.close()


def test_twa_and_integral_of_a_known_power_profile(h) -> None:
    """4 kW for 30 min then 8 kW for 30 min: integral 6 kWh over the hour, twa 6 kW."""
    samples = [Sample(P, T0 + timedelta(minutes=m), 4.0) for m in range(0, 30)]
    samples += [Sample(P, T0 + timedelta(minutes=m), 8.0) for m in range(30, 61)]
    h.write(samples)
    end = T0 + timedelta(hours=1, minutes=1)
    integral = h.query([P], T0, end, every=timedelta(hours=2), agg="integral").value.iloc[0]
    twa = h.query([P], T0, end, every=timedelta(hours=2), agg="twa").value.iloc[0]
    # Linear between 4 and 8 over the minute 29→30: 4×29/60 + 6/60 + 8×30/60 kWh.
    assert integral == pytest.approx(4 * 29 / 60 + 6 / 60 + 8 * 30 / 60)
    assert twa == pytest.approx(integral / 1.0)


def test_retention_removes_old_raw_but_keeps_daily_aggregates(h) -> None:
    """Vehicle positions older than 30 days go; their hourly/daily aggregates stay."""
    old = T0 - timedelta(days=40)
    h.write(_minutes(LAT, 24 * 60, start=old, fn=lambda i: 47.3 + i * 1e-5))
    h.write(_minutes(P, 24 * 60, start=old))
    h.write([Sample("x/y/z", T0, 0.0)])
    h.compact()
    daily_before = h.query([LAT], old, old + timedelta(days=1), every=timedelta(days=1), agg="mean")
    deleted = h.apply_retention({"*/BUS-*/lat": 30}, default_days=None, now=T0)
    assert deleted == 24 * 60
    assert h.query([LAT], old, old + timedelta(days=1)).empty
    assert len(h.query([P], old, old + timedelta(days=1))) == 24 * 60  # other tags untouched
    # A default horizon applies to tags no rule names; a rule wins over the default.
    assert h.apply_retention({"*/BUS-*/lat": 3650}, default_days=35, now=T0) == 24 * 60
    assert h.query([P], old, old + timedelta(days=1)).empty
    daily_after = h.query([LAT], old, old + timedelta(days=1), every=timedelta(days=1), agg="mean")
    assert daily_after.value.iloc[0] == pytest.approx(daily_before.value.iloc[0])


def test_reads_from_other_threads_during_writes(h) -> None:
    """HMI threads query while the writer appends and compacts; nothing is lost or torn."""
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                h.query([P], T0, T0 + timedelta(days=1), max_points=100)
                h.latest([P])
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for k in range(20):
        h.write(_minutes(P, 60, start=T0 + timedelta(hours=k)))
        if k % 5 == 4:
            h.compact()
    stop.set()
    for t in threads:
        t.join()
    assert not errors
    assert h.count() == 20 * 60
    assert not math.isnan(h.latest([P]).value.iloc[0])
