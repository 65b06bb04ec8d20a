"""The historian contract, run against every back end (one fixture parameter per back end)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from beffroi.core.model import Quality, Sample
from beffroi.historian.duckdb.historian import DuckDBHistorian

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POWER = "dijon/LC-0001/power_kw"
LIT = "dijon/LC-0001/lit"
MSG = "dijon/IP-0001/message"


@pytest.fixture(params=["duckdb", "influx"])
def historian(request, tmp_path):
    """Yield an empty historian of each back end."""
    if request.param == "influx":  # a fresh database on a real InfluxDB 1.6.7 (servers_db.py)
        yield request.getfixturevalue("influx_historian")
        return
    h = DuckDBHistorian(tmp_path / "h.duckdb")
    yield h
    h.close()


def _series(tag: str, n: int, step_s: float = 1.0, start: datetime = T0) -> list[Sample]:
    return [Sample(tag, start + timedelta(seconds=i * step_s), float(i)) for i in range(n)]


def test_raw_query_returns_what_was_written(historian) -> None:
    """Values come back with their tag, aware UTC timestamp, value, quality and status."""
    historian.write(_series(POWER, 10))
    historian.write([Sample(LIT, T0, True), Sample(LIT, T0 + timedelta(seconds=5), False)])
    df = historian.query([POWER, LIT], T0, T0 + timedelta(seconds=60))
    assert list(df.columns) == ["ts", "tag", "value", "quality", "status"]
    power = df[df.tag == POWER]
    assert list(power.value) == [float(i) for i in range(10)]
    assert power.ts.iloc[3] == T0 + timedelta(seconds=3)
    assert str(power.ts.dt.tz) == "UTC"
    assert list(df[df.tag == LIT].value) == [1.0, 0.0]


def test_range_is_half_open_and_filters_tags(historian) -> None:
    """[start, end) bounds; other tags are not returned."""
    historian.write(_series(POWER, 10) + _series("talant/LC-0002/power_kw", 10))
    df = historian.query([POWER], T0 + timedelta(seconds=2), T0 + timedelta(seconds=5))
    assert list(df.value) == [2.0, 3.0, 4.0]
    assert set(df.tag) == {POWER}


def test_quality_is_kept_and_bad_values_are_not_replaced(historian) -> None:
    """A CommLoss or Bad sample is stored as such, not as the last good value."""
    historian.write(
        [
            Sample(POWER, T0, 5.0),
            Sample(POWER, T0 + timedelta(seconds=1), float("nan"), Quality.COMM_LOSS),
            Sample(POWER, T0 + timedelta(seconds=2), float("nan"), Quality.BAD),
        ]
    )
    df = historian.query([POWER], T0, T0 + timedelta(minutes=1))
    assert list(df.quality) == [Quality.GOOD, Quality.COMM_LOSS, Quality.BAD]
    assert df.value.iloc[0] == 5.0
    assert math.isnan(df.value.iloc[1]) and math.isnan(df.value.iloc[2])


def test_status_codes_come_back_with_raw_samples(historian) -> None:
    """A sample's OPC UA status code (Bad, Uncertain, text too) comes back as it was written."""
    failure, last_usable = 0x808B0000, 0x40900000  # BadDeviceFailure, UncertainLastUsableValue
    nan = float("nan")
    historian.write(
        [
            Sample(POWER, T0, 5.0),
            Sample(POWER, T0 + timedelta(seconds=1), nan, Quality.BAD, status=failure),
            Sample(POWER, T0 + timedelta(seconds=2), 4.5, Quality.UNCERTAIN, status=last_usable),
            Sample(MSG, T0, "panne", Quality.BAD, status=failure),
        ]
    )
    df = historian.query([POWER, MSG], T0, T0 + timedelta(minutes=1))
    power = df[df.tag == POWER]
    assert list(power.status) == [0, failure, last_usable]
    assert list(power.quality) == [Quality.GOOD, Quality.BAD, Quality.UNCERTAIN]
    assert df[df.tag == MSG].status.iloc[0] == failure
    thin = historian.query([POWER], T0, T0 + timedelta(minutes=1), max_points=3)
    assert list(thin.status) == [0, failure, last_usable]


def test_rewriting_a_sample_replaces_its_status(historian) -> None:
    """A Bad sample corrected to Good at the same time loses its Bad status code."""
    historian.write([Sample(POWER, T0, float("nan"), Quality.BAD, status=0x808B0000)])
    historian.write([Sample(POWER, T0, 5.0)])
    df = historian.query([POWER], T0, T0 + timedelta(seconds=1))
    assert (df.value.iloc[0], df.quality.iloc[0], df.status.iloc[0]) == (5.0, Quality.GOOD, 0)


def test_aggregates_per_bucket(historian) -> None:
    """every + agg gives one row per bucket with the right statistic."""
    historian.write(_series(POWER, 120))  # 0..119 over two minutes
    end = T0 + timedelta(minutes=2)
    expect = {
        "mean": [29.5, 89.5],
        "min": [0.0, 60.0],
        "max": [59.0, 119.0],
        "first": [0.0, 60.0],
        "last": [59.0, 119.0],
        "count": [60.0, 60.0],
        "sum": [sum(range(60)), sum(range(60, 120))],
    }
    for agg, values in expect.items():
        df = historian.query([POWER], T0, end, every=timedelta(minutes=1), agg=agg)
        assert list(df.value) == pytest.approx(values), agg
        assert list(df.ts) == [T0, T0 + timedelta(minutes=1)]


def test_downsampling_keeps_shape_within_max_points(historian) -> None:
    """max_points bounds the rows per tag and keeps the extremes a trend must show."""
    samples = [
        Sample(POWER, T0 + timedelta(seconds=i), 100.0 if i == 7777 else math.sin(i / 500))
        for i in range(20_000)
    ]
    historian.write(samples)
    df = historian.query([POWER], T0, T0 + timedelta(days=1), max_points=500)
    assert len(df) <= 500
    assert df.value.max() == 100.0  # the spike survives
    assert df.value.min() == pytest.approx(-1.0, abs=1e-3)
    assert df.ts.is_monotonic_increasing


def test_text_values_round_trip(historian) -> None:
    """Panel messages are stored as text."""
    historian.write([Sample(MSG, T0, "Accident avenue du Drapeau: déviation")])
    df = historian.query([MSG], T0, T0 + timedelta(seconds=1))
    assert df.value.iloc[0] == "Accident avenue du Drapeau: déviation"


def test_latest_gives_newest_value_per_tag(historian) -> None:
    """latest() returns each tag's most recent sample, whatever the write order."""
    historian.write(_series(POWER, 5, start=T0 + timedelta(minutes=1)))
    historian.write(_series(POWER, 5))  # older values arrive late
    historian.write([Sample(MSG, T0, "old"), Sample(MSG, T0 + timedelta(hours=1), "new")])
    df = historian.latest().set_index("tag")
    assert df.loc[POWER, "value"] == 4.0
    assert df.loc[POWER, "ts"] == T0 + timedelta(minutes=1, seconds=4)
    assert df.loc[MSG, "value"] == "new"
    only = historian.latest([POWER])
    assert list(only.tag) == [POWER]


def test_unknown_tags_and_empty_ranges_return_empty_frames(historian) -> None:
    """Asking for nothing known returns an empty frame with the contract's columns."""
    df = historian.query(["nowhere/X/y"], T0, T0 + timedelta(hours=1))
    assert df.empty and list(df.columns) == ["ts", "tag", "value", "quality", "status"]
    df = historian.query(["nowhere/X/y"], T0, T0 + timedelta(hours=1), timedelta(minutes=1), "max")
    assert df.empty and list(df.columns) == ["ts", "tag", "value", "quality"]


def test_bad_aggregate_is_refused(historian) -> None:
    """An unknown aggregate is a clear error."""
    with pytest.raises(ValueError, match="unknown aggregate"):
        historian.query([POWER], T0, T0 + timedelta(hours=1), every=timedelta(minutes=1), agg="p99")


@pytest.mark.parametrize(
    ("every", "agg", "max_points", "message"),
    [
        (timedelta(minutes=1), None, None, "go together"),
        (None, "mean", None, "go together"),
        (timedelta(0), "mean", None, "must be positive"),
        (None, None, 2, "at least 3"),
    ],
)
def test_meaningless_query_arguments_are_refused(historian, every, agg, max_points, message):
    """Arguments that mean nothing are refused with the same message by every back end."""
    with pytest.raises(ValueError, match=message):
        historian.query([POWER], T0, T0 + timedelta(hours=1), every, agg, max_points)


def test_data_survives_reopen(tmp_path) -> None:
    """What was written is there after the file is closed and opened again."""
    h = DuckDBHistorian(tmp_path / "h.duckdb")
    h.write(_series(POWER, 100))
    h.close()
    again = DuckDBHistorian(tmp_path / "h.duckdb", read_only=True)
    assert again.count() == 100
    assert again.tags() == [POWER]
    again.close()


def test_aggregates_skip_samples_without_value_and_keep_worst_quality(historian) -> None:
    """A Bad sample with no value does not bend the aggregates, but the bucket shows it."""
    historian.write(
        [
            Sample(POWER, T0, 1.0),
            Sample(POWER, T0 + timedelta(seconds=10), float("nan"), Quality.BAD),
            Sample(POWER, T0 + timedelta(seconds=20), 3.0),
        ]
    )
    end = T0 + timedelta(minutes=1)
    expect = {
        "mean": 2.0,
        "count": 2.0,
        "first": 1.0,
        "last": 3.0,
        "min": 1.0,
        "max": 3.0,
        "twa": 2.0,
        "integral": 40 / 3600,
    }
    for agg, value in expect.items():
        df = historian.query([POWER], T0, end, every=timedelta(minutes=1), agg=agg)
        assert df.value.iloc[0] == pytest.approx(value), agg
        assert df.quality.iloc[0] == Quality.BAD, agg
