"""The municipal fleet: its classes, simulated rounds, the privacy of staff positions, retention."""

from __future__ import annotations

import math
import tomllib
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from flask import Flask
from pydantic import ValidationError

from beffroi.api.query import register_query_api
from beffroi.app.config import Config, load_config
from beffroi.core.errors import ConfigError
from beffroi.core.model import Sample
from beffroi.core.privacy import PositionPolicy, PositionViewer, PrivacyConfig, privacy_problems
from beffroi.core.register import Register, build_register
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.trend_data import request_viewer, trend_frame
from beffroi.hmi.users import ROLES
from beffroi.simulator.physics import Metropolis

ROOT = Path(__file__).resolve().parent.parent
PARIS = ZoneInfo("Europe/Paris")
FLEET = ("police_vehicle", "maintenance_van", "street_sweeper", "waste_truck")
STATES = {"depot", "driving", "working", "patrol", "stopped"}
EARTH_M_PER_DEG = 111_320.0


@pytest.fixture(scope="module")
def register(demo_config: Config) -> Register:
    """Return the demo's full generated register (1,060 assets, 60 of them vehicles)."""
    return build_register(demo_config)


@pytest.fixture(scope="module")
def fleet(register: Register) -> Register:
    """Return the demo register's vehicles alone: what the simulator steps in these tests."""
    assets = {k: a for k, a in register.assets.items() if a.asset_class in FLEET}
    tags = {t.name: t for a in assets.values() for t in a.tags}
    return Register(register.communes, assets, tags)


def _local(y: int, mo: int, d: int, h: int, mi: int = 0) -> datetime:
    return datetime(y, mo, d, h, mi, tzinfo=PARIS)


def _metres(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    dy = (lat2 - lat1) * EARTH_M_PER_DEG
    dx = (lon2 - lon1) * EARTH_M_PER_DEG * math.cos(math.radians(lat1))
    return math.hypot(dx, dy)


def _vehicles(register: Register, cls: str) -> list:
    return sorted((a for a in register.assets.values() if a.asset_class == cls), key=lambda a: a.id)


def _run(register: Register, start: datetime, end: datetime, step: timedelta, faults: float = 0.0):
    """Step a simulated metropolis from start to end; yield (time, values) after each step."""
    sim = Metropolis(register, seed=7, fault_rate_per_hour=faults, start=start)
    t = start
    while t < end:
        t += step
        sim.step(t)
        yield t, sim.values()


def test_fleet_classes_are_a_family_with_personal_positions(demo_config: Config, register) -> None:
    """Four vehicle classes of about 15 each, marked fleet and personal; other classes as before."""
    fleet = {k for k, c in demo_config.asset_classes.items() if c.family == "fleet"}
    assert fleet == set(FLEET)
    assert all(demo_config.asset_classes[k].personal_positions for k in FLEET)
    assert not demo_config.asset_classes["bus"].personal_positions
    counts = Counter(a.asset_class for a in register.assets.values())
    assert [counts[k] for k in FLEET] == [15, 15, 15, 15]
    # Adding the fleet left the equipment register as it was (ids and counts).
    assert counts["streetlight_cabinet"] == 401 and counts["bus"] == 60 and counts["camera"] == 60
    for k in FLEET:
        cls = demo_config.asset_classes[k]
        assert {s.name for s in cls.signals} == {"lat", "lon", "speed_kmh", "state", "fault"}
        assert cls.signal("state").kind == "str"


def test_vehicles_drive_their_rounds_within_the_metropolis(demo_config: Config, fleet) -> None:
    """On a weekday morning every service is out, moving along streets near its depot."""
    communes = {c.id: c for c in demo_config.communes}
    lats = [c.lat for c in demo_config.communes]
    lons = [c.lon for c in demo_config.communes]
    start = _local(2026, 3, 4, 8, 30).astimezone(UTC)  # a Wednesday
    register = fleet
    vehicles = [a for k in FLEET for a in _vehicles(register, k)]
    last: dict[str, tuple[float, float]] = {}
    travelled: Counter[str] = Counter()
    states: dict[str, Counter[str]] = {k: Counter() for k in FLEET}
    step = timedelta(seconds=5)
    for _, values in _run(register, start, start + timedelta(minutes=40), step):
        for a in vehicles:
            lat, lon = values[a.tag("lat")], values[a.tag("lon")]
            speed, state = values[a.tag("speed_kmh")], values[a.tag("state")]
            assert state in STATES
            assert 0.0 <= speed <= 70.0
            assert min(lats) - 0.05 < lat < max(lats) + 0.05
            assert min(lons) - 0.07 < lon < max(lons) + 0.07
            # A round stays in its commune's streets: within a few km of depot and centre.
            assert _metres(a.lat, a.lon, lat, lon) < 3_500
            centre = communes[a.commune]
            assert _metres(centre.lat, centre.lon, lat, lon) < 7_000
            if a.id in last:
                moved = _metres(*last[a.id], lat, lon)
                # Never a jump: at most what 70 km/h covers in a step (positions are reported
                # every 5 s, so the reported one may be a step late).
                assert moved <= 70 / 3.6 * 10 + 1, (a.id, moved)
                travelled[a.id] += moved
            last[a.id] = (lat, lon)
            states[a.asset_class][state] += 1
    assert states["waste_truck"]["working"] > 0 and states["street_sweeper"]["working"] > 0
    assert states["police_vehicle"]["patrol"] > 0
    assert states["maintenance_van"]["working"] + states["maintenance_van"]["driving"] > 0
    # Every waste truck and maintenance van on shift has gone somewhere in 40 minutes.
    for a in _vehicles(register, "waste_truck"):
        assert travelled[a.id] > 300, a.id


def test_out_of_hours_vehicles_are_parked_at_the_depot(fleet) -> None:
    """At 3 in the morning vans, trucks and sweepers are at their depot; police still patrol."""
    register = fleet
    start = _local(2026, 3, 3, 22, 0).astimezone(UTC)  # Tuesday evening: night sweepers out
    end = _local(2026, 3, 4, 3, 0).astimezone(UTC)
    *_, (_, values) = _run(register, start, end, timedelta(seconds=30))
    for cls in ("maintenance_van", "waste_truck", "street_sweeper"):
        for a in _vehicles(register, cls):
            assert values[a.tag("state")] == "depot", a.id
            assert values[a.tag("speed_kmh")] == 0.0
            assert (values[a.tag("lat")], values[a.tag("lon")]) == (a.lat, a.lon)
    police = Counter(values[a.tag("state")] for a in _vehicles(register, "police_vehicle"))
    assert police["depot"] == 5  # one crew in three off, 24/7
    assert police["patrol"] + police["stopped"] == 10


@pytest.mark.parametrize("step_s", [1, 60, 300, 900])
def test_rounds_hold_with_coarse_steps(fleet, step_s: int) -> None:
    """From a second to a quarter of an hour, shifts, depots and speeds keep their meaning."""
    register = fleet
    trucks = _vehicles(register, "waste_truck")
    start = _local(2026, 3, 4, 3, 0).astimezone(UTC)  # Wednesday: trucks start 4:30-5:30
    span = timedelta(hours=11) if step_s >= 60 else timedelta(minutes=20)
    at: dict[int, Counter[str]] = {}
    distance = 0.0
    last: dict[str, tuple[float, float]] = {}
    for t, values in _run(register, start, start + span, timedelta(seconds=step_s), faults=0.2):
        hour = t.astimezone(PARIS).hour
        for a in trucks:
            lat, lon, speed = (values[a.tag(s)] for s in ("lat", "lon", "speed_kmh"))
            assert np.isfinite([lat, lon, speed]).all() and 0 <= speed <= 70
            assert _metres(a.lat, a.lon, lat, lon) < 3_500
            if a.id in last:
                distance += _metres(*last[a.id], lat, lon)
            last[a.id] = (lat, lon)
            at.setdefault(hour, Counter())[values[a.tag("state")]] += 1
    if step_s >= 60:
        assert set(at[3]) == {"depot"}  # before the shift
        assert at[9]["depot"] == 0 and at[9]["working"] > at[9]["stopped"]  # mid-shift
        assert set(at[13]) == {"depot"}  # the round ends by noon-ish, back home
        # Seven hours of rounds: tens of km per truck whatever the step (a lap is 10-20 km).
        per_truck_km = distance / len(trucks) / 1000
        assert 20 < per_truck_km < 150, per_truck_km
    else:
        assert set(at[3]) == {"depot"}


# Privacy of staff positions.

POLICY = PositionPolicy(FLEET, ["supervisor", "admin"], coarse_m=500.0, ref_lat=47.32)
HERE = (47.32345, 5.04123)


def test_position_policy_exact_for_precise_roles_coarse_for_others() -> None:
    """A supervisor sees the exact place; a viewer its 500 m cell; a bus is never blurred."""
    assert POLICY.personal("police_vehicle") and not POLICY.personal("bus")
    assert POLICY.precise("supervisor") and POLICY.precise("admin")
    assert not POLICY.precise("viewer") and not POLICY.precise(None)
    assert POLICY.show("supervisor", "police_vehicle", *HERE) == HERE
    assert POLICY.show("viewer", "bus", *HERE) == HERE
    coarse = POLICY.show("viewer", "police_vehicle", *HERE)
    assert coarse != HERE
    assert _metres(*HERE, *coarse) < 500 / 2 * math.sqrt(2) + 1  # within its cell
    # The same cell for every point of it: nearby moves cannot be followed.
    near = (HERE[0] + 0.0004, HERE[1] - 0.0003)
    cell = POLICY.show("operator", "police_vehicle", *near)
    assert cell == coarse or _metres(*coarse, *cell) >= 499
    # A lone lat or lon (trends, API) snaps to the same grid as the pair on the map.
    assert (POLICY.coarsen("lat", HERE[0]), POLICY.coarsen("lon", HERE[1])) == coarse
    assert POLICY.coarsen("speed_kmh", 42.0) == 42.0


def test_position_policy_reads_the_config(demo_config: Config) -> None:
    """The demo's policy: personal fleet classes, precise supervisors and admins, 500 m."""
    policy = PositionPolicy.from_config(demo_config)
    assert policy.personal_classes == frozenset(FLEET)
    assert policy.precise_roles == {"supervisor", "admin"} and policy.coarse_m == 500
    assert privacy_problems(demo_config, ROLES) == []


def test_privacy_config_errors_are_clear(tmp_path: Path) -> None:
    """Bad `[privacy]` values are refused naming the key; unknown roles are named."""
    with pytest.raises(ValidationError, match="coarse_position_m"):
        PrivacyConfig(coarse_position_m=0)
    with pytest.raises(ValidationError, match="roles listed twice: admin"):
        PrivacyConfig(precise_position_roles=["admin", "admin"])
    with pytest.raises(ValueError, match="coarse_m"):
        PositionPolicy(FLEET, [], coarse_m=float("nan"))
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    bad = text.replace("coarse_position_m = 500", "coarse_position_m = -3")
    path = tmp_path / "config.toml"
    path.write_text(bad, encoding="utf-8")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "privacy.coarse_position_m" in str(err.value)
    data = tomllib.loads(text)
    data["privacy"]["precise_position_roles"] = ["supervisor", "chief"]
    data["privacy"]["api_role"] = "robot"
    cfg = Config.model_validate(data)
    assert privacy_problems(cfg, ROLES) == [
        "privacy.precise_position_roles[1]: unknown role 'chief'; expected one of "
        + ", ".join(ROLES),
        "privacy.api_role: unknown role 'robot'; expected one of " + ", ".join(ROLES),
    ]


@pytest.fixture
def stored(tmp_path: Path, register):
    """A real DuckDB historian holding a police car's track, a bus's and a cabinet's power."""
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    car = _vehicles(register, "police_vehicle")[0]
    bus = _vehicles(register, "bus")[0]
    cabinet = _vehicles(register, "streetlight_cabinet")[0]
    t0 = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)
    samples = []
    for i in range(20):
        ts = t0 + timedelta(minutes=i)
        samples += [
            Sample(car.tag("lat"), ts, HERE[0] + i * 1e-4),
            Sample(car.tag("lon"), ts, HERE[1] + i * 1e-4),
            Sample(car.tag("speed_kmh"), ts, 30.0 + i),
            Sample(bus.tag("lat"), ts, HERE[0] + i * 1e-4),
            Sample(cabinet.tag("power_kw"), ts, 3.5),
        ]
    hist.write(samples)
    yield hist, car, bus, cabinet, t0
    hist.close()


def _viewer(demo_config: Config, register: Register, role: str | None) -> PositionViewer:
    return PositionViewer(PositionPolicy.from_config(demo_config), role, register)


def test_trend_data_blurs_staff_positions_for_a_viewer_only(stored, demo_config, register) -> None:
    """The Trends page's data: a viewer gets the car's last cell, a supervisor its exact track."""
    hist, car, bus, _, t0 = stored
    policy = PositionPolicy.from_config(demo_config)
    tags = [car.tag("lat"), car.tag("lon"), car.tag("speed_kmh"), bus.tag("lat")]
    window = (t0 - timedelta(minutes=1), t0 + timedelta(hours=1))
    frames = {}
    for role in ("viewer", "supervisor"):
        viewer = _viewer(demo_config, register, role)
        df, stored_n, _ = trend_frame(hist, {}, tags, window, 1000, False, viewer=viewer)
        assert stored_n == 80
        frames[role] = {t: g.value.tolist() for t, g in df.groupby("tag")}
    exact, blurred = frames["supervisor"], frames["viewer"]
    assert exact[car.tag("lat")] == pytest.approx([HERE[0] + i * 1e-4 for i in range(20)])
    # A track of cells would still follow the crew through the day: only the newest cell.
    assert blurred[car.tag("lat")] == [policy.coarse_lat(exact[car.tag("lat")][-1])]
    assert blurred[car.tag("lon")] == [policy.coarse_lon(exact[car.tag("lon")][-1])]
    assert blurred[car.tag("lat")] != exact[car.tag("lat")][-1:]
    # Speed is no position, and a bus carries no staff position: both as stored.
    assert blurred[car.tag("speed_kmh")] == exact[car.tag("speed_kmh")]
    assert blurred[bus.tag("lat")] == exact[bus.tag("lat")]
    # Outside a request (jobs, scripts) nobody is asking: no reader, values as stored.
    assert request_viewer() is None


def test_api_query_and_latest_answer_as_the_api_role(stored, demo_config, register) -> None:
    """Through the token API: the last cell for `api_role = viewer`, exact for a supervisor."""
    hist, car, bus, cabinet, _ = stored
    policy = PositionPolicy.from_config(demo_config)
    answers = {}
    for role in ("viewer", "supervisor"):
        server = Flask(f"api-{role}")
        register_query_api(server, hist, "tok", _viewer(demo_config, register, role))
        client = server.test_client()
        auth = {"Authorization": "Bearer tok"}
        tags = [car.tag("lat"), car.tag("lon"), bus.tag("lat"), cabinet.tag("power_kw")]
        q = client.get("/api/v1/query", query_string={"tag": tags, "start": "-2h"}, headers=auth)
        latest = client.get("/api/v1/latest", query_string={"tag": tags}, headers=auth)
        assert q.status_code == 200 and latest.status_code == 200, q.get_json()
        answers[role] = (q.get_json()["rows"], latest.get_json()["rows"])
        hourly = client.get(
            "/api/v1/query",
            query_string={"tag": car.tag("lat"), "start": "-2h", "every": "1h", "agg": "sum"},
            headers=auth,
        )
        counted = client.get(
            "/api/v1/query",
            query_string={"tag": car.tag("lat"), "start": "-2h", "every": "10m", "agg": "count"},
            headers=auth,
        )
        if role == "viewer":
            # A sum over a count gives the exact mean position back, a count per bucket says
            # when the car moved: refused, said why.
            for refused in (hourly, counted):
                assert refused.status_code == 400
                assert "not available for staff positions" in refused.get_json()["error"]
        else:
            assert hourly.status_code == 200 and counted.status_code == 200
    (q_coarse, l_coarse), (q_exact, l_exact) = answers["viewer"], answers["supervisor"]
    assert len(q_exact) == 80
    by_tag: dict[str, list[dict]] = {}
    for row in q_exact:
        by_tag.setdefault(row["tag"], []).append(row)
    coarsen = {car.tag("lat"): policy.coarse_lat, car.tag("lon"): policy.coarse_lon}
    expected = []
    for row in q_exact:
        if row["tag"] not in coarsen:
            expected.append((row["tag"], row["ts"], row["value"]))
        elif row is by_tag[row["tag"]][-1]:  # of a track, only the newest, in its cell
            expected.append((row["tag"], row["ts"], coarsen[row["tag"]](row["value"])))
    assert [(r["tag"], r["ts"], r["value"]) for r in q_coarse] == expected
    for coarse, exact in zip(l_coarse, l_exact, strict=True):
        assert coarse["tag"] == exact["tag"] and coarse["ts"] == exact["ts"]
        if coarse["tag"] in coarsen:
            assert coarse["value"] == coarsen[coarse["tag"]](exact["value"]) != exact["value"]
        else:
            assert coarse["value"] == exact["value"]


PER_DAY = 144  # a sample every 10 minutes


def _midnight(t: datetime) -> datetime:
    return t.replace(hour=0, minute=0, second=0, microsecond=0)


def test_retention_keeps_a_month_of_tracks_then_aggregates(tmp_path: Path, demo_config, register):
    """The nightly rule: raw tracks older than 30 days go, their aggregates and the rest stay."""
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    now = datetime(2026, 4, 15, 3, 17, tzinfo=UTC)
    old_day = now - timedelta(days=40)
    recent_day = now - timedelta(days=3)
    tracks = {cls: _vehicles(register, cls)[0] for cls in FLEET}
    cabinet = _vehicles(register, "streetlight_cabinet")[0]
    samples = []
    for day in (old_day, recent_day):
        base = _midnight(day)
        for i in range(PER_DAY):
            ts = base + timedelta(minutes=10 * i)
            for a in tracks.values():
                samples.append(Sample(a.tag("lat"), ts, 47.3 + i * 1e-4))
                samples.append(Sample(a.tag("speed_kmh"), ts, 20.0))
            samples.append(Sample(cabinet.tag("power_kw"), ts, 3.0))
    hist.write(samples)
    hist.compact()
    old = (_midnight(old_day), _midnight(old_day) + timedelta(days=1))
    recent = (_midnight(recent_day), _midnight(recent_day) + timedelta(days=1))
    lats = [a.tag("lat") for a in tracks.values()]
    daily_before = hist.query(lats, *old, every=timedelta(days=1), agg="mean")
    retention = demo_config.historian.retention
    deleted = hist.apply_retention(retention.rules, retention.raw_days, now=now)
    assert deleted == 8 * PER_DAY  # the four vehicles' old lat and speed samples, no other
    assert hist.query(lats, *old).empty
    assert len(hist.query(lats, *recent)) == 4 * PER_DAY  # the last month kept raw
    assert len(hist.query([cabinet.tag("power_kw")], *old)) == PER_DAY  # not a track
    daily_after = hist.query(lats, *old, every=timedelta(days=1), agg="mean")
    assert len(daily_after) == 4
    assert daily_after.value.tolist() == pytest.approx(daily_before.value.tolist())
    hourly = hist.query(lats, *old, every=timedelta(hours=1), agg="mean")
    assert len(hourly) == 4 * 24
    hist.close()
