"""The public car-park feed: no login, exactly the published fields, cached, rate-limited."""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request
from datetime import timedelta

import pytest

from beffroi.core.live import LiveValues
from beffroi.core.model import Quality, Sample, utcnow
from beffroi.core.register import build_register
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.public import FIELDS, ParkingFeed, RateLimit
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore
from beffroi.inventory.records import AssetRecord
from beffroi.inventory.service import Inventory
from tests.conftest import free_port


def _get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


@pytest.fixture
def scene(demo_config, tmp_path):  # type: ignore[no-untyped-def]
    register = build_register(demo_config, assets=200)
    parks = sorted(
        (a for a in register.assets.values() if a.asset_class == "car_park"), key=lambda a: a.id
    )
    assert len(parks) >= 3
    live, now = LiveValues(), utcnow()
    samples = []
    for i, a in enumerate(parks):
        samples += [
            Sample(a.tag("capacity"), now - timedelta(hours=1), 400.0),
            Sample(a.tag("free_spaces"), now - timedelta(seconds=30 + i), 100.0 + i),
            Sample(a.tag("occupancy_pct"), now, 75.0),  # internal: never published
            Sample(a.tag("fault"), now, False),
        ]
    broken = parks[1]  # a counter that lost its link: unknown, not zero
    samples.append(Sample(broken.tag("free_spaces"), now, float("nan"), Quality.COMM_LOSS))
    live.update(samples)
    public = demo_config.hmi.public.model_copy(
        update={"requests_per_min": 6, "names": {parks[0].id: "Parking Darcy"}}
    )
    cfg = demo_config.model_copy(
        update={"hmi": demo_config.hmi.model_copy(update={"public": public})}
    )
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    users = UserStore(tmp_path / "u.duckdb", set(register.communes))
    app = create_app(cfg, register, live, hist, users=users)
    server = HmiServer(app, "127.0.0.1", free_port(), threads=4)
    server.start()
    yield server, parks, live
    server.stop()
    users.close()
    hist.close()


def test_feed_shows_exactly_the_published_fields_without_login(scene) -> None:  # type: ignore[no-untyped-def]
    """JSON and GeoJSON list every car park with only id, name, place, capacity, free spaces,
    time; unknown counts are null; other paths still need a login."""
    server, parks, _ = scene
    status, headers, body = _get(server.url + "public/parking.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert "Set-Cookie" not in headers and headers["Access-Control-Allow-Origin"] == "*"
    assert headers["Cache-Control"] == "public, max-age=10"
    doc = json.loads(body)
    assert set(doc) == {"generated", "car_parks"}
    records = doc["car_parks"]
    assert [r["id"] for r in records] == [a.id for a in parks]
    assert all(set(r) == set(FIELDS) for r in records)
    first, broken = records[0], records[1]
    assert first["name"] == "Parking Darcy" and records[2]["name"].startswith("Parking CP-")
    assert (first["lat"], first["lon"]) == (round(parks[0].lat, 6), round(parks[0].lon, 6))
    assert (first["capacity"], first["free_spaces"]) == (400, 100)
    assert first["updated"].endswith(("+01:00", "+02:00"))  # local time at the edge
    assert broken["free_spaces"] is None and broken["capacity"] == 400
    text = body.decode()
    assert "occupancy" not in text and "fault" not in text
    assert not any("/" in str(v) for r in records for v in r.values())  # no tag names

    status, headers, body = _get(server.url + "public/parking.geojson")
    assert status == 200 and headers["Content-Type"] == "application/geo+json"
    geo = json.loads(body)
    assert geo["type"] == "FeatureCollection" and len(geo["features"]) == len(parks)
    feature = geo["features"][0]
    assert feature["geometry"] == {
        "type": "Point",
        "coordinates": [round(parks[0].lon, 6), round(parks[0].lat, 6)],
    }
    assert set(feature["properties"]) == {"id", "name", "capacity", "free_spaces", "updated"}
    assert _get(server.url + "_dash-layout")[0] == 401
    assert _get(server.url + "public/users.json")[0] == 404


def test_feed_refuses_floods_per_address(scene) -> None:  # type: ignore[no-untyped-def]
    """Past requests_per_min from one address: 429 with Retry-After; values come from cache."""
    server, parks, live = scene
    codes = []
    for i in range(8):
        if i == 1:  # a new value within the cache period is not shown yet
            live.update([Sample(parks[0].tag("free_spaces"), utcnow(), 7.0)])
        status, headers, body = _get(server.url + "public/parking.json")
        codes.append(status)
        if status == 200:
            assert json.loads(body)["car_parks"][0]["free_spaces"] == 100
    assert codes == [200] * 6 + [429] * 2
    assert 0 < int(headers["Retry-After"]) <= 60


def test_rate_limit_and_cache_rules() -> None:
    """The limit is per address over a sliding minute and remembers a bounded number of them."""
    limit = RateLimit(per_min=2, max_clients=3)
    assert [limit.retry_after("a", t) for t in (0, 1, 2)] == [0, 0, 58]
    assert limit.retry_after("b", 2) == 0
    assert limit.retry_after("a", 61) == 0  # the first request left the window
    for addr in ("c", "d", "e"):
        limit.retry_after(addr, 62)
    assert len(limit._hits) == 3 and "a" not in limit._hits


def test_cache_expires(demo_config, small_register) -> None:
    """After cache_s the feed reads live values again."""
    live = LiveValues()
    park = next(a for a in small_register.assets.values() if a.asset_class == "car_park")
    live.update([Sample(park.tag("free_spaces"), utcnow(), 10.0)])
    public = demo_config.hmi.public.model_copy(update={"cache_s": 0.2})
    cfg = demo_config.model_copy(
        update={"hmi": demo_config.hmi.model_copy(update={"public": public})}
    )
    feed = ParkingFeed(cfg, small_register, live)
    first = json.loads(feed.body("json"))["car_parks"][0]
    live.update([Sample(park.tag("free_spaces"), utcnow(), 11.0)])
    assert json.loads(feed.body("json"))["car_parks"][0] == first
    time.sleep(0.25)
    assert json.loads(feed.body("json"))["car_parks"][0]["free_spaces"] == 11


def test_the_feed_follows_the_inventory(demo_config, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A car park imported while running is published under its inventory name, a moved one
    at its new place, a retired one no more; one found by discovery (not placed) is not."""
    register = build_register(demo_config, assets=200)
    parks = sorted(
        (a for a in register.assets.values() if a.asset_class == "car_park"), key=lambda a: a.id
    )
    feed = ParkingFeed(demo_config, register, LiveValues())
    assert [r["id"] for r in feed.records()] == [a.id for a in parks]
    inventory = Inventory(demo_config, register, None)
    first = AssetRecord.of(parks[0])
    moved = dataclasses.replace(first, lat=first.lat + 0.001, name="Parking Darcy")
    new = dataclasses.replace(first, id="CP-0900", name="Parking de la Toison d'Or")
    inventory.import_records([moved, new], "parkings.geojson", "sig", partial=True)
    inventory.retire(parks[1].id, "sig", "closed for good")
    found = dataclasses.replace(register.assets[parks[2].id], id="CP-0901", tags=[])
    assert inventory.discovered([found], "opcua:parkings")  # to be placed
    records = {r["id"]: r for r in feed.records()}
    assert parks[1].id not in records and "CP-0901" not in records
    assert records["CP-0900"]["name"] == "Parking de la Toison d'Or"
    assert records[first.id]["name"] == "Parking Darcy"
    assert records[first.id]["lat"] == round(moved.lat, 6)


def test_a_counter_out_of_range_publishes_no_impossible_room(demo_config, small_register) -> None:
    """A counter drifting below zero is full, one past capacity is empty: never -3 or 450."""
    parks = sorted(
        (a for a in small_register.assets.values() if a.asset_class == "car_park"),
        key=lambda a: a.id,
    )
    live, now = LiveValues(), utcnow()
    for a, free in zip(parks[:2], (-3.0, 450.0), strict=True):
        live.update(
            [Sample(a.tag("capacity"), now, 400.0), Sample(a.tag("free_spaces"), now, free)]
        )
    shown = {p.id: p for p in ParkingFeed(demo_config, small_register, live).read(now)}
    assert (shown[parks[0].id].free, shown[parks[0].id].status) == (0, "full")
    assert shown[parks[1].id].free == 400
