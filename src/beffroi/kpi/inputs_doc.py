"""What each KPI family is computed from, as an auditor reads it in an export's manifest."""

from __future__ import annotations

import hashlib
from typing import Any

from beffroi.kpi.cells import hold_after_s
from beffroi.kpi.config import KpiSite, availability_classes, down_signals


def _compression(cfg: KpiSite, cls_id: str, signal: str) -> dict[str, Any] | str:
    """Return the compression settings a signal is stored with (as configured)."""
    rule = cfg.compression.classes.get(cls_id, {}).get(signal)
    if not cfg.compression.enabled or rule is None or rule.method == "off":
        return "none: stored as received"
    return rule.model_dump(exclude_none=True)


def signal_input(cfg: KpiSite, cls_id: str, signal: str, role: str, **extra: Any) -> dict:
    """Describe one input signal: class, unit, role, interpolation and compression."""
    spec = next(s for s in cfg.asset_classes[cls_id].signals if s.name == signal)
    return {
        "class": cls_id,
        "signal": signal,
        "unit": spec.unit,
        "role": role,
        "reported_every_s": spec.interval_s,
        "held_after_silence_s": hold_after_s(cfg, cls_id, signal, extra.pop("hold", None)),
        "compression": _compression(cfg, cls_id, signal),
        **extra,
    }


def _energy(cfg: KpiSite) -> list[dict[str, Any]]:
    out = []
    for cls_id, src in cfg.kpi.energy.items():
        out.append(
            signal_input(
                cfg,
                cls_id,
                src.signal,
                "kWh counter: increases, rollovers and resets unwrapped"
                if src.method == "counter"
                else "kW power: time integral",
                hold=src.hold_after_s,
                interpolation=src.interpolation,
                holes="spread between the readings around them"
                if src.method == "counter"
                else (
                    "linear between the Good values around them"
                    if src.fill == "linear"
                    else "left out"
                ),
                rollover=src.rollover,
                fill_max_h=cfg.kpi.fill_max_h,
            )
        )
    return out


def _baseline(cfg: KpiSite) -> dict[str, Any]:
    lc = cfg.kpi.lighting
    assert lc is not None
    out: dict[str, Any] = {
        "definition": "pre-renovation installed kW × time between dusk and dawn (astral)",
        "sun_depression_deg": lc.depression_deg,
        "target_pct": lc.target_pct,
        "default_kw": lc.default_kw,
        "commune_kw": dict(lc.commune_kw),
        "cabinet_kw": dict(lc.baseline_kw),
    }
    if lc.baseline_file:
        path = cfg.resolve(lc.baseline_file)
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            digest = "unreadable"
        out["baseline_file"] = {"path": lc.baseline_file, "sha256": digest}
    return out


def inputs_of(cfg: KpiSite, family: str) -> dict[str, Any]:
    """Return the inputs and parameters of a KPI family."""
    kc = cfg.kpi
    if family == "energy":
        return {"inputs": _energy(cfg)}
    if family == "lighting" and kc.lighting is not None:
        lc = kc.lighting
        src = [i for i in _energy(cfg) if i["class"] == lc.asset_class]
        return {"inputs": src, "baseline": _baseline(cfg)}
    if family == "availability" and kc.availability is not None:
        return {
            "inputs": [
                signal_input(
                    cfg,
                    c,
                    cond.lstrip("!"),
                    "down when " + ("false" if cond.startswith("!") else "true"),
                )
                for c in availability_classes(cfg)
                for cond in down_signals(cfg, c)
            ],
            "commloss": kc.availability.commloss,
            "alarm_journal": "activations and clears of alarms on the down conditions' tags",
        }
    if family == "mobility" and kc.mobility is not None:
        m = kc.mobility
        ins = [
            signal_input(cfg, m.traffic_class, m.requests, "priority request counter"),
            signal_input(cfg, m.bus_class, m.delay, "delay (time-weighted mean)"),
            signal_input(cfg, m.car_park_class, m.occupancy, "occupancy (time-weighted mean)"),
        ]
        if m.granted:
            ins.append(signal_input(cfg, m.traffic_class, m.granted, "granted request counter"))
        return {"inputs": ins, "full_pct": m.full_pct}
    if family == "water" and kc.water is not None:
        water = kc.water
        return {
            "inputs": [signal_input(cfg, water.asset_class, water.signal, "level")],
            "band": [water.low, water.high],
        }
    if family == "waste" and kc.waste is not None:
        waste = kc.waste
        return {
            "inputs": [signal_input(cfg, waste.asset_class, waste.signal, "fill level")],
            "full_pct": waste.full_pct,
            "collection_drop_pct": waste.drop_pct,
        }
    return {"inputs": []}
