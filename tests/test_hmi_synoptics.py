"""Mimic diagrams show live values, and show plainly when they are stale or bad."""

from __future__ import annotations

from datetime import timedelta

from beffroi.core.model import Quality, Sample, utcnow
from beffroi.hmi.synoptics import BAD, INK, LIT, STALE, synoptic


def _asset(register, cls):
    return next(a for a in register.assets.values() if a.asset_class == cls)


def _texts(fig) -> dict[str, tuple[str, str]]:
    return {a.name: (a.text, a.font.color) for a in fig.layout.annotations if a.name}


def _snap(asset, values: dict, now, quality=Quality.GOOD, age_s: float = 1.0) -> dict:
    return {
        asset.tag(k): Sample(asset.tag(k), now - timedelta(seconds=age_s), v, quality)
        for k, v in values.items()
    }


def test_cabinet_shows_power_dimming_and_failed_lamps(small_register) -> None:
    """A lit cabinet at 50 %: power, dimming, lit lamps, and one red lamp per failure."""
    cab, now = _asset(small_register, "streetlight_cabinet"), utcnow()
    snap = _snap(
        cab,
        {
            "lit": True,
            "dimming_pct": 50.0,
            "power_kw": 3.2,
            "lamp_failures": 2.0,
            "fault": False,
            "energy_kwh": 10.0,
        },
        now,
    )
    fig = synoptic(cab, snap, now)
    texts = _texts(fig)
    assert texts["power"][0] == "3.2 kW" and texts["dimming"][0] == "dimming 50.0 %"
    lamps = [s for s in fig.layout.shapes if s.type == "circle"]
    assert len(lamps) == 18
    assert sum(1 for s in lamps if s.fillcolor == BAD) == 2
    assert sum(1 for s in lamps if s.fillcolor == LIT) == 16
    assert texts["state"][0] == "lit: on · lamp failures: 2"  # a count, without decimals


def test_values_not_good_are_greyed_and_labelled(small_register) -> None:
    """CommLoss or Uncertain values are grey and say why; an old unchanged value is current."""
    cab, now = _asset(small_register, "streetlight_cabinet"), utcnow()
    snap = _snap(cab, {"power_kw": 3.2}, now, age_s=86_400)  # unchanged for a day: still Good
    snap.update(_snap(cab, {"dimming_pct": 50.0}, now, quality=Quality.COMM_LOSS))
    snap.update(_snap(cab, {"lamp_failures": 1.0}, now, quality=Quality.UNCERTAIN))
    texts = _texts(synoptic(cab, snap, now))
    assert texts["power"][0] == "3.2 kW" and texts["power"][1] != STALE
    assert texts["dimming"] == ("dimming 50.0 % (CommLoss)", STALE)
    assert texts["state"][0].endswith("lamp failures: 1 (Uncertain)")
    nothing = _texts(synoptic(cab, {}, now))
    assert nothing["power"] == ("—", STALE)


def test_intersection_and_reservoir(small_register) -> None:
    """Plan 9 reads as flashing amber with the bus priority granted; the tank shows its level."""
    tc, now = _asset(small_register, "traffic_controller"), utcnow()
    values = {"plan": 9.0, "bus_priority_requests": 12.0, "bus_priority_granted": 9.0}
    fig = synoptic(tc, _snap(tc, {**values, "fault": False}, now), now)
    assert _texts(fig)["plan"][0] == "plan flashing amber"
    assert _texts(fig)["bus"] == ("bus priority: 12 requests, 9 granted (75 %)", INK)
    unknown = _texts(synoptic(tc, _snap(tc, {"plan": 1.0, "bus_priority_requests": 3.0}, now), now))
    assert unknown["bus"] == ("bus priority requests: 3 · granted: —", STALE)
    # A lost link: no number, no share, the quality said.
    lost = _snap(tc, {"bus_priority_requests": float("nan")}, now, quality=Quality.COMM_LOSS)
    lost.update(_snap(tc, {"plan": 1.0, "bus_priority_granted": 9.0}, now))
    texts = _texts(synoptic(tc, lost, now))
    assert texts["bus"] == ("bus priority requests: — (CommLoss) · granted: 9", STALE)
    rs = _asset(small_register, "reservoir")
    fig = synoptic(
        rs,
        _snap(rs, {"level_pct": 40.0, "pump_on": True, "flow_m3h": 55.0, "fault": False}, now),
        now,
    )
    water = fig.layout.shapes[1]
    assert abs((water.y1 - water.y0) - 4.3 * 0.40) < 1e-9
    assert _texts(fig)["pump"][0] == "pump on"


def test_other_classes_get_a_list_of_their_signals(small_register) -> None:
    """A class without a drawn mimic lists its signals."""
    cam, now = _asset(small_register, "camera"), utcnow()
    texts = _texts(synoptic(cam, _snap(cam, {"online": True}, now), now))
    assert texts["online"][0] == "online: on" and texts["fault"][0] == "fault: —"
