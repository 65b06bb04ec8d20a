"""The car parks as Smart Data Models `OffStreetParking` entities (NGSI-LD, keyValues form).

Schema: https://smart-data-models.github.io/dataModel.Parking/OffStreetParking/schema.json
(required: id, type, location). An unknown count is left out rather than sent as zero, and so
is the status it would decide; `status` uses the schema's DATEX II values.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from beffroi.hmi.public import Park

CONTEXT = [
    "https://raw.githubusercontent.com/smart-data-models/dataModel.Parking/master/context.jsonld",
    "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context.jsonld",
]
ENTITY_PREFIX = "urn:ngsi-ld:OffStreetParking:"
# Our states in the schema's status enumeration (from DATEX II 2.3); "unavailable" has none.
STATUS = {
    "available": "spacesAvailable",
    "almost_full": "almostFull",
    "full": "full",
    "closed": "closed",
}


def entity(park: Park) -> dict[str, Any]:
    """Return one car park as an OffStreetParking entity in keyValues form."""
    doc: dict[str, Any] = {
        "id": ENTITY_PREFIX + park.id,
        "type": "OffStreetParking",
        "name": park.name,
        "location": {"type": "Point", "coordinates": [park.lon, park.lat]},
        "address": {"addressLocality": park.commune},
        "category": ["public"],
        "allowedVehicleType": ["car"],
    }
    if park.capacity is not None:
        doc["totalSpotNumber"] = park.capacity
    if park.status != "unavailable":
        if park.free is not None:
            doc["availableSpotNumber"] = park.free
            if park.capacity:
                doc["occupiedSpotNumber"] = max(park.capacity - park.free, 0)
        if park.occupancy is not None:
            doc["occupancy"] = round(park.occupancy, 4)
        doc["status"] = [STATUS[park.status]]
    if park.updated is not None:
        stamp = park.updated.isoformat(timespec="seconds").replace("+00:00", "Z")
        doc["dateModified"] = doc["occupancyModified"] = stamp
    doc["@context"] = CONTEXT
    return doc


def entities(parks: list[Park]) -> list[dict[str, Any]]:
    """Return every car park as an entity, the payload of an NGSI-LD query answer."""
    return [entity(p) for p in parks]
