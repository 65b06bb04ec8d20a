"""The maps' background: configured tile layers, and an offline schematic drawn from the communes.

No open data of commune boundaries or roads could be had from the package registries this
project installs from (the Etalab découpage package carries codes and populations, not contours;
IGN Admin Express and OpenStreetMap extracts are not packaged there). So the offline background
is derived, honestly and only, from what `[[communes]]` gives: each commune is the cell of the
points closer to its centre than to any other centre (a Voronoi diagram), clipped to the area
around the centres, and neighbouring centres are joined by straight lines. It orients an
operator (which commune, which way the next one lies) and says it is schematic in its credit:
its lines are neither the legal boundaries nor the roads. With `[[hmi.map.layers]]` set, real
tiles (IGN Géoplateforme, an OpenStreetMap-compatible server, the city's own) draw under it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Iterable, Sequence
from functools import lru_cache
from typing import Any, Protocol

import dash_leaflet as dl
import shapely
from dash.development.base_component import Component
from flask import Flask, Response, request
from shapely.geometry import MultiPoint, Point, Polygon
from shapely.geometry.base import BaseGeometry

from beffroi.hmi.config import HmiSite, MapConfig
from beffroi.i18n import N_, _

log = logging.getLogger(__name__)

SCHEMATIC_URL = "/public/fond-de-carte.geojson"
SCHEMATIC_ATTRIBUTION = N_("Schematic background drawn from the commune centres (not boundaries)")
# The schematic changes only with the config: a day in caches, revalidated by its ETag.
CACHE_SECONDS = 86_400
DEFAULT_CENTRE = (47.32, 5.04)

# Metres per degree near the communes (a local equirectangular plane: exact enough at this
# scale, and it keeps Voronoi cells isotropic, which degrees of longitude are not).
_M_PER_DEG_LAT = 110_574.0
_M_PER_DEG_LON_EQUATOR = 111_320.0
# The area the cells fill: around each centre, a disc growing with the population (about a
# commune's size here), joined by the centres' convex hull widened by this margin.
_BASE_RADIUS_M = 1_400.0
_RADIUS_PER_SQRT_INHABITANT_M = 6.0
_HULL_MARGIN_M = 900.0
_SIMPLIFY_M = 40.0
# Neighbours farther apart than this are not joined: such an edge runs along the area's edge.
_MAX_LINK_M = 9_000.0


class Place(Protocol):
    """What the schematic reads of a commune (the register's Commune and the config's agree)."""

    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def lat(self) -> float: ...

    @property
    def lon(self) -> float: ...

    @property
    def population(self) -> int: ...


class _Plane:
    """Local metric coordinates around a reference point, and back to degrees."""

    def __init__(self, lat0: float, lon0: float) -> None:
        self.lat0, self.lon0 = lat0, lon0
        self.kx = _M_PER_DEG_LON_EQUATOR * math.cos(math.radians(lat0))

    def to_xy(self, lat: float, lon: float) -> tuple[float, float]:
        return (lon - self.lon0) * self.kx, (lat - self.lat0) * _M_PER_DEG_LAT

    def to_lonlat(self, x: float, y: float) -> list[float]:
        return [round(self.lon0 + x / self.kx, 5), round(self.lat0 + y / _M_PER_DEG_LAT, 5)]


def _ring(plane: _Plane, coords: Iterable[tuple[float, ...]]) -> list[list[float]]:
    return [plane.to_lonlat(c[0], c[1]) for c in coords]


def _polygon_geometry(plane: _Plane, geom: shapely.Geometry) -> dict[str, Any] | None:
    parts = [g for g in getattr(geom, "geoms", [geom]) if isinstance(g, Polygon) and not g.is_empty]
    if not parts:
        return None
    rings = [
        [_ring(plane, p.exterior.coords), *(_ring(plane, i.coords) for i in p.interiors)]
        for p in parts
    ]
    if len(rings) == 1:
        return {"type": "Polygon", "coordinates": rings[0]}
    return {"type": "MultiPolygon", "coordinates": rings}


def schematic_geojson(communes: Sequence[Place]) -> dict[str, Any]:
    """Return the schematic background: one cell per commune and lines between neighbours."""
    return json.loads(_schematic_text(_key(communes)))


def _key(communes: Sequence[Place]) -> tuple[tuple[str, str, float, float, int], ...]:
    return tuple(sorted((c.id, c.name, c.lat, c.lon, c.population) for c in communes))


@lru_cache(maxsize=8)
def _schematic_text(key: tuple[tuple[str, str, float, float, int], ...]) -> str:
    """Compute the schematic once per set of communes, as compact JSON text."""
    features: list[dict[str, Any]] = []
    if not key:
        return json.dumps({"type": "FeatureCollection", "features": []})
    lat0 = sum(k[2] for k in key) / len(key)
    lon0 = sum(k[3] for k in key) / len(key)
    plane = _Plane(lat0, lon0)
    centres = [Point(plane.to_xy(k[2], k[3])) for k in key]
    discs = [
        c.buffer(_BASE_RADIUS_M + _RADIUS_PER_SQRT_INHABITANT_M * math.sqrt(max(k[4], 0)))
        for c, k in zip(centres, key, strict=True)
    ]
    points = MultiPoint(centres)
    area = shapely.unary_union([*discs, points.convex_hull.buffer(_HULL_MARGIN_M)])
    area = area.simplify(_SIMPLIFY_M)
    cells: list[BaseGeometry]
    if len(centres) == 1:
        cells = [area]
    else:
        diagram = shapely.voronoi_polygons(points, extend_to=area.envelope.buffer(1_000))
        # The diagram's cells come in no promised order: each belongs to the centre it holds.
        cells = []
        for c in centres:
            region = next(g for g in diagram.geoms if g.covers(c))
            cells.append(region.intersection(area).simplify(_SIMPLIFY_M))
    for k, cell in zip(key, cells, strict=True):
        geometry = _polygon_geometry(plane, shapely.make_valid(cell))
        if geometry is None:
            continue
        features.append(
            {
                "type": "Feature",
                "geometry": geometry,
                "properties": {"kind": "commune", "id": k[0], "name": k[1]},
            }
        )
    if len(centres) >= 2:
        at = {(round(c.x, 3), round(c.y, 3)): i for i, c in enumerate(centres)}
        edges = shapely.delaunay_triangles(points, only_edges=True)
        for edge in getattr(edges, "geoms", []):
            (x1, y1), (x2, y2) = edge.coords
            if math.hypot(x2 - x1, y2 - y1) > _MAX_LINK_M:
                continue
            a, b = at.get((round(x1, 3), round(y1, 3))), at.get((round(x2, 3), round(y2, 3)))
            if a is None or b is None or not cells[a].buffer(1).intersects(cells[b]):
                continue  # neighbours in the triangulation only, their cells apart
            features.append(
                {
                    "type": "Feature",
                    "geometry": {
                        "type": "LineString",
                        "coordinates": [plane.to_lonlat(x1, y1), plane.to_lonlat(x2, y2)],
                    },
                    "properties": {"kind": "link", "from": key[a][0], "to": key[b][0]},
                }
            )
    return json.dumps({"type": "FeatureCollection", "features": features}, separators=(",", ":"))


def schematic_body(communes: Sequence[Place]) -> tuple[bytes, str]:
    """Return the schematic as GeoJSON bytes and their entity tag (unquoted)."""
    body = _schematic_text(_key(communes)).encode()
    return body, hashlib.blake2b(body, digest_size=12).hexdigest()


def centre_of(communes: Iterable[Place]) -> list[float]:
    """Return the middle of the communes' extent, where a map opens."""
    places = [(c.lat, c.lon) for c in communes] or [DEFAULT_CENTRE]
    lats, lons = zip(*places, strict=True)
    return [(min(lats) + max(lats)) / 2, (min(lons) + max(lons)) / 2]


def tile_settings(cfg: MapConfig) -> list[dict[str, Any]]:
    """Return the configured tile layers as JSON-ready settings, the default first."""
    return [
        {
            "name": t.name,
            "url": t.url,
            "attribution": t.attribution,
            "min_zoom": t.min_zoom,
            "max_zoom": t.max_zoom,
            "subdomains": t.subdomains,
        }
        for t in cfg.layers
    ]


def public_map_settings(cfg: HmiSite) -> dict[str, Any]:
    """Return what a public map needs: tile layers, schematic URL, centre, zoom and credits."""
    map_cfg = cfg.hmi.map
    tiles = tile_settings(map_cfg)
    credits = [t["attribution"] for t in tiles[:1]]
    if map_cfg.draws_schematic:
        credits.append(_(SCHEMATIC_ATTRIBUTION))
    return {
        "tiles": tiles,
        "schematic": SCHEMATIC_URL if map_cfg.draws_schematic else None,
        "center": centre_of(cfg.communes),
        "zoom": map_cfg.zoom,
        "attribution": " | ".join(credits),
    }


def register_basemap(server: Flask, cfg: HmiSite) -> None:
    """Serve the schematic at /public/fond-de-carte.geojson: no login, cacheable, revalidated."""
    body, etag = schematic_body(cfg.communes)

    def fond_de_carte() -> Response:
        resp = Response(body, 200, mimetype="application/geo+json")
        resp.set_etag(etag)
        resp.headers["Cache-Control"] = f"public, max-age={CACHE_SECONDS}"
        resp.headers["Access-Control-Allow-Origin"] = "*"  # open data, for any web map
        # 304 Not Modified, without the body, when the client's copy carries this ETag.
        resp.make_conditional(request)
        return resp

    # A rule without variables: Werkzeug matches it before /public/<path:rest> (public.py's
    # "not published" answer), whichever was added first.
    server.add_url_rule(SCHEMATIC_URL, "public_fond_de_carte", fond_de_carte)
    log.info("schematic background: %d bytes for %d communes", len(body), len(cfg.communes))


# --- the HMI's maps -----------------------------------------------------------------------

SCHEMATIC_STYLE = {"variable": "dashExtensions.beffroiMap.schematicStyle"}
# Panes below Leaflet's overlay pane (400), where the markers' SVG is drawn: whatever is on
# them can never cover a marker.
SCHEMATIC_PANE = "beffroi-schematic"
SCHEMATIC_Z = 250


def base_layers(cfg: HmiSite, map_id: str, communes: Sequence[Place]) -> list[Component]:
    """Return a map's background: the tile layers (a switcher when several) and the schematic."""
    map_cfg = cfg.hmi.map
    tiles = [
        dl.TileLayer(
            url=t.url,
            attribution=t.attribution,
            minZoom=t.min_zoom,
            maxZoom=t.max_zoom,
            **({"subdomains": t.subdomains} if t.subdomains else {}),
            id=f"{map_id}-tiles-{i}",
        )
        for i, t in enumerate(map_cfg.layers)
    ]
    schematic: list[Component] = []
    if map_cfg.draws_schematic:
        schematic = [
            dl.Pane(
                name=SCHEMATIC_PANE,
                style={"zIndex": SCHEMATIC_Z, "pointerEvents": "none"},
                children=dl.GeoJSON(
                    id=f"{map_id}-schematic",
                    data=schematic_geojson(communes),
                    style=SCHEMATIC_STYLE,
                    # Outlines only over real tiles; filled cells alone (no tiles) read as land.
                    hideout={"tiles": bool(tiles)},
                    interactive=False,
                    pane=SCHEMATIC_PANE,
                ),
            ),
            # dash-leaflet does not hand a GeoJSON layer's attribution to Leaflet: the schematic
            # says what it is in a credit of its own, under the map's.
            dl.AttributionControl(
                id=f"{map_id}-schematic-credit",
                position="bottomright",
                prefix=_(SCHEMATIC_ATTRIBUTION),
            ),
        ]
    if len(tiles) <= 1:
        return [*tiles, *schematic]
    switcher = dl.LayersControl(
        [
            dl.BaseLayer(t, name=layer.name, checked=i == 0)
            for i, (t, layer) in enumerate(zip(tiles, map_cfg.layers, strict=True))
        ],
        id=f"{map_id}-layers",
        position="topright",
    )
    return [switcher, *schematic]
