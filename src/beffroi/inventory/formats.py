"""Inventory files as cities keep them: CSV and GeoJSON, read row by row with clear errors.

CSV: the columns `id`, `class`, `commune`, `lat`, `lon` (required), `name`, `address`, `model`,
`installed` (an ISO date), in any order and case (`latitude`, `longitude` also do); any other
named column is a free attribute of the asset (an empty cell: no such attribute). UTF-8, with
or without a BOM; the separator is the one of the header line, `;` as French spreadsheets
export, `,` or a tab; `47,3216` is read as a decimal comma.

GeoJSON: a FeatureCollection in WGS 84 (RFC 7946: lon, lat); each feature's properties `id`
(or the feature's `id`), `class`, `commune`, `name`, `address`, `model`, `installed`, any other
property an attribute; the place is a Point, or the centroid of another geometry (a building's
polygon, a cable's line).

Every bad row is a `RowError` naming the file, the line (the feature's index in a GeoJSON
file), the field and what was expected; the good rows still load. A file that cannot be read as
a whole (not UTF-8, a required column missing, not a FeatureCollection) loads nothing: its
assets must not look gone. What the writers write, the readers read back to the same records.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum
from pathlib import Path
from typing import Any

from beffroi.core.csv_safe import CRLF, safe_text
from beffroi.inventory.records import AssetRecord, RowError

REQUIRED = ("id", "class", "commune", "lat", "lon")
KNOWN = (*REQUIRED, "name", "address", "model", "installed")
# Other names of known columns, as GIS and spreadsheet exports write them.
ALIASES = {"latitude": "lat", "longitude": "lon", "lng": "lon"}
SEPARATORS = (";", ",", "\t")
BOM = "\ufeff"
# GeoJSON before RFC 7946 could name its coordinate system; only WGS 84 lon/lat is read.
WGS84_NAMES = ("urn:ogc:def:crs:OGC:1.3:CRS84", "urn:ogc:def:crs:OGC::CRS84", "EPSG:4326",
               "urn:ogc:def:crs:EPSG::4326")  # fmt: skip

Rows = list[tuple[int, AssetRecord]]  # (line, or feature index, of each good record)


@dataclass(slots=True)
class ParsedFile:
    """What an inventory file holds: good records with their lines, and the bad rows."""

    rows: Rows = field(default_factory=list)
    errors: list[RowError] = field(default_factory=list)
    refused: set[str] = field(default_factory=set)  # ids of the bad rows (when readable)
    whole: bool = False  # the file cannot be read at all: nothing of it counts

    def records(self) -> list[AssetRecord]:
        """Return the good records, in the file's order."""
        return [r for _, r in self.rows]

    def add(
        self,
        name: str,
        line: int,
        record: AssetRecord | None,
        problems: Sequence[tuple[str, str]],
        asset_id: str,
    ) -> None:
        """Keep a row: its record, or its problems and its id."""
        if record is not None and not problems:
            self.rows.append((line, record))
            return
        self.errors.extend(RowError(name, line, f, why) for f, why in problems)
        if asset_id:
            self.refused.add(asset_id)


class UnreadableInventory(OSError):
    """An inventory file that cannot be read as a whole: nothing of it can be imported."""

    def __init__(self, errors: Sequence[RowError]) -> None:
        super().__init__(0, "; ".join(str(e) for e in errors))
        self.errors = list(errors)


class Format(StrEnum):
    """Inventory file formats."""

    csv = "csv"
    geojson = "geojson"


def format_of(name: str, text: str = "") -> Format:
    """Return a file's format from its suffix, else from its first character."""
    suffix = Path(name).suffix.lower()
    if suffix in (".geojson", ".json"):
        return Format.geojson
    if suffix in (".csv", ".tsv", ".txt"):
        return Format.csv
    return Format.geojson if text.lstrip(BOM + " \t\r\n").startswith("{") else Format.csv


def decode(data: bytes, name: str) -> tuple[str, list[RowError]]:
    """Return a file's text (UTF-8, a BOM dropped), or no text and why."""
    try:
        return data.decode("utf-8-sig"), []
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        why = (
            f"not UTF-8 text (byte 0x{data[exc.start]:02X}); save the file as UTF-8 "
            '("CSV UTF-8" in a spreadsheet)'
        )
        return "", [RowError(name, line, "", why)]


def read_inventory(path: Path) -> tuple[list[AssetRecord], list[RowError]]:
    """Read an inventory file (CSV; GeoJSON by its suffix): its records and its bad rows.

    Raise UnreadableInventory, an OSError as a missing file is, when it cannot be read as a
    whole: importing nothing from it would retire every asset it lists.
    """
    text, errors = decode(path.read_bytes(), str(path))
    if errors:
        raise UnreadableInventory(errors)
    parsed = parse_file(text, str(path), format_of(path.name, text))
    if parsed.whole:
        raise UnreadableInventory(parsed.errors)
    return parsed.records(), parsed.errors


def parse_inventory(
    text: str, name: str, fmt: Format | None = None
) -> tuple[list[AssetRecord], list[RowError]]:
    """Read an inventory file's text: its records and its bad rows."""
    parsed = parse_file(text, name, fmt)
    return parsed.records(), parsed.errors


def parse_file(text: str, name: str, fmt: Format | None = None) -> ParsedFile:
    """Read an inventory file's text: each good record with its line (or feature index)."""
    fmt = fmt or format_of(name, text)
    text = text.removeprefix(BOM)
    return _parse_geojson(text, name) if fmt is Format.geojson else _parse_csv(text, name)


# -- CSV ----------------------------------------------------------------------------------------


def _column(header: str) -> str:
    """Return the known column a header names (any case), else the header as given."""
    key = header.strip()
    canon = ALIASES.get(key.lower(), key.lower())
    return canon if canon in KNOWN else key


def _separator(header_line: str) -> str:
    """Return the separator that makes the most known columns of the header line."""

    def score(sep: str) -> tuple[int, int]:
        cells = next(csv.reader([header_line], delimiter=sep), [])
        return sum(_column(c) in KNOWN for c in cells), header_line.count(sep)

    return max(SEPARATORS, key=score)


def _marked(text: str) -> bool:
    """Tell whether a text starts with the `'` a writer puts before a formula-like text (or
    before a text that itself starts so)."""
    return text.startswith("'") and (safe_text(text[1:]) != text[1:] or _marked(text[1:]))


def _unquote(cell: str) -> str:
    """Return a text cell without the `'` a writer put before what looks like a formula."""
    return cell[1:] if _marked(cell) else cell


def _parse_csv(text: str, name: str) -> ParsedFile:
    first = text.split("\n", 1)[0]
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=_separator(first))
    out = ParsedFile()
    try:
        header = next(reader, [])
    except csv.Error as exc:
        return ParsedFile(
            errors=[RowError(name, 1, "", f"unreadable CSV header: {exc}")], whole=True
        )
    columns = [_column(h) for h in header]
    named = [c for c in columns if c]
    twice = sorted({c for c in named if named.count(c) > 1})
    missing = [c for c in REQUIRED if c not in columns]
    if twice or missing:
        found = ", ".join(named) or "nothing"
        out.errors = [
            *(RowError(name, 1, c, "this column appears twice") for c in twice),
            *(RowError(name, 1, c, f"column missing (the header has: {found})") for c in missing),
        ]
        out.whole = True
        return out
    while True:
        line = reader.line_num + 1  # where the record starts (a quoted cell may span lines)
        try:
            cells = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:  # a cell beyond the field size limit
            out.errors.append(RowError(name, line, "", f"unreadable CSV: {exc}"))
            out.whole = True  # the rows after it are unknown: they must not look gone
            break
        if not any(c.strip() for c in cells):
            continue  # blank lines, and rows of separators only, as spreadsheets leave
        values = {c: _unquote(v.strip()) for c, v in zip(columns, cells, strict=False) if c}
        extra = [c for c in cells[len(columns) :] if c.strip()]
        if extra:
            why = f"{len(cells)} cells where the header has {len(columns)} columns"
            problems = [("", why)]
            record = None
        else:
            record, problems = _record(values, lambda f: f)
        out.add(name, line, record, problems, values.get("id", ""))
    return out


def _number(cell: str) -> float:
    """Return a number in a cell, with a decimal point or a (French) decimal comma."""
    if cell.count(",") == 1 and "." not in cell:
        cell = cell.replace(",", ".")
    value = float(cell)
    if not math.isfinite(value):
        raise ValueError(cell)
    return value


def _record(
    values: Mapping[str, str], where: Callable[[str], str]
) -> tuple[AssetRecord | None, list[tuple[str, str]]]:
    """Check one row's text values field by field: its record, or what is wrong with each.

    `where(field)` names a field in the errors (a CSV column, a GeoJSON property's path).
    """
    problems: list[tuple[str, str]] = []
    for f, what in (
        ("id", "an asset id"),
        ("class", "an asset class"),
        ("commune", "a commune id"),
    ):
        if not values.get(f):
            problems.append((where(f), f"expected {what}, the cell is empty"))
    place: list[float] = []
    for f, bound in (("lat", 90.0), ("lon", 180.0)):
        cell = values.get(f, "")
        what = "latitude" if f == "lat" else "longitude"
        try:
            value = _number(cell)
            if not -bound <= value <= bound:
                raise ValueError(cell)
            place.append(value)
        except ValueError:
            got = f"got {cell!r}" if cell else "the cell is empty"
            why = f"expected a {what} in decimal degrees (-{bound:g} to {bound:g}, WGS 84), {got}"
            problems.append((where(f), why))
    installed = None
    if values.get("installed"):
        try:
            installed = date.fromisoformat(values["installed"])
        except ValueError:
            why = f"expected an ISO date YYYY-MM-DD, got {values['installed']!r}"
            problems.append((where("installed"), why))
    if problems:
        return None, problems
    record = AssetRecord(
        values["id"],
        values["class"],
        values["commune"],
        place[0],
        place[1],
        values.get("name", ""),
        values.get("address", ""),
        values.get("model", ""),
        installed,
        {k: v for k, v in values.items() if k not in KNOWN and v},
    )
    return record, []


def write_csv(records: Iterable[AssetRecord], *, sep: str = ",") -> str:
    """Return records as CSV: known columns, then one per attribute; `;` gets a BOM too.

    Text cells that a spreadsheet would run as formulas get a leading `'` (core/csv_safe.py),
    which the reader takes off; lines end with CRLF, as every CSV Beffroi writes.
    """
    if sep not in SEPARATORS:
        raise ValueError(f"separator: expected one of {', '.join(map(repr, SEPARATORS))}")
    rows = list(records)
    extra = sorted({k for r in rows for k in r.attributes if _writable_attribute(k)})
    out = io.StringIO()
    if sep == ";":  # the French spreadsheet's CSV: it reads UTF-8 only after a BOM
        out.write(BOM)
    writer = csv.writer(out, delimiter=sep, lineterminator=CRLF)
    writer.writerow([*KNOWN, *extra])
    for r in rows:
        writer.writerow(
            [
                _cell(r.id),
                _cell(r.asset_class),
                _cell(r.commune),
                repr(float(r.lat)),  # the shortest text that reads back to the same float
                repr(float(r.lon)),
                _cell(r.name),
                _cell(r.address),
                _cell(r.model),
                r.installed.isoformat() if r.installed else "",
                *(_cell(r.attributes.get(k, "")) for k in extra),
            ]
        )
    return out.getvalue()


def _cell(text: str) -> str:
    """Return a text cell safe for spreadsheets, which `_unquote` reads back as it was."""
    if _marked(text):
        return "'" + text  # a text that itself starts with the marker keeps it
    return safe_text(text)


def _writable_attribute(key: str) -> bool:
    """Tell whether an attribute can have a column: named, and not a known column's name."""
    return bool(key.strip()) and key == key.strip() and _column(key) not in KNOWN


# -- GeoJSON ------------------------------------------------------------------------------------


def _parse_geojson(text: str, name: str) -> ParsedFile:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        why = f"not JSON: {exc.msg} (column {exc.colno})"
        return ParsedFile(errors=[RowError(name, exc.lineno, "", why)], whole=True)
    except RecursionError:
        return ParsedFile(errors=[RowError(name, 0, "", "JSON nested too deep")], whole=True)
    if not isinstance(doc, dict) or doc.get("type") != "FeatureCollection":
        got = doc.get("type") if isinstance(doc, dict) else type(doc).__name__
        why = f"expected a FeatureCollection, got {got!r}"
        return ParsedFile(errors=[RowError(name, 0, "type", why)], whole=True)
    crs = doc.get("crs")
    if crs is not None:
        crs_name = (
            str((crs.get("properties") or {}).get("name", "")) if isinstance(crs, dict) else ""
        )
        if crs_name not in WGS84_NAMES:
            why = (
                f"coordinates must be WGS 84 longitude, latitude (RFC 7946); this file says "
                f"{crs_name or crs!r}: export it in EPSG:4326"
            )
            return ParsedFile(errors=[RowError(name, 0, "crs", why)], whole=True)
    features = doc.get("features")
    if not isinstance(features, list):
        why = "expected a list of features"
        return ParsedFile(errors=[RowError(name, 0, "features", why)], whole=True)
    out = ParsedFile()
    for i, feature in enumerate(features):
        record, problems, asset_id = _feature(feature, i)
        out.add(name, i, record, problems, asset_id)
    return out


def _feature(feature: object, i: int) -> tuple[AssetRecord | None, list[tuple[str, str]], str]:
    """Check one feature: its record, or what is wrong with each field; and its id."""
    at = f"features[{i}]"
    if not isinstance(feature, dict) or feature.get("type") != "Feature":
        got = feature.get("type") if isinstance(feature, dict) else type(feature).__name__
        return None, [(f"{at}.type", f"expected a Feature, got {got!r}")], ""
    props = feature.get("properties")
    if props is None:
        props = {}
    if not isinstance(props, dict):
        return None, [(f"{at}.properties", "expected an object")], ""
    problems: list[tuple[str, str]] = []
    values: dict[str, str] = {}
    for key, value in props.items():
        try:
            text = _property_text(value)
        except ValueError as exc:
            problems.append((f"{at}.properties.{key}", str(exc)))
            continue
        if text:
            values[_column(key)] = text
    if not values.get("id") and isinstance(feature.get("id"), str | int):
        values["id"] = _property_text(feature["id"])  # RFC 7946's own identifier
    geometry = feature.get("geometry")
    no_place = False
    if geometry is not None or not ("lat" in values and "lon" in values):
        # The geometry is the place; lat and lon properties only stand in for a missing one.
        try:
            lon, lat = _centroid(geometry)
            values["lat"], values["lon"] = repr(lat), repr(lon)
        except ValueError as exc:
            problems.append((f"{at}.geometry", str(exc)))
            no_place = True

    def where(field: str) -> str:
        if field in ("lat", "lon") and geometry is not None:
            return f"{at}.geometry"
        return f"{at}.properties.{field}"

    record, more = _record(values, where)
    said = {where("lat"), where("lon")} if no_place else set()  # the geometry's error says it
    problems.extend(m for m in more if m[0] not in said)
    return (record if not problems else None), problems, values.get("id", "")


def _property_text(value: object) -> str:
    """Return a property's value as text: numbers and booleans as JSON writes them."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool | int | float):
        return json.dumps(value)
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    raise ValueError(f"expected text or a number, got {type(value).__name__}")


def _position(p: object) -> tuple[float, float]:
    if (
        isinstance(p, list | tuple)
        and len(p) >= 2
        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in p[:2])
        and all(math.isfinite(c) for c in p[:2])
    ):
        return float(p[0]), float(p[1])
    raise ValueError(f"expected a position [longitude, latitude], got {json.dumps(p)[:60]}")


def _positions(coords: object, depth: int) -> list[Any]:
    """Check nested lists of positions `depth` deep (1: a line, 2: a polygon's rings…)."""
    if not isinstance(coords, list):
        raise ValueError("expected a list of coordinates")
    if depth == 0:
        return list(_position(coords))
    return [_positions(c, depth - 1) for c in coords]


# (dimension: 0 points, 1 lines, 2 areas; weight: count, length or area; x, y)
_Part = tuple[int, float, float, float]


def _centroid(geometry: object) -> tuple[float, float]:
    """Return a geometry's place (lon, lat): a Point's, else the centroid of its highest
    dimension (areas over lines over points), weighted by area, length or count."""
    if geometry is None:
        raise ValueError("expected a geometry (a Point, or a shape whose centroid is taken)")
    parts = _parts(geometry)
    if not parts:
        raise ValueError("the geometry is empty")
    dim = max(p[0] for p in parts)
    top = [p for p in parts if p[0] == dim]
    total = sum(p[1] for p in top)
    if total <= 0:  # a degenerate shape (a ring of one point): its mean
        return (sum(p[2] for p in top) / len(top), sum(p[3] for p in top) / len(top))
    return (sum(p[1] * p[2] for p in top) / total, sum(p[1] * p[3] for p in top) / total)


def _parts(g: object) -> list[_Part]:
    if not isinstance(g, dict):
        raise ValueError(f"expected a geometry object, got {json.dumps(g)[:60]}")
    kind, coords = g.get("type"), g.get("coordinates")
    if kind == "GeometryCollection":
        members = g.get("geometries")
        if not isinstance(members, list):
            raise ValueError("GeometryCollection: expected a list of geometries")
        return [p for m in members for p in _parts(m)]
    depth = {"Point": 0, "MultiPoint": 1, "LineString": 1, "MultiLineString": 2, "Polygon": 2,
             "MultiPolygon": 3}.get(str(kind))  # fmt: skip
    if depth is None:
        raise ValueError(f"expected a GeoJSON geometry type, got {kind!r}")
    c = _positions(coords, depth)
    if kind == "Point":
        return [(0, 1.0, c[0], c[1])]
    if kind == "MultiPoint":
        return [(0, 1.0, x, y) for x, y in c]
    if kind == "LineString":
        return [_line(c)]
    if kind == "MultiLineString":
        return [_line(line) for line in c]
    polygons = [c] if kind == "Polygon" else c
    return [_polygon(rings) for rings in polygons]


def _line(points: Sequence[Sequence[float]]) -> _Part:
    if not points:
        raise ValueError("a line without positions")
    length = x = y = 0.0
    for (x0, y0), (x1, y1) in itertools.pairwise(points):
        d = math.hypot(x1 - x0, y1 - y0)
        length, x, y = length + d, x + d * (x0 + x1) / 2, y + d * (y0 + y1) / 2
    if length == 0:
        return (1, 0.0, points[0][0], points[0][1])
    return (1, length, x / length, y / length)


def _polygon(rings: Sequence[Sequence[Sequence[float]]]) -> _Part:
    """Return a polygon's area and centroid: its outer ring's less its holes'."""
    if not rings or not rings[0]:
        raise ValueError("a polygon without positions")
    ox, oy = rings[0][0]  # computed relative to a corner: degrees near 47, 5 lose digits
    area = cx = cy = 0.0
    for k, ring in enumerate(rings):
        a = sx = sy = 0.0
        for (x0, y0), (x1, y1) in zip(ring, [*ring[1:], ring[0]], strict=True):
            x0, y0, x1, y1 = x0 - ox, y0 - oy, x1 - ox, y1 - oy
            cross = x0 * y1 - x1 * y0
            a, sx, sy = a + cross, sx + (x0 + x1) * cross, sy + (y0 + y1) * cross
        sign = 1.0 if (k == 0) == (a >= 0) else -1.0  # holes subtract, whatever their winding
        area, cx, cy = area + sign * a / 2, cx + sign * sx / 6, cy + sign * sy / 6
    if area == 0:
        _, _, x, y = _line(rings[0])
        return (2, 0.0, x, y)
    return (2, abs(area), ox + cx / area, oy + cy / area)


def write_geojson(records: Iterable[AssetRecord]) -> str:
    """Return records as a GeoJSON FeatureCollection of Points, one feature per line."""
    return dump_geojson(
        {"type": "FeatureCollection", "features": [_as_feature(r) for r in records]}
    )


def dump_geojson(doc: Mapping[str, Any]) -> str:
    """Return a FeatureCollection as text, one feature per line (readable, diffable)."""
    features = doc.get("features") or []
    head = {k: v for k, v in doc.items() if k != "features"}
    shell = json.dumps({**head, "features": []}, ensure_ascii=False)  # ends with `[]}`
    if not features:
        return shell + "\n"
    body = ",\n".join(json.dumps(f, ensure_ascii=False) for f in features)
    return f"{shell[:-3]}[\n{body}\n]}}\n"


def _as_feature(r: AssetRecord) -> dict[str, Any]:
    props: dict[str, Any] = {
        "id": r.id,
        "class": r.asset_class,
        "commune": r.commune,
        "name": r.name,
        "address": r.address,
        "model": r.model,
        "installed": r.installed.isoformat() if r.installed else None,
    }
    props.update((k, v) for k, v in sorted(r.attributes.items()) if _writable_attribute(k))
    return {
        "type": "Feature",
        "id": r.id,
        "geometry": {"type": "Point", "coordinates": [float(r.lon), float(r.lat)]},
        "properties": props,
    }


def write_inventory(records: Iterable[AssetRecord], fmt: Format, *, sep: str = ",") -> str:
    """Return records as the text of an inventory file of a format."""
    return write_geojson(records) if fmt is Format.geojson else write_csv(records, sep=sep)
