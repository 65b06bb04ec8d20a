"""Where a tag lives in InfluxDB, and samples as line protocol.

A tag of the register `commune/asset/signal` is stored in the measurement named after its asset
class, with InfluxDB tags `asset` and `commune`, in the field named after the signal, and its
quality in the integer field `<signal>.q`. Tags outside the register (`_system/...`, `_kpi/...`)
go to the measurement named after their first path part, InfluxDB tag `path` = the rest, fields
`value` (numbers), `text` (strings) and `q`. The quality field is written with every sample, so
it marks where samples are: its value is `2 * quality + 1` when the sample has no value (NaN or
None, which InfluxDB cannot store), else `2 * quality`. The worst quality of a bucket is thus
`max(q) // 2`, and rewriting a sample as valueless at the same time still reads back as NaN.

A sample's OPC UA status code, when not 0 (plain Good), goes in the integer field `<signal>.s`
(`s` outside the register); Good samples write nothing more. InfluxDB overwrites field by
field, so a sample rewritten at the same time without a status would keep the old one: a status
is read back only when its severity agrees with the sample's quality, which drops every such
leftover except one whose quality the rewrite left unchanged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from beffroi.core.model import Quality, Sample
from beffroi.core.register import Register

log = logging.getLogger(__name__)

QUALITY_SUFFIX = ".q"
STATUS_SUFFIX = ".s"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
US = timedelta(microseconds=1)
# InfluxDB's null (None in answers) as a 0-d object array: numpy compares cells with it one by
# one as with None, and its type stubs take an array where they refuse None.
NULL = np.array(None, dtype=object)


@dataclass(frozen=True, slots=True)
class Location:
    """The measurement, InfluxDB tags and fields holding one Beffroi tag."""

    tag: str
    measurement: str
    series: tuple[tuple[str, str], ...]  # InfluxDB tag keys and values, sorted, none empty
    number: str | None  # field holding numbers (None: a text signal)
    text: str | None  # field holding strings (None: a numeric signal)
    quality: str
    status: str

    @property
    def fields(self) -> tuple[str, ...]:
        """Return the value fields, then the quality field."""
        return tuple(dict.fromkeys(f for f in (self.number, self.text, self.quality) if f))

    def where(self) -> str:
        """Return the InfluxQL condition selecting this tag's series."""
        # Asset ids are unique, and answers are matched on the whole series anyway: the asset
        # alone halves the work of InfluxDB's index. A one-part tag has no `path` ('' matches).
        pairs = [(k, v) for k, v in self.series if k != "commune"] or [("path", "")]
        return "(" + " AND ".join(f"{ident(k)} = {literal(v)}" for k, v in pairs) + ")"


class Layout:
    """Map tags to InfluxDB measurements, tags and fields, and series back to tags."""

    def __init__(self, register: Register | Mapping[str, str] | None = None):
        # A Register knows each tag's class and kind; a mapping gives only tag -> asset class.
        self._register = register if isinstance(register, Register) else None
        self._classes = None if isinstance(register, Register) else dict(register or {})
        self._cache: dict[str, Location] = {}

    def locate(self, tag: str) -> Location:
        """Return where a tag is stored."""
        loc = self._cache.get(tag)
        if loc is None:
            loc = self._cache[tag] = self._locate(tag)
        return loc

    def _locate(self, tag: str) -> Location:
        cls = kind = None
        if self._register is not None:
            spec = self._register.tags.get(tag)
            if spec is not None:
                cls = self._register.assets[spec.asset].asset_class
                kind = spec.kind
        elif self._classes is not None:
            cls = self._classes.get(tag)
        parts = tag.split("/")
        if cls is not None and len(parts) == 3:
            commune, asset, signal = parts
            return Location(
                tag,
                cls,
                (("asset", asset), ("commune", commune)),
                None if kind == "str" else signal,
                signal if kind in ("str", None) else None,
                signal + QUALITY_SUFFIX,
                signal + STATUS_SUFFIX,
            )
        rest = "/".join(parts[1:])
        series = (("path", rest),) if rest else ()
        return Location(tag, parts[0], series, "value", "text", "q", "s")

    def tag_of(self, measurement: str, series: Mapping[str, str], field: str) -> str | None:
        """Return the tag stored in a series and value or quality field, or None."""
        base = field.removesuffix(QUALITY_SUFFIX)
        asset, commune = series.get("asset"), series.get("commune")
        if asset and commune:
            return f"{commune}/{asset}/{base}"
        if field in ("value", "text", "q"):
            path = series.get("path", "")
            return f"{measurement}/{path}" if path else measurement
        return None


def read_status(column: np.ndarray | None, sel: np.ndarray, quality: np.ndarray) -> np.ndarray:
    """Return the status codes of selected rows: 0 where absent or left by an overwrite."""
    if column is None:
        return np.zeros(len(quality), np.int64)
    cells = column[sel]
    status = np.where(np.not_equal(cells, NULL), cells, 0).astype(np.int64)
    # Severity (top two bits) 0 Good, 1 Uncertain, 2 and 3 Bad; CommLoss is a Bad status.
    expected = np.minimum(quality, int(Quality.BAD))
    agrees = np.minimum(status >> 30, int(Quality.BAD)) == expected
    return np.where(agrees, status, 0)


def series_key(measurement: str, series: Mapping[str, str] | Iterable[tuple[str, str]]) -> tuple:
    """Return a hashable key of a series: measurement and its non-empty InfluxDB tags."""
    items = series.items() if isinstance(series, Mapping) else series
    return (measurement, tuple(sorted((k, v) for k, v in items if v)))


def to_us(ts: datetime) -> int:
    """Return microseconds since the Unix epoch, exactly (naive means UTC)."""
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=UTC)
    return (ts - EPOCH) // US


def ident(name: str) -> str:
    """Quote an InfluxQL identifier."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def literal(value: str) -> str:
    """Quote an InfluxQL string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


_MEASUREMENT = str.maketrans({",": "\\,", " ": "\\ ", "\n": "\\n"})
_KEY = str.maketrans({",": "\\,", "=": "\\=", " ": "\\ ", "\n": "\\n"})
_STRING = str.maketrans({'"': '\\"', "\\": "\\\\"})


class LineEncoder:
    """Turn samples into InfluxDB line protocol with microsecond timestamps."""

    def __init__(self, layout: Layout):
        self.layout = layout
        self._prefix: dict[str, tuple[str, str | None, str | None, str, str]] = {}
        self._warned: set[str] = set()

    def _parts(self, tag: str) -> tuple[str, str | None, str | None, str, str]:
        parts = self._prefix.get(tag)
        if parts is None:
            loc = self.layout.locate(tag)
            head = loc.measurement.translate(_MEASUREMENT) + "".join(
                f",{k.translate(_KEY)}={v.translate(_KEY)}" for k, v in loc.series
            )
            parts = self._prefix[tag] = (
                head + " ",
                loc.number.translate(_KEY) if loc.number else None,
                loc.text.translate(_KEY) if loc.text else None,
                loc.quality.translate(_KEY),
                loc.status.translate(_KEY),
            )
        return parts

    def lines(self, batch: Sequence[Sample]) -> list[str]:
        """Return one line per sample: its value field (if any), quality and status fields."""
        out = []
        for s in batch:
            head, number, text, quality, status = self._parts(s.tag)
            field = self._field(s, number, text)
            code = 2 * int(s.quality) + (field is None)
            fields = f"{field},{quality}={code}i" if field else f"{quality}={code}i"
            if s.status:
                fields += f",{status}={int(s.status)}i"
            out.append(f"{head}{fields} {to_us(s.ts)}")
        return out

    def _field(self, s: Sample, number: str | None, text: str | None) -> str | None:
        """Return `field=value` for a sample, or None when it has no storable value."""
        v = s.value
        if isinstance(v, str):
            if text:
                return f'{text}="{v.translate(_STRING)}"'
            try:
                v = float(v)
            except ValueError:
                self._warn(s.tag, f"text {v!r} for a numeric signal is stored without value")
                return None
        if v is None:
            return None
        f = float(v)
        if not math.isfinite(f):
            return None
        if number:
            return f"{number}={f!r}"
        return f'{text}="{v}"'

    def _warn(self, tag: str, message: str) -> None:
        # Once per tag: a misconfigured device would otherwise flood the log every second.
        if tag not in self._warned:
            self._warned.add(tag)
            log.warning("%s: %s", tag, message)
