"""The Inventory page's rows, filters and summary, built by pure functions from the register."""

from __future__ import annotations

import unicodedata
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from beffroi.core.model import Asset, AssetState, Commune
from beffroi.hmi.components.asset_panel import SOURCE_LABELS
from beffroi.i18n import N_, _, fmt_number, ngettext

# The inventory states, as the page names them (the map's display states use the same words);
# translated where shown.
STATE_LABELS: dict[AssetState, str] = {
    "active": N_("In service"),
    "to_place": N_("To be placed"),
    "removed": N_("Removed at source"),
    "retired": N_("Retired"),
}
SEARCH_MAX = 200  # what the search box may hold; longer text is cut, not refused


def fold(text: str) -> str:
    """Return text without case and accents, for searches ("marche" finds "Marché")."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


@dataclass(frozen=True, slots=True)
class Filters:
    """What the user asked to see: text in id/name/address, classes, communes, states."""

    text: str = ""
    classes: frozenset[str] = frozenset()
    communes: frozenset[str] = frozenset()
    states: frozenset[str] = frozenset()

    @classmethod
    def of(cls, text: object, classes: object, communes: object, states: object) -> Filters:
        """Read the filter controls' values, keeping only what has their shape."""
        return cls(
            fold(text[:SEARCH_MAX].strip()) if isinstance(text, str) else "",
            frozenset(strings(classes)),
            frozenset(strings(communes)),
            frozenset(strings(states)),
        )

    def keeps(self, asset: Asset) -> bool:
        """Tell whether an asset passes every filter (an empty filter passes everything)."""
        if self.classes and asset.asset_class not in self.classes:
            return False
        if self.communes and asset.commune not in self.communes:
            return False
        if self.states and asset.state not in self.states:
            return False
        if self.text:
            return any(self.text in fold(v) for v in (asset.id, asset.name, asset.address))
        return True


def strings(value: object) -> list[str]:
    """Return the texts of a multi-choice control's value (anything else counts as none)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def attributes_text(attributes: Mapping[str, str]) -> str:
    """Return free attributes as one sortable, searchable cell: `key=value; key=value`."""
    return "; ".join(f"{k}={v}" for k, v in sorted(attributes.items()))


def asset_row(
    asset: Asset, communes: Mapping[str, Commune], classes: Mapping[str, str]
) -> dict[str, Any]:
    """Return one grid row: the asset's record, names instead of ids for class and commune."""
    commune = communes.get(asset.commune)
    return {
        "id": asset.id,
        "name": asset.name,
        "address": asset.address,
        "class": classes.get(asset.asset_class, asset.asset_class),
        "commune": commune.name if commune else asset.commune,
        "state": _(STATE_LABELS.get(asset.state, asset.state)),
        "model": asset.model,
        "installed": asset.installed.isoformat() if asset.installed else "",
        "source": _(SOURCE_LABELS.get(asset.source, asset.source)),
        "origin": asset.origin,
        "attributes": attributes_text(asset.attributes),
        "lat": round(asset.lat, 6),
        "lon": round(asset.lon, 6),
    }


def to_place_row(
    asset: Asset, communes: Mapping[str, Commune], classes: Mapping[str, str]
) -> dict[str, Any]:
    """Return one row of the "to be placed" list: what discovery found, and where."""
    commune = communes.get(asset.commune)
    return {
        "id": asset.id,
        "class": classes.get(asset.asset_class, asset.asset_class),
        "commune": commune.name if commune else asset.commune,
        "origin": asset.origin,
        "signals": len(asset.tags),
    }


def summary(assets: Iterable[Asset], shown: int) -> str:
    """Say how many assets are shown, and how many of the user's are in each state."""
    counts = Counter(a.state for a in assets)

    def said(singular: str, plural: str, n: int) -> str:
        return ngettext(singular, plural, n) % {"n": fmt_number(n)}

    return " · ".join(
        [
            said("%(n)s shown", "%(n)s shown", shown),
            said("%(n)s in service", "%(n)s in service", counts.get("active", 0)),
            said("%(n)s to be placed", "%(n)s to be placed", counts.get("to_place", 0)),
            said("%(n)s removed at source", "%(n)s removed at source", counts.get("removed", 0)),
            said("%(n)s retired", "%(n)s retired", counts.get("retired", 0)),
        ]
    )


def coordinate(value: object, low: float, high: float) -> float | None:
    """Return a latitude or longitude from a form: a finite number within bounds, else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    f = float(value)
    return f if low <= f <= high else None  # NaN and infinities fail both comparisons


def click_place(click: object) -> tuple[float, float] | None:
    """Return the (lat, lon) of a dash-leaflet map click, or None when it has no such shape."""
    if not isinstance(click, dict):
        return None
    latlng = click.get("latlng")
    if isinstance(latlng, dict):
        pair: Sequence[object] = (latlng.get("lat"), latlng.get("lng"))
    elif isinstance(latlng, list) and len(latlng) >= 2:
        pair = latlng[:2]
    else:
        return None
    lat, lon = coordinate(pair[0], -90, 90), coordinate(pair[1], -180, 180)
    if lat is None or lon is None:
        return None
    return round(lat, 6), round(lon, 6)
