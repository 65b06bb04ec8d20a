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
from zoneinfo import ZoneInfo

from flask import Flask, Response, request

from beffroi.core.live import LiveValues
from beffroi.core.model import Asset, Quality, Sample, utcnow
from beffroi.core.register import Register
from beffroi.hmi.config import HmiSite

log = logging.getLogger(__name__)

FIELDS = ("id", "name", "lat", "lon", "capacity", "free_spaces", "updated")


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


class ParkingFeed:
    """Build the feed from live values, at most once per cache period."""

    def __init__(self, cfg: HmiSite, register: Register, live: LiveValues):
        pub = cfg.hmi.public
        self.cache_s, self.names, self.live = pub.cache_s, pub.names, live
        self.tz = ZoneInfo(cfg.metropolis.timezone)
        self.asset_class = pub.asset_class
        cls = cfg.asset_classes.get(pub.asset_class)
        self.label = cls.label if cls is not None else ""
        self.register = register
        self._revision = -1
        self.parks: list[Asset] = []
        self._cache: dict[str, tuple[float, bytes]] = {}
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
        commune = self.register.communes.get(a.commune)
        return f"{self.label} {a.id} – {commune.name if commune is not None else ''}"

    def records(self) -> list[dict]:
        """Return one record per car park, with only the published fields."""
        if self.register.revision != self._revision:
            self._take_register()
        out = []
        for a in self.parks:
            cap, free = self.live.get(a.tag("capacity")), self.live.get(a.tag("free_spaces"))
            stamp = free.ts if free is not None else None
            out.append(
                {
                    "id": a.id,
                    "name": self._name(a),
                    "lat": round(a.lat, 6),
                    "lon": round(a.lon, 6),
                    "capacity": _count(cap),
                    "free_spaces": _count(free),
                    "updated": stamp.astimezone(self.tz).isoformat(timespec="seconds")
                    if stamp
                    else None,
                }
            )
        return out

    def body(self, kind: str) -> bytes:
        """Return the cached JSON (kind "json") or GeoJSON ("geojson") body."""
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(kind)
            if hit is not None and now - hit[0] < self.cache_s:
                return hit[1]
            records = self.records()
            generated = utcnow().astimezone(self.tz).isoformat(timespec="seconds")
            if kind == "geojson":
                doc: dict = {
                    "type": "FeatureCollection",
                    "generated": generated,
                    "features": [
                        {
                            "type": "Feature",
                            "geometry": {"type": "Point", "coordinates": [r["lon"], r["lat"]]},
                            "properties": {k: r[k] for k in FIELDS if k not in ("lat", "lon")},
                        }
                        for r in records
                    ],
                }
            else:
                doc = {"generated": generated, "car_parks": records}
            data = json.dumps(doc, ensure_ascii=False).encode("utf-8")
            self._cache[kind] = (now, data)
            return data


def _count(sample: Sample | None) -> int | None:
    """Return a whole count from a good sample, else None (unknown is not zero)."""
    if sample is None or sample.quality is not Quality.GOOD:
        return None
    v = sample.value
    if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
        return None
    return round(v)


def register_public(server: Flask, cfg: HmiSite, register: Register, live: LiveValues) -> None:
    """Add the unauthenticated, cached and rate-limited car-park feed."""
    pub = cfg.hmi.public
    if not pub.enabled:
        return
    feed = ParkingFeed(cfg, register, live)
    limit = RateLimit(pub.requests_per_min, pub.max_clients)
    types = {"json": "application/json", "geojson": "application/geo+json"}

    def serve(kind: str) -> Response:
        # The socket's address, not X-Forwarded-For: a header any client can forge.
        wait = limit.retry_after(request.remote_addr or "?")
        if wait > 0:
            resp = Response('{"error": "too many requests"}', 429, mimetype="application/json")
            resp.headers["Retry-After"] = str(math.ceil(wait))
            return resp
        resp = Response(feed.body(kind), 200, mimetype=types[kind])
        resp.headers["Cache-Control"] = f"public, max-age={int(pub.cache_s)}"
        resp.headers["Access-Control-Allow-Origin"] = "*"  # open data, for any web app
        return resp

    server.add_url_rule("/public/parking.json", "public_parking_json", lambda: serve("json"))
    server.add_url_rule(
        "/public/parking.geojson", "public_parking_geojson", lambda: serve("geojson")
    )

    def not_published(rest: str) -> Response:
        # /public/ needs no login: nothing but the feed may answer there, not even the app shell.
        return Response('{"error": "not found"}', 404, mimetype="application/json")

    server.add_url_rule("/public/<path:rest>", "public_not_published", not_published)
    log.info("public parking feed: %d car parks, cached %g s", len(feed.parks), pub.cache_s)
