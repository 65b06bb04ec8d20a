"""Hand-computed KPI cases, as data, against the real DuckDB historian and a real InfluxDB.

Each folder of tests/cases/kpi/ holds `config.toml` (appended to `base.toml`: assets and
[kpi]), `case.toml` (the clock and the range computed), `samples.csv` (what the historian
holds), `expected.csv` (the stored KPI values: value, coverage, gap-filled flag, tolerance) and
a README.md with the hand computation. Optional: `alarms.csv` (alarm journal events),
`late.csv` (samples arriving after the period closed), `expected_late.csv` and `changes.csv`
(the recomputation they trigger and the changes it must record).
"""

from __future__ import annotations

import csv
import math
import tomllib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from beffroi.app.config import parse_config
from beffroi.core.model import Quality, Sample
from beffroi.core.register import build_register
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.kpi.definitions import COVERAGE, series_tag
from beffroi.kpi.engine import KpiEngine
from beffroi.kpi.store import KpiStore

CASES = Path(__file__).parent / "cases" / "kpi"
NAMES = sorted(p.name for p in CASES.iterdir() if (p / "expected.csv").exists())
QUALITIES = {q.label: q for q in Quality}


def load_case(name: str):
    """Return the config, register and case settings of a case folder."""
    folder = CASES / name
    text = (CASES / "base.toml").read_text() + "\n" + (folder / "config.toml").read_text()
    cfg = parse_config(text, str(folder / "config.toml"))
    settings = tomllib.loads((folder / "case.toml").read_text())
    return cfg, build_register(cfg), settings


def read_samples(path: Path) -> list[Sample]:
    """Read `time,tag,value,quality` rows (empty value: none, as CommLoss and Bad store)."""
    out = []
    with path.open() as f:
        for row in csv.DictReader(f):
            raw = row["value"].strip()
            if raw in ("true", "false"):
                value: float | bool = raw == "true"
            else:
                value = float(raw) if raw else math.nan
            ts = datetime.fromisoformat(row["time"]).astimezone(UTC)
            out.append(Sample(row["tag"], ts, value, QUALITIES[row.get("quality") or "Good"]))
    return out


def read_alarms(path: Path):
    """Return an events(start, end) reader over `time,event,tag,asset,since` rows."""
    if not path.exists():
        return None
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    df["ts"] = pd.to_datetime(df["time"], utc=True)
    df["since"] = pd.to_datetime(df["since"].replace("", None), utc=True)

    def events(start: datetime, end: datetime) -> pd.DataFrame:
        return df[(df["ts"] >= start) & (df["ts"] < end)]

    return events


def local_range(settings: dict, tz: str) -> tuple[datetime, datetime]:
    """Return the case's compute range: whole local days, `to` included."""
    from zoneinfo import ZoneInfo

    zone = ZoneInfo(tz)
    d0, d1 = (date.fromisoformat(settings["compute"][k]) for k in ("from", "to"))
    d1 += timedelta(days=1)
    return (
        datetime(d0.year, d0.month, d0.day, tzinfo=zone).astimezone(UTC),
        datetime(d1.year, d1.month, d1.day, tzinfo=zone).astimezone(UTC),
    )


def check_expected(historian, path: Path) -> int:
    """Compare stored KPI values with an expected.csv; return the rows checked."""
    rows = list(csv.DictReader(path.open()))
    for row in rows:
        ts = datetime.fromisoformat(row["period_start"]).astimezone(UTC)
        tag = series_tag(row["kpi"], row["resolution"], row["scope"])
        cov = series_tag(row["kpi"], row["resolution"], row["scope"], COVERAGE)
        df = historian.query([tag, cov], ts, ts + timedelta(seconds=1)).set_index("tag")
        where = f"{row['kpi']}.{row['resolution']} {row['scope']} {row['period_start']}"
        assert tag in df.index, f"{where}: no value stored"
        got, quality = float(df.loc[tag, "value"]), int(df.loc[tag, "quality"])
        tol = float(row.get("tolerance") or 1e-6)
        if row["value"] == "":
            assert math.isnan(got), f"{where}: expected no value, got {got}"
        else:
            assert got == pytest.approx(float(row["value"]), abs=tol), where
        if row.get("coverage_pct"):
            assert float(df.loc[cov, "value"]) == pytest.approx(
                float(row["coverage_pct"]), abs=1e-3
            ), f"{where}: coverage"
        if row.get("gap_filled"):
            assert (quality == Quality.UNCERTAIN) == (row["gap_filled"] == "true"), (
                f"{where}: gap-filled flag (quality {quality})"
            )
    return len(rows)


@pytest.fixture(params=["duckdb", "influx"])
def backend(request):
    """Return a function making an empty historian of each back end for a register."""
    if request.param == "duckdb":
        made = []

        def make(register, tmp_path):
            h = DuckDBHistorian(tmp_path / "h.duckdb")
            made.append(h)
            return h

        yield make
        for h in made:
            h.close()
        return
    influxd = request.getfixturevalue("influxd")
    database = request.getfixturevalue("influx_database")
    from beffroi.historian.influx.historian import InfluxHistorian

    made = []

    def make_influx(register, tmp_path):
        h = InfluxHistorian(
            influxd.url, api="v1", database=database, register=register, timeout_s=10
        )
        made.append(h)
        return h

    yield make_influx
    for h in made:
        h.close()


@pytest.mark.parametrize("name", NAMES)
def test_case(name: str, backend, tmp_path: Path) -> None:
    """The stored KPI values equal the hand-computed ones; late data is recomputed, recorded."""
    cfg, register, settings = load_case(name)
    folder = CASES / name
    historian = backend(register, tmp_path)
    historian.write(read_samples(folder / "samples.csv"))
    clock = {"now": datetime.fromisoformat(settings["now"]).astimezone(UTC)}
    store = KpiStore(tmp_path / "kpi.duckdb")
    engine = KpiEngine(
        cfg, register, historian, store=store, events=read_alarms(folder / "alarms.csv"),
        clock=lambda: clock["now"],
    )  # fmt: skip
    try:
        start, end = local_range(settings, cfg.metropolis.timezone)
        report = engine.recompute(start, end)
        assert report["changes"] == 0
        assert check_expected(historian, folder / "expected.csv") > 0
        if (folder / "late.csv").exists():
            historian.write(read_samples(folder / "late.csv"))
            clock["now"] = datetime.fromisoformat(settings["late"]["now"]).astimezone(UTC)
            report = getattr(engine, settings["late"]["job"])()
            assert report.get("late_hours", 0) > 0, report
            check_expected(historian, folder / "expected_late.csv")
            changes = store.changes()
            wanted = list(csv.DictReader((folder / "changes.csv").open()))
            got = {
                (r.kpi, r.resolution, r.scope, pd.Timestamp(r.period_start).tz_localize("UTC")): r
                for r in changes.itertuples()
            }
            for w in wanted:
                key = (w["kpi"], w["resolution"], w["scope"], pd.Timestamp(w["period_start"]))
                assert key in got, f"change not recorded: {key}"
                row = got[key]
                assert row.reason == w["reason"]
                assert row.old_value == pytest.approx(float(w["old_value"]), abs=1e-3)
                assert row.new_value == pytest.approx(float(w["new_value"]), abs=1e-3)
    finally:
        engine.close()


def noaa_twilight(lat: float, lon: float, day: date, depression: float = 6.0):
    """Return (dawn, dusk) in UTC from the NOAA solar calculator's equations (not astral).

    Sun position from the Julian century (geometric mean longitude and anomaly, equation of
    centre, apparent longitude, corrected obliquity → declination; equation of time), then the
    hour angle at which the sun's zenith distance is 90° + depression; iterated three times at
    the estimated event time.
    """
    out = []
    for sign in (-1, 1):
        guess = datetime(day.year, day.month, day.day, 12, tzinfo=UTC)
        for _ in range(3):
            t = (guess.timestamp() / 86400.0 + 2440587.5 - 2451545.0) / 36525.0
            l0 = (280.46646 + t * (36000.76983 + t * 0.0003032)) % 360
            m = math.radians(357.52911 + t * (35999.05029 - 0.0001537 * t))
            e = 0.016708634 - t * (0.000042037 + 0.0000001267 * t)
            c = (
                math.sin(m) * (1.914602 - t * (0.004817 + 0.000014 * t))
                + math.sin(2 * m) * (0.019993 - 0.000101 * t)
                + math.sin(3 * m) * 0.000289
            )
            omega = math.radians(125.04 - 1934.136 * t)
            lam = math.radians(l0 + c - 0.00569 - 0.00478 * math.sin(omega))
            eps0 = 23 + (26 + (21.448 - t * (46.815 + t * (0.00059 - t * 0.001813))) / 60) / 60
            eps = math.radians(eps0 + 0.00256 * math.cos(omega))
            decl = math.asin(math.sin(eps) * math.sin(lam))
            y, l0r = math.tan(eps / 2) ** 2, math.radians(l0)
            eot = 4 * math.degrees(
                y * math.sin(2 * l0r)
                - 2 * e * math.sin(m)
                + 4 * e * y * math.sin(m) * math.cos(2 * l0r)
                - 0.5 * y * y * math.sin(4 * l0r)
                - 1.25 * e * e * math.sin(2 * m)
            )
            phi = math.radians(lat)
            cos_ha = math.cos(math.radians(90 + depression)) / (math.cos(phi) * math.cos(decl))
            ha = math.degrees(math.acos(cos_ha - math.tan(phi) * math.tan(decl)))
            minutes = 720 - 4 * lon - eot + sign * 4 * ha
            guess = datetime(day.year, day.month, day.day, tzinfo=UTC) + timedelta(minutes=minutes)
        out.append(guess)
    return out[0], out[1]


def test_lighting_case_expectation_is_the_noaa_night() -> None:
    """The baseline expected by the lighting case is 10 kW × the NOAA dusk-to-dawn hours."""
    from zoneinfo import ZoneInfo

    tz = ZoneInfo("Europe/Paris")
    dawn, dusk = noaa_twilight(47.32, 5.04, date(2026, 1, 15))
    assert dawn.astimezone(tz).strftime("%H:%M") == "07:47"
    assert dusk.astimezone(tz).strftime("%H:%M") == "17:50"
    midnight = datetime(2026, 1, 15, tzinfo=tz)
    night_h = ((dawn - midnight) + (midnight + timedelta(days=1) - dusk)).total_seconds() / 3600
    rows = csv.DictReader((CASES / "lighting_baseline" / "expected.csv").open())
    baseline = next(r for r in rows if r["kpi"] == "lighting_baseline_kwh")
    assert float(baseline["value"]) == pytest.approx(10.0 * night_h, abs=1e-4)
