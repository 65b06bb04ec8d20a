"""The embedded back end's own behaviour: compaction, replacement, rollups and retention."""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest

from beffroi.core.model import Quality, Sample
from beffroi.historian.duckdb.historian import ROLLUP_DAYS, SEAL_AFTER, DuckDBHistorian, LayoutError

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
    for _ in ("written", "compacted"):
        hourly = h.query([P], T0, T0 + timedelta(hours=3), every=timedelta(hours=1), agg="max")
        assert list(hourly.value) == [10.0, 99.0, 10.0]
        h.compact()


@pytest.mark.parametrize(
    "agg", ["mean", "min", "max", "first", "last", "count", "sum", "twa", "integral"]
)
def test_stored_statistics_answer_like_raw_samples(tmp_path, agg: str) -> None:
    """Aggregates over sealed days (their statistics, their decoded samples) and, once retention
    removed the samples, from the statistics it kept, equal the same aggregates over raw ones."""
    rng = np.random.default_rng(1)
    samples = []
    ts = T0
    while ts < T0 + timedelta(days=3):
        samples.append(Sample(P, ts, float(rng.normal(5, 2))))
        ts += timedelta(seconds=float(rng.integers(20, 200)))  # irregular spacing
    samples[100] = Sample(P, samples[100].ts, float("nan"), Quality.BAD)
    raw = DuckDBHistorian(tmp_path / "raw.duckdb")
    raw.write(samples)  # not compacted: answered from raw samples
    end = T0 + timedelta(days=3)
    widths = (timedelta(days=1), timedelta(hours=6), timedelta(hours=1))
    expected = {w: raw.query([P], T0, end, every=w, agg=agg) for w in widths}
    h = DuckDBHistorian(tmp_path / "r.duckdb")
    h.write(samples)
    h.write([Sample("x/y/z", end + SEAL_AFTER, 0.0)])  # the data moves past the third day
    h.compact()
    unsealed = h._con.execute(
        "SELECT count(*) FROM recent WHERE ts < ?", [end.replace(tzinfo=None)]
    )
    assert unsealed.fetchone()[0] == 0  # the daily answer comes from the days' statistics
    answers = [(w, h.query([P], T0, end, every=w, agg=agg)) for w in widths]
    assert h.apply_retention({}, default_days=1, now=end + timedelta(days=1)) == len(samples)
    assert h.query([P], T0, end).empty
    answers += [(w, h.query([P], T0, end, every=w, agg=agg)) for w in widths]
    for width, got in answers:
        want = expected[width]
        assert list(got.ts) == list(want.ts), width
        assert list(got.value) == pytest.approx(list(want.value), rel=1e-9), width
        assert list(got.quality) == list(want.quality), width
    h.close()
    raw.close()


@pytest.mark.parametrize("rollups", ["kept", "dropped"])
def test_late_samples_merge_into_a_sealed_day(h, rollups: str) -> None:
    """A replayed or late sample for a day already sealed replaces or joins its samples, in raw
    reads and in hourly and daily aggregates, whether the day still keeps its rollups or not."""
    h.write(_minutes(P, 24 * 60))
    moved = T0 + timedelta(days=1) + SEAL_AFTER  # the first day is sealed
    if rollups == "dropped":
        moved += ROLLUP_DAYS + timedelta(days=1)
    h.write([Sample(P, moved, 0.0)])
    h.compact()
    assert h._con.execute("SELECT count(*) FROM blocks").fetchone()[0] == 1
    kept = h._con.execute("SELECT count(*) FROM rollup_1h WHERE bucket < ?", [moved.date()])
    assert kept.fetchone()[0] == (24 if rollups == "kept" else 0)
    uncertain = 0x40900000
    h.write(
        [
            Sample(P, T0 + timedelta(minutes=5), 500.0, Quality.UNCERTAIN, status=uncertain),
            Sample(P, T0 + timedelta(minutes=5, seconds=30), 7.5),
        ]
    )
    hour, day = timedelta(hours=1), timedelta(days=1)
    for stage in ("written", "compacted"):
        df = h.query([P], T0, T0 + hour)
        assert len(df) == 61, stage
        assert (df.value.iloc[5], df.quality.iloc[5], df.status.iloc[5]) == (
            500.0, Quality.UNCERTAIN, uncertain), stage  # fmt: skip
        assert df.value.iloc[6] == 7.5 and df.value.iloc[7] == 6.0, stage
        hourly = h.query([P], T0, T0 + 2 * hour, every=hour, agg="max")
        assert list(hourly.value) == [500.0, 119.0], stage
        assert list(hourly.quality) == [Quality.UNCERTAIN, Quality.GOOD], stage
        count = h.query([P], T0, T0 + hour, every=hour, agg="count")
        assert list(count.value) == [61.0], stage
        daily = h.query([P], T0, T0 + day, every=day, agg="count")
        assert daily.value.iloc[0] == 24 * 60 + 1, stage
        assert h.count() == 24 * 60 + 2, stage
        assert h.latest([P]).value.iloc[0] == 0.0, stage
        h.compact()


def test_sealed_days_keep_values_qualities_and_status(h) -> None:
    """What a day held comes back identical once it is sealed, gaps and statuses included."""
    failure = 0x808B0000
    samples = _minutes(P, 24 * 60, fn=lambda i: round(230 + 0.1 * (i % 17), 1))
    samples[10] = Sample(P, samples[10].ts, float("nan"), Quality.COMM_LOSS, status=0x80310000)
    samples[11] = Sample(P, samples[11].ts, 1e300, Quality.BAD, status=failure)
    samples[12] = Sample(P, samples[12].ts + timedelta(microseconds=7), -0.0)
    h.write(samples)
    before = h.query([P], T0, T0 + timedelta(days=1))
    h.write([Sample(P, T0 + timedelta(days=1) + SEAL_AFTER, 0.0)])  # the first day is sealed
    h.compact()
    after = h.query([P], T0, T0 + timedelta(days=1))
    assert h._con.execute("SELECT count(*) FROM recent").fetchone()[0] == 1  # the rest sealed
    pd.testing.assert_frame_equal(after, before)
    assert math.copysign(1, after.value.iloc[12]) == -1
    assert list(after.status.iloc[10:13]) == [0x80310000, failure, 0]


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


# The tables of layout 1 as it shipped: every compacted sample in `samples`, rollups of all hours.
LAYOUT_1 = """
CREATE SEQUENCE tag_ids START 1;
CREATE TABLE tags (id INTEGER PRIMARY KEY DEFAULT nextval('tag_ids'), name VARCHAR NOT NULL UNIQUE);
CREATE TABLE hot (
    tag_id INTEGER NOT NULL, ts TIMESTAMP NOT NULL, value DOUBLE,
    quality UTINYINT NOT NULL, seq BIGINT NOT NULL
);
CREATE TABLE samples (
    tag_id INTEGER NOT NULL, ts TIMESTAMP NOT NULL, value DOUBLE, quality UTINYINT NOT NULL
);
CREATE TABLE text_samples (
    tag_id INTEGER NOT NULL, ts TIMESTAMP NOT NULL, value VARCHAR, quality UTINYINT NOT NULL,
    PRIMARY KEY (tag_id, ts)
);
CREATE TABLE rollup_1h (
    tag_id INTEGER NOT NULL, bucket TIMESTAMP NOT NULL, n BIGINT, vmin DOUBLE, vmax DOUBLE,
    vsum DOUBLE, first_ts TIMESTAMP, first_v DOUBLE, last_ts TIMESTAMP, last_v DOUBLE,
    area DOUBLE, quality UTINYINT
);
CREATE TABLE meta (key VARCHAR PRIMARY KEY, value VARCHAR);
"""


def test_files_of_layout_1_are_migrated_on_first_read_write_open(tmp_path) -> None:
    """An older file keeps its samples, hot rows, text and retired hours; read-only waits."""
    path = tmp_path / "old.duckdb"
    t0 = T0.replace(tzinfo=None)
    con = duckdb.connect(str(path))
    con.execute(LAYOUT_1)
    con.execute("INSERT INTO tags (name) VALUES (?), (?)", [P, "dijon/IP-0001/message"])
    con.execute("INSERT INTO samples SELECT 1, ? + to_minutes(i), i, 0 FROM range(2880) r(i)", [t0])
    # Not compacted yet; the first ten replace compacted samples.
    con.execute(
        "INSERT INTO hot SELECT 1, ? + to_minutes(2870 + i), 1000 + i, 1, i + 1 "
        "FROM range(20) r(i)",
        [t0],
    )
    con.execute("INSERT INTO text_samples VALUES (2, ?, 'travaux', 0)", [t0])
    old_hour = t0 - timedelta(days=10)
    con.execute(
        "INSERT INTO rollup_1h VALUES (1, ?, 2, 1, 3, 4, ?, 1, ?, 3, 0, 0), "
        "(1, ?, 60, 0, 59, 1770, ?, 0, ?, 59, 0, 0)",
        [old_hour, old_hour, old_hour + timedelta(minutes=30), t0, t0, t0 + timedelta(minutes=59)],
    )
    con.execute(
        "INSERT INTO meta VALUES ('watermark', ?)", [(t0 + timedelta(minutes=2879)).isoformat()]
    )
    con.close()

    with pytest.raises(LayoutError, match="layout 1"):
        DuckDBHistorian(path, read_only=True)
    h = DuckDBHistorian(path)
    expected = [float(i) for i in range(2870)] + [1000.0 + i for i in range(20)]
    end = T0 + timedelta(days=3)
    df = h.query([P], T0, end)
    assert list(df.value) == expected
    assert list(df.quality[-20:]) == [Quality.UNCERTAIN] * 20 and set(df.status) == {0}
    assert h.query(["dijon/IP-0001/message"], T0, end).value.iloc[0] == "travaux"
    assert h.count() == 2890 + 1
    hour = T0 - timedelta(days=10)
    retired = h.query([P], hour, hour + timedelta(hours=1), every=timedelta(hours=1), agg="mean")
    assert list(retired.value) == [2.0]  # kept: no samples answer for that hour
    first = h.query([P], T0, T0 + timedelta(hours=1), every=timedelta(hours=1), agg="count")
    assert list(first.value) == [60.0]
    h.close()  # compacts: the days are sealed
    again = DuckDBHistorian(path, read_only=True)
    assert list(again.query([P], T0, end).value) == expected
    hourly = again.query([P], hour, hour + timedelta(hours=1), every=timedelta(hours=1), agg="mean")
    daily = again.query([P], hour, hour + timedelta(days=1), every=timedelta(days=1), agg="mean")
    assert list(hourly.value) == [2.0] and list(daily.value) == [2.0]
    again.close()


def test_files_of_a_newer_layout_are_refused(tmp_path) -> None:
    """A file written by a newer version is not read as if it were the current layout."""
    path = tmp_path / "new.duckdb"
    DuckDBHistorian(path).close()
    con = duckdb.connect(str(path))
    con.execute("UPDATE meta SET value = '99' WHERE key = 'layout'")
    con.close()
    with pytest.raises(LayoutError, match="newer"):
        DuckDBHistorian(path)
