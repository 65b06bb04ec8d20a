"""Display state of each asset (normal, fault, commloss, stale, removed, to be placed…) and the map
payloads built on it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Literal, NamedTuple, TypedDict

import pandas as pd

from beffroi.core.model import Asset, Quality, Sample, utcnow
from beffroi.core.privacy import PositionPolicy
from beffroi.core.register import Register
from beffroi.core.seams import Historian
from beffroi.hmi.config import HmiSite
from beffroi.hmi.trend_data import prior_samples
from beffroi.i18n import N_, _

State = Literal[
    "fault", "p1", "p2", "p3", "p4", "commloss", "removed", "toplace", "stale", "oos", "normal"
]
# Most urgent first: a cluster of markers takes the colour of its most urgent member.
STATES: tuple[State, ...] = (
    "fault", "p1", "p2", "p3", "p4", "commloss", "removed", "toplace", "stale", "oos", "normal"
)  # fmt: skip
STATE_COLOURS: dict[str, str] = {
    "fault": "#d7263d",
    "p1": "#9e0031",
    "p2": "#f46d25",
    "p3": "#e9b10a",
    "p4": "#2f7fd8",
    "commloss": "#6b7280",
    "removed": "#7a4a21",
    "toplace": "#0fa3b1",
    "stale": "#a8b0ba",
    "oos": "#7c4dab",
    "normal": "#2e9d48",
}
# Message ids: translate with _() where shown (state_label).
STATE_LABELS: dict[str, str] = {
    "fault": N_("Fault"),
    "p1": N_("P1 alarm"),
    "p2": N_("P2 alarm"),
    "p3": N_("P3 alarm"),
    "p4": N_("P4 alarm"),
    "commloss": N_("Comm. loss"),
    "removed": N_("Removed at source"),
    "toplace": N_("To be placed"),
    "stale": N_("Stale"),
    "oos": N_("Out of service"),
    "normal": N_("Normal"),
}
# One character per state, so the map can ship every asset's state as one short string.
STATE_CODES: dict[str, str] = {
    "fault": "f",
    "p1": "1",
    "p2": "2",
    "p3": "3",
    "p4": "4",
    "commloss": "c",
    "removed": "r",
    "toplace": "t",
    "stale": "s",
    "oos": "o",
    "normal": "n",
}
_PALETTE = {
    "colours": {STATE_CODES[s]: STATE_COLOURS[s] for s in STATES},
    "names": {STATE_CODES[s]: s for s in STATES},
    "rank": "".join(STATE_CODES[s] for s in STATES),
}


def state_label(state: str) -> str:
    """Return a display state's name in the user's language."""
    return _(STATE_LABELS[state])


def _palette() -> dict[str, Any]:
    """Return what the browser colours and names states with, names in the user's language."""
    return {**_PALETTE, "labels": {STATE_CODES[s]: state_label(s) for s in STATES}}


# Alarm states whose condition is on and not masked: they colour the asset.
_SOUNDING = frozenset({"unack_active", "ack_active"})


class AlarmMark(NamedTuple):
    """What an asset's alarms add to its display state."""

    severity: int | None  # most urgent active, unmasked alarm (1 = most urgent)
    out_of_service: bool  # an alarm of the asset is taken out of service


def alarm_marks(alarms: Iterable[Mapping[str, Any]]) -> dict[str, AlarmMark]:
    """Summarise alarm rows (AlarmService.alarms) per asset."""
    marks: dict[str, AlarmMark] = {}
    for a in alarms:
        old = marks.get(a["asset"], AlarmMark(None, False))
        sev = old.severity
        if a["state"] in _SOUNDING:
            sev = a["severity"] if sev is None else min(sev, a["severity"])
        marks[a["asset"]] = AlarmMark(sev, old.out_of_service or a["state"] == "out_of_service")
    return marks


AssetRow = TypedDict(
    "AssetRow",
    {
        "id": str,
        "class": str,
        "commune": str,
        "domain": str,
        "lat": float,
        "lon": float,
        "state": str,
        "colour": str,
        "to_place": bool,  # waiting at its commune's centre for an operator to place it
    },
)


def _truthy(value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float):
        # NaN is "no value" (a CommLoss sample carries it), not a fault: NaN != 0 is true.
        return value != 0 and value == value
    if isinstance(value, str):
        return value.strip().lower() in ("true", "1", "on", "yes")
    return False


def is_mobile(asset: Asset) -> bool:
    """Tell whether an asset reports its own position (has `lat` and `lon` signals)."""
    signals = {t.signal for t in asset.tags}
    return "lat" in signals and "lon" in signals


def asset_position(asset: Asset, snapshot: Mapping[str, Sample]) -> tuple[float, float]:
    """Return the asset's live position when it reports one, else its registered place."""
    if is_mobile(asset):
        lat = snapshot.get(asset.tag("lat"))
        lon = snapshot.get(asset.tag("lon"))
        if lat is not None and lon is not None:
            try:
                return float(lat.value), float(lon.value)
            except (TypeError, ValueError):
                pass
    return asset.lat, asset.lon


def asset_state(
    asset: Asset,
    snapshot: Mapping[str, Sample],
    now: datetime,
    stale_factor: float | None = None,
    mark: AlarmMark | None = None,
) -> State:
    """Return the display state of one asset from its inventory state, live values and alarms.

    An asset removed at source shows so whatever its values say: its server no longer offers
    it, so they are leftovers. One to be placed shows so unless something more urgent is known
    of it (a fault, an alarm, a lost link): it stands at its commune's centre meanwhile.
    """
    if asset.state == "removed":
        return "removed"
    live = live_state(asset, snapshot, now, stale_factor, mark)
    if asset.state == "to_place" and _RANK[live] > _RANK["toplace"]:
        return "toplace"
    return live


def live_state(
    asset: Asset,
    snapshot: Mapping[str, Sample],
    now: datetime,
    stale_factor: float | None = None,
    mark: AlarmMark | None = None,
) -> State:
    """Return the state that an asset's tags' current samples and its alarms give.

    Collectors report by exception: a value that does not change is not sent again, and stays
    current while its collector is connected; a lost link turns it CommLoss. So by default an
    asset is stale only when nothing was ever received from it. With `stale_factor`, it is also
    stale when its newest value is older than that many times its longest interval (for
    sources that must report periodically). A fault the equipment reports comes before
    anything else (it is the most urgent thing known of it); a CommLoss sample carries no value
    (NaN), so a lost link is no fault. Alarms show once the link is up.
    """
    fault = snapshot.get(asset.tag("fault"))
    if fault is not None and _truthy(fault.value):
        return "fault"
    newest: datetime | None = None
    longest = 0.0
    for spec in asset.tags:
        longest = max(longest, spec.interval_s)
        s = snapshot.get(spec.name)
        if s is None:
            continue
        if s.quality == Quality.COMM_LOSS:
            return "commloss"
        if newest is None or s.ts > newest:
            newest = s.ts
    if mark is not None and mark.severity is not None:
        return _ALARM_STATES[min(max(mark.severity, 1), 4)]
    if newest is None:
        return "stale"
    if stale_factor is not None and (now - newest).total_seconds() > stale_factor * longest:
        return "stale"
    if mark is not None and mark.out_of_service:
        return "oos"
    return "normal"


_RANK: dict[State, int] = {s: i for i, s in enumerate(STATES)}
_ALARM_STATES: dict[int, State] = {1: "p1", 2: "p2", 3: "p3", 4: "p4"}


def asset_rows(
    assets: Iterable[Asset],
    snapshot: Mapping[str, Sample],
    now: datetime | None = None,
    marks: Mapping[str, AlarmMark] | None = None,
) -> list[AssetRow]:
    """Return one display row per asset: identity, position, state and colour."""
    now = now or utcnow()
    marks = marks or {}
    rows: list[AssetRow] = []
    for a in assets:
        state = asset_state(a, snapshot, now, mark=marks.get(a.id))
        lat, lon = asset_position(a, snapshot)
        rows.append(
            {
                "id": a.id,
                "class": a.asset_class,
                "commune": a.commune,
                "domain": a.domain,
                "lat": lat,
                "lon": lon,
                "state": state,
                "colour": STATE_COLOURS[state],
                "to_place": a.state == "to_place",
            }
        )
    return rows


def count_states(rows: Iterable[AssetRow]) -> dict[str, int]:
    """Count rows per state, every state present (zero when none)."""
    counts = Counter(r["state"] for r in rows)
    return {s: counts.get(s, 0) for s in STATES}


# --- map payloads: a layer is drawn once per filter; a small frame updates it in place ---


def mobile_classes(cfg: HmiSite) -> set[str]:
    """Return the asset classes that report their own position (lat and lon signals)."""
    return {
        k for k, c in cfg.asset_classes.items() if {"lat", "lon"} <= {s.name for s in c.signals}
    }


def filter_assets(
    register: Register, communes: Sequence[str] | None, domains: Sequence[str] | None
) -> list[Asset]:
    """Return the assets of the chosen communes and domains (all when none chosen), by id."""
    wanted_c = set(communes or ())
    wanted_d = set(domains or ())
    return sorted(
        (
            a
            for a in register.assets.values()
            if (not wanted_c or a.commune in wanted_c) and (not wanted_d or a.domain in wanted_d)
        ),
        key=lambda a: a.id,
    )


def layer_geojson(
    rows: Iterable[AssetRow], vehicles: Mapping[str, tuple[str, bool]] | None = None
) -> dict[str, Any]:
    """Return assets as GeoJSON points numbered in order (feature i ↔ character i of a code).

    The layer is drawn again whenever the register changes, so what is fixed between changes
    (place, id, whether it waits to be placed) travels here, and states in the frames.
    `vehicles` maps a moving class to its label and whether it is of the municipal fleet.
    """
    vehicles = vehicles or {}
    features = []
    for i, r in enumerate(rows):
        # `p`: drawn as an asset to be placed (a dashed ring) whatever its state's colour.
        props: dict[str, Any] = {"i": i, "id": r["id"], **({"p": 1} if r["to_place"] else {})}
        kind = vehicles.get(r["class"])
        if kind is not None:
            props["label"] = kind[0]
            if kind[1]:
                props["f"] = 1
        features.append(
            {
                "type": "Feature",
                "geometry": {
                    "type": "Point",
                    "coordinates": [round(r["lon"], 6), round(r["lat"], 6)],
                },
                "properties": props,
            }
        )
    return {"type": "FeatureCollection", "features": features}


def states_code(rows: Iterable[AssetRow]) -> str:
    """Encode the rows' states as one character each (see STATE_CODES)."""
    return "".join(STATE_CODES[r["state"]] for r in rows)


def layer_hideout(layer: str, rows: Iterable[AssetRow], key: str = "") -> dict[str, Any]:
    """Return what assetMarker (hmi/assets/beffroi.js) reads when it draws a layer.

    `key` names the set of assets drawn (the filters); frames with the same key index the
    same features, so a layer redrawn later can take its states from the newest frame.
    """
    return {"layer": layer, "key": key, "states": states_code(rows), **_palette()}


def map_frame(
    fixed_rows: Sequence[AssetRow], moving_rows: Sequence[AssetRow], key: str = ""
) -> dict[str, Any]:
    """Return the live part of the map: state codes of both layers, moving assets' positions."""
    return {
        "key": key,
        "fixed": states_code(fixed_rows),
        "moving": states_code(moving_rows),
        "pos": [[round(r["lat"], 6), round(r["lon"], 6)] for r in moving_rows],
        **_palette(),
    }


# --- vehicles: positions each role may see, and their recent trail --------------------------

TRAIL_WINDOW = timedelta(minutes=15)
TRAIL_MAX_POINTS = 150  # per vehicle: a line, not a replay


def shown_positions(rows: list[AssetRow], policy: PositionPolicy, role: str | None) -> None:
    """Replace each row's position by the one the role may see (coarse for staff vehicles)."""
    for r in rows:
        if policy.personal(r["class"]):
            r["lat"], r["lon"] = policy.show(role, r["class"], r["lat"], r["lon"])


def trail_allowed(policy: PositionPolicy, role: str | None, asset_class: str) -> bool:
    """Tell whether a role may see a class's trail: a coarse trail still follows a person."""
    return policy.exact_for(role, asset_class)


def vehicle_trails(
    historian: Historian,
    assets: Sequence[Asset],
    end: datetime,
    window: timedelta = TRAIL_WINDOW,
    max_points: int = TRAIL_MAX_POINTS,
) -> dict[str, list[list[float]]]:
    """Return each vehicle's positions over the window, oldest first, as [lat, lon] pairs.

    Latitude and longitude are stored apart (each with its own deadband), so a position is
    taken at every stored sample of either, with the other's latest value; the window starts
    from the values held at its start. CommLoss samples carry no position and are skipped.
    """
    tags = [t for a in assets for t in (a.tag("lat"), a.tag("lon"))]
    if not tags:
        return {}
    start = end - window
    frames = [prior_samples(historian, tags, start), historian.query(tags, start, end)]
    frames = [f[["ts", "tag", "value", "quality"]] for f in frames if not f.empty]
    out: dict[str, list[list[float]]] = {}
    if not frames:
        return out
    df = pd.concat(frames, ignore_index=True)
    df = df[df["quality"] != Quality.COMM_LOSS.value]
    by_tag = {tag: part for tag, part in df.groupby("tag", sort=False)}
    for a in assets:
        lat_df, lon_df = by_tag.get(a.tag("lat")), by_tag.get(a.tag("lon"))
        if lat_df is None or lon_df is None:
            continue
        both = pd.concat(
            [lat_df.assign(axis="lat"), lon_df.assign(axis="lon")], ignore_index=True
        ).sort_values("ts", kind="stable")
        lat = lon = None
        points: list[list[float]] = []
        for axis, value in zip(both["axis"], both["value"], strict=True):
            try:
                v = float(value)
            except (TypeError, ValueError):
                continue
            if v != v:  # NaN: no position
                continue
            if axis == "lat":
                lat = v
            else:
                lon = v
            if lat is not None and lon is not None:
                point = [round(lat, 6), round(lon, 6)]
                if not points or points[-1] != point:
                    points.append(point)
        if len(points) > max_points:
            step = len(points) / max_points
            points = [points[int(k * step)] for k in range(max_points - 1)] + [points[-1]]
        if len(points) >= 2:
            out[a.id] = points
    return out
