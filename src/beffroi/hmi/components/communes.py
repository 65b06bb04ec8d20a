"""The communes in the pages: discs under a map's markers, a map's centre, filter options."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import dash_leaflet as dl

from beffroi.core.model import Commune

DEFAULT_CENTRE = (47.32, 5.04)


def commune_layer(communes: Iterable[Commune], layer_id: str) -> dl.LayerGroup:
    """Return one labelled disc per commune, not clickable (clicks go to the map below)."""
    shapes = []
    for c in communes:
        radius = 300 + 4 * math.sqrt(max(c.population, 0))
        shapes.append(
            dl.Circle(
                center=[c.lat, c.lon],
                radius=radius,
                color="#9aa5b1",
                weight=1,
                fillColor="#ffffff",
                fillOpacity=0.55,
                interactive=False,
                children=dl.Tooltip(
                    c.name, permanent=True, direction="center", className="map-commune-label"
                ),
            )
        )
    return dl.LayerGroup(shapes, id=layer_id)


def commune_options(
    communes: Iterable[Commune], visible: Callable[[str], bool]
) -> list[dict[str, str]]:
    """Return a dropdown's options: the communes the user sees, by name."""
    return [{"label": c.name, "value": c.id} for c in communes if visible(c.id)]


def centre_of(communes: Iterable[Commune]) -> list[float]:
    """Return the middle of the communes' extent, where a map opens."""
    places = [(c.lat, c.lon) for c in communes] or [DEFAULT_CENTRE]
    lats, lons = zip(*places, strict=True)
    return [(min(lats) + max(lats)) / 2, (min(lons) + max(lons)) / 2]
