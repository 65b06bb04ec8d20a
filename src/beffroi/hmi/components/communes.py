"""The communes in the pages: a map's background and labels, a map's centre, filter options."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import dash_leaflet as dl

from beffroi.core.model import Commune
from beffroi.hmi import basemap
from beffroi.hmi.context import get_context

LABEL_PANE = "beffroi-labels"
# Below Leaflet's overlay pane (400, the markers' SVG) and marker pane (600, the groups): a
# marker is always drawn over a label, and the label lets clicks through to the map. map.js
# also moves each label off the markers, or hides it when there is no free place nearby.
LABEL_Z = 380
LABEL_MARKER = {"variable": "dashExtensions.beffroiMap.communeLabel"}


def label_geojson(communes: Iterable[Commune]) -> dict[str, Any]:
    """Return one point per commune at its centre, ranked by population (placed first)."""
    ranked = sorted(communes, key=lambda c: (-c.population, c.name))
    return {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [c.lon, c.lat]},
                "properties": {"id": c.id, "name": c.name, "rank": i},
            }
            for i, c in enumerate(ranked)
        ],
    }


def commune_labels(communes: Iterable[Commune], layer_id: str) -> dl.Pane:
    """Return the communes' names on a pane below the markers, placed off them by map.js."""
    return dl.Pane(
        name=LABEL_PANE,
        style={"zIndex": LABEL_Z, "pointerEvents": "none"},
        children=dl.GeoJSON(
            id=layer_id,
            data=label_geojson(communes),
            pointToLayer=LABEL_MARKER,
            hideout={"pane": LABEL_PANE},
            interactive=False,
        ),
    )


def commune_layer(communes: Sequence[Commune], layer_id: str) -> dl.LayerGroup:
    """Return a map's background (tiles, schematic) and the communes' labels, not clickable."""
    cfg = get_context().cfg
    return dl.LayerGroup(
        [
            *basemap.base_layers(cfg, layer_id, communes),
            commune_labels(communes, f"{layer_id}-labels"),
        ],
        id=layer_id,
    )


def commune_options(
    communes: Iterable[Commune], visible: Callable[[str], bool]
) -> list[dict[str, str]]:
    """Return a dropdown's options: the communes the user sees, by name."""
    return [{"label": c.name, "value": c.id} for c in communes if visible(c.id)]


def centre_of(communes: Iterable[Commune]) -> list[float]:
    """Return the middle of the communes' extent, where a map opens."""
    return basemap.centre_of(communes)
