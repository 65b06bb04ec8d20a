"""The public open-data feed of car parks: `/public/parking.json` and `/public/parking.geojson`.

No login (the auth guard lets `/public/` through), so only what a city publishes: each car
park's id, name, place, capacity, free spaces and the time of that value; nothing internal.
Answers are cached for `cache_s` and each client address may ask `requests_per_min` times a
minute (429 beyond), so the feed cannot be used to load the gateway.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo

from flask import Flask, Response, request, send_from_directory

from beffroi.core.live import LiveValues
from beffroi.core.model import Asset, Quality, Sample, utcnow
from beffroi.core.register import Register
from beffroi.core.seams import Historian
from beffroi.hmi import parking_ngsi, parking_page
from beffroi.hmi.config import HmiSite
from beffroi.hmi.parking_trend import Trend, TrendReader, trend_of
from beffroi.hmi.server import address_key
from beffroi.i18n import _, in_locale

log = logging.getLogger(__name__)

FIELDS = ("id", "name", "lat", "lon", "capacity", "free_spaces", "updated")
STATIC = Path(__file__).parent / "static"
STATIC_MAX_AGE = 24 * 3600  # vendored files change only with a release; ours carry ?v=<hash>

Status = Literal["available", "almost_full", "full", "closed", "unavailable"]


class RateLimit:
    """A sliding one-minute window per client address, bounded in the addresses it remembers."""

    def __init__(self, per_min: int, max_clients: int):
        self.per_min, self.max_clients = per_min, max_clients
        self._hits: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()

    def retry_after(self, address: str, now: float | None = None) -> float:
        """Count a request; return 0 when allowed, else the seconds to wait."""
        now = time.monotonic() if now is None else now
        with self._lock:
            q = self._hits.pop(address, None) or deque()
            while q and now - q[0] >= 60.0:
                q.popleft()
            self._hits[address] = q  # most recently seen last
            while len(self._hits) > self.max_clients:
                self._hits.popitem(last=False)
            if len(q) >= self.per_min:
                return 60.0 - (now - q[0])
            q.append(now)
            return 0.0


@dataclass(frozen=True, slots=True)
class Park:
    """One car park as the public sees it at one moment."""

    id: str
    name: str
    commune: str  # the commune's name
    lat: float
    lon: float
    capacity: int | None  # None: unknown (never zero for unknown)
    free: int | None
    updated: datetime | None  # UTC time of the free-spaces value
    status: Status
    trend: Trend | None  # None: not enough history
    occupancy: float | None  # occupied share, 0..1

    def record(self, tz: ZoneInfo) -> dict[str, Any]:
        """Return the open-data record: exactly FIELDS."""
        return {
            "id": self.id,
            "name": self.name,
            "lat": self.lat,
            "lon": self.lon,
            "capacity": self.capacity,
            "free_spaces": self.free,
            "updated": self.updated.astimezone(tz).isoformat(timespec="seconds")
            if self.updated
            else None,
        }


class ParkingFeed:
    """Build every public view of the car parks from one snapshot, at most once per cache period.

    The JSON and GeoJSON feeds, the NGSI-LD entities and the residents' page all read the same
    snapshot, so they agree with each other and cost the gateway the same whatever the audience.
    """

    def __init__(
        self,
        cfg: HmiSite,
        register: Register,
        live: LiveValues,
        historian: Historian | None = None,
    ):
        pub = cfg.hmi.public
        self.cache_s, self.names, self.live = pub.cache_s, pub.names, live
        self.stale = timedelta(seconds=pub.stale_s)
        self.almost_full = pub.almost_full_pct / 100.0
        self.tz = ZoneInfo(cfg.metropolis.timezone)
        self.asset_class = pub.asset_class
        cls = cfg.asset_classes.get(pub.asset_class)
        # The feed is cached for everyone: its made-up names are in French, the public's language.
        with in_locale("fr"):
            self.label = _(cls.label) if cls is not None else ""
        self.register = register
        # The earlier window is read at most once a minute, or once per cache period if longer.
        self.trends = TrendReader(historian, pub.trend_min, refresh_s=max(60.0, pub.cache_s))
        self._revision = -1
        self.parks: list[Asset] = []
        self._snapshot: tuple[float, datetime, list[Park]] | None = None
        self._cache: dict[tuple[str, str], tuple[datetime, bytes]] = {}
        self._lock = threading.Lock()

    def _take_register(self) -> None:
        """List the car parks in service, as the living register holds them now.

        One placed by nobody yet (found by discovery, at its commune's centre) or removed at
        its source is not published: a resident must not drive to a place that is wrong.
        """
        revision = self.register.revision
        self.parks = sorted(
            (
                a
                for a in self.register.assets.values()
                if a.asset_class == self.asset_class and a.state == "active"
            ),
            key=lambda a: a.id,
        )
        self._revision = revision

    def _name(self, a: Asset) -> str:
        """Return a car park's public name: the config's, the inventory's, else a made one."""
        if a.id in self.names:
            return self.names[a.id]
        if a.name:
            return a.name
        return f"{self.label} {a.id} – {self._commune(a)}"

    def _commune(self, a: Asset) -> str:
        commune = self.register.communes.get(a.commune)
        return commune.name if commune is not None else a.commune

    def read(self, now: datetime | None = None) -> list[Park]:
        """Read every car park from live values now (uncached: use `snapshot`)."""
        if self.register.revision != self._revision:
            self._take_register()
        now = now or utcnow()
        before = self.trends.before([a.tag("free_spaces") for a in self.parks], now)
        out = []
        for a in self.parks:
            cap, free_s = (
                _count(self.live.get(a.tag("capacity"))),
                self.live.get(a.tag("free_spaces")),
            )
            free = _count(free_s)
            stamp = free_s.ts if free_s is not None else None
            if free is not None:  # a counter below zero or past capacity is no more room
                free = max(0, min(free, cap) if cap is not None else free)
            status = self._status(a, cap, free, stamp, now)
            known = status not in ("unavailable", "closed")
            out.append(
                Park(
                    id=a.id,
                    name=self._name(a),
                    commune=self._commune(a),
                    lat=round(a.lat, 6),
                    lon=round(a.lon, 6),
                    capacity=cap,
                    free=free,
                    updated=stamp,
                    status=status,
                    trend=trend_of(free, before.get(a.tag("free_spaces")), cap) if known else None,
                    occupancy=(cap - free) / cap if known and cap and free is not None else None,
                )
            )
        return out

    def _status(
        self, a: Asset, cap: int | None, free: int | None, stamp: datetime | None, now: datetime
    ) -> Status:
        """Return what a resident is told: unavailable, closed, full, almost full or available."""
        fault = self.live.get(a.tag("fault"))
        if fault is not None and fault.quality is Quality.GOOD and fault.value is True:
            return "unavailable"  # a faulted counter freezes: its count is not news
        opened = self.live.get(a.tag("open"))
        if opened is not None and opened.quality is Quality.GOOD and opened.value is False:
            return "closed"
        if cap == 0:
            return "closed"  # no space offered at all
        if cap is None or free is None or stamp is None or now - stamp > self.stale:
            return "unavailable"
        if free == 0:
            return "full"
        if free <= cap * self.almost_full:
            return "almost_full"
        return "available"

    def records(self) -> list[dict]:
        """Return one record per car park, with only the published fields."""
        return [p.record(self.tz) for p in self.read()]

    def snapshot(self) -> tuple[datetime, list[Park]]:
        """Return the time and car parks of the current snapshot, read again past cache_s."""
        now = time.monotonic()
        with self._lock:
            if self._snapshot is None or now - self._snapshot[0] >= self.cache_s:
                self._snapshot = (now, utcnow(), self.read())
                self._cache.clear()
            return self._snapshot[1], self._snapshot[2]

    def body(self, kind: str, locale: str = "fr") -> bytes:
        """Return the cached body of one view: json, geojson, ngsi or (per locale) page."""
        generated, parks = self.snapshot()
        key = (kind, locale if kind == "page" else "")
        with self._lock:
            hit = self._cache.get(key)
            # A body is good for the snapshot it was made from only.
            if hit is not None and hit[0] is generated:
                return hit[1]
        doc: Any
        stamp = generated.astimezone(self.tz).isoformat(timespec="seconds")
        if kind == "geojson":
            doc = {
                "type": "FeatureCollection",
                "generated": stamp,
                "features": [
                    {
                        "type": "Feature",
                        "geometry": {"type": "Point", "coordinates": [p.lon, p.lat]},
                        "properties": {
                            k: v for k, v in p.record(self.tz).items() if k not in ("lat", "lon")
                        },
                    }
                    for p in parks
                ],
            }
        elif kind == "ngsi":
            doc = parking_ngsi.entities(parks)
        elif kind == "page":
            doc = parking_page.live_doc(generated, parks, self.tz, locale)
        else:
            doc = {"generated": stamp, "car_parks": [p.record(self.tz) for p in parks]}
        data = json.dumps(doc, ensure_ascii=False).encode("utf-8")
        with self._lock:
            self._cache[key] = (generated, data)
        return data


def _count(sample: Sample | None) -> int | None:
    """Return a whole count from a good sample, else None (unknown is not zero)."""
    if sample is None or sample.quality is not Quality.GOOD:
        return None
    v = sample.value
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return round(v)


def register_public(
    server: Flask,
    cfg: HmiSite,
    register: Register,
    live: LiveValues,
    historian: Historian | None = None,
) -> None:
    """Add the unauthenticated, cached and rate-limited car-park feeds and residents' page."""
    pub = cfg.hmi.public
    if not pub.enabled:
        return
    feed = ParkingFeed(cfg, register, live, historian)
    limit = RateLimit(pub.requests_per_min, pub.max_clients)
    types = {
        "json": "application/json",
        "geojson": "application/geo+json",
        "ngsi": "application/json",
        "page": "application/json",
    }
    page = parking_page.ParkingPage(cfg, feed, STATIC)

    def refused() -> Response | None:
        # The socket's address (or a trusted proxy's report), not X-Forwarded-For: a header any
        # client can forge; an IPv6 client counts as its /64.
        wait = limit.retry_after(address_key(request.remote_addr or "?"))
        if wait <= 0:
            return None
        resp = Response('{"error": "too many requests"}', 429, mimetype="application/json")
        resp.headers["Retry-After"] = str(math.ceil(wait))
        return resp

    def serve(kind: str) -> Response:
        too_many = refused()
        if too_many is not None:
            return too_many
        locale = parking_page.locale_of(request.args.get("lang"))
        resp = Response(feed.body(kind, locale), 200, mimetype=types[kind])
        resp.headers["Cache-Control"] = f"public, max-age={int(pub.cache_s)}"
        resp.headers["Access-Control-Allow-Origin"] = "*"  # open data, for any web app
        resp.headers["X-Content-Type-Options"] = "nosniff"
        if kind == "ngsi":
            # JSON-LD readers find the vocabulary here as well as in each entity's @context.
            resp.headers["Link"] = (
                f'<{parking_ngsi.CONTEXT[0]}>; rel="http://www.w3.org/ns/json-ld#context"; '
                'type="application/ld+json"'
            )
        return resp

    def serve_page() -> Response:
        too_many = refused()
        if too_many is not None:
            return page.too_many(too_many)
        return page.render(request.args)

    def static(filename: str) -> Response:
        # Leaflet and the page's own script and style: nothing else is served from here.
        resp = send_from_directory(STATIC, filename, max_age=STATIC_MAX_AGE)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["Access-Control-Allow-Origin"] = "*"
        return resp

    server.add_url_rule("/public/parking.json", "public_parking_json", lambda: serve("json"))
    server.add_url_rule(
        "/public/parking.geojson", "public_parking_geojson", lambda: serve("geojson")
    )
    server.add_url_rule(
        "/public/api/parking/offstreetparking.json",
        "public_parking_ngsi",
        lambda: serve("ngsi"),
    )
    server.add_url_rule("/public/parking/live.json", "public_parking_live", lambda: serve("page"))
    server.add_url_rule("/public/parking", "public_parking_page", serve_page)
    server.add_url_rule("/public/static/<path:filename>", "public_static", static)

    def not_published(rest: str) -> Response:
        # /public/ needs no login: nothing but the feed may answer there, not even the app shell.
        return Response('{"error": "not found"}', 404, mimetype="application/json")

    server.add_url_rule("/public/<path:rest>", "public_not_published", not_published)
    parks = sum(1 for a in register.assets.values() if a.asset_class == pub.asset_class)
    log.info("public parking feed: %d car parks, cached %g s", parks, pub.cache_s)
