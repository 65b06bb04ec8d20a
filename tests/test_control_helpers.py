"""A small simulated scene for the control tests (real simulator, OPC UA collector, control
service), and the pure helpers of control: distances, maintenance windows, value checks."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from beffroi.app.config import Config, demo_config
from beffroi.collectors.opcua.collector import OpcUaCollector
from beffroi.control.config import MaintenanceWindow
from beffroi.control.geo import GridIndex, distance_m, near
from beffroi.control.limits import MaintenanceCalendar, check_range, coerce
from beffroi.control.model import ControlError
from beffroi.control.service import ControlService
from beffroi.core.live import LiveValues
from beffroi.core.model import TagSpec
from beffroi.core.register import Register, build_register
from beffroi.core.scheduler import Scheduler
from beffroi.core.site import FixedAssetConfig
from beffroi.i18n import in_locale
from beffroi.simulator.server import MetropolisSimulator
from tests.conftest import eventually, free_port

# The scene: an accident at P, in the centre of Dijon.
P = (47.3220, 5.0415)
# id, class, commune, km north of P, km east of P
SCENE = [
    ("IP-T1", "info_panel", "dijon", 0.2, 0.0),
    ("IP-T2", "info_panel", "dijon", 0.0, -0.6),
    ("IP-T3", "info_panel", "dijon", 2.5, 0.0),  # too far for the accident playbook
    ("TC-T1", "traffic_controller", "dijon", 0.15, 0.0),
    ("TC-T2", "traffic_controller", "dijon", 0.0, 0.4),
    ("TC-T3", "traffic_controller", "dijon", -0.7, 0.0),
    ("TC-T4", "traffic_controller", "dijon", 0.0, -0.9),  # fourth nearest: not diverted
    ("LC-T1", "streetlight_cabinet", "dijon", 0.1, 0.0),
    ("LC-T2", "streetlight_cabinet", "dijon", 0.0, 0.25),
    ("LC-T3", "streetlight_cabinet", "dijon", 0.8, 0.0),  # beyond the lighting step's 300 m
    ("BO-T1", "bollard", "dijon", 0.05, 0.05),
    ("BT-T1", "building", "dijon", 0.3, 0.3),
    ("CP-T1", "car_park", "dijon", 0.4, 0.0),
    ("CP-T2", "car_park", "talant", 0.0, 0.0),
    ("LC-T4", "streetlight_cabinet", "talant", 0.0, 0.0),
    ("TC-T5", "traffic_controller", "talant", 0.0, 0.0),
]
TALANT = (47.3370, 5.0050)
KM_LAT = 1 / 111.195


def place(north_km: float, east_km: float, origin: tuple[float, float] = P) -> tuple[float, float]:
    """Return the point some km north and east of an origin."""
    lat = origin[0] + north_km * KM_LAT
    return lat, origin[1] + east_km * KM_LAT / math.cos(math.radians(origin[0]))


class Clock:
    """A clock the test moves by hand (select expiry, rate limits, maintenance windows)."""

    def __init__(self, start: datetime):
        self.t = start

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        """Move the clock forward."""
        self.t += timedelta(seconds=seconds)


def scene_config(base: Config, tmp_path: Path, smtp_port: int | None = None, **control) -> Config:
    """Return the demo config reduced to the scene, with a fast simulator and collector."""
    cfg = demo_config(base, data=tmp_path, port=None, opcua_port=free_port())
    fixed = []
    for asset_id, cls, commune, north, east in SCENE:
        origin = P if commune == "dijon" else TALANT
        lat, lon = place(north, east, origin)
        fixed.append(
            FixedAssetConfig.model_validate(
                {"id": asset_id, "class": cls, "commune": commune, "lat": lat, "lon": lon}
            )
        )
    updates: dict = {
        "register": cfg.register.model_copy(update={"assets": 0, "fixed": fixed}),
        "simulator": cfg.simulator.model_copy(update={"tick_s": 0.2, "fault_rate_per_hour": 0}),
        "collectors": cfg.collectors.model_copy(
            update={
                "opcua": [
                    c.model_copy(update={"publishing_interval_ms": 100})
                    for c in cfg.collectors.opcua
                ]
            }
        ),
        "control": cfg.control.model_copy(update={"settle_s": 1.2, **control}),
        "alarms": cfg.alarms.model_copy(update={"enabled": False}),
    }
    if smtp_port is not None:
        email = cfg.alarms.email.model_copy(
            update={"host": "127.0.0.1", "port": smtp_port, "security": "none", "retry_min_s": 1}
        )
        updates["alarms"] = updates["alarms"].model_copy(update={"email": email})
    out = cfg.model_copy(update=updates)
    out._source = cfg.source
    return out


@dataclass
class Scene:
    """The running scene: simulator, collector, live values, control service."""

    cfg: Config
    register: Register
    live: LiveValues
    sim: MetropolisSimulator
    collector: OpcUaCollector
    control: ControlService

    def value(self, asset: str, signal: str):  # type: ignore[no-untyped-def]
        """Return what the simulated equipment holds now (its OPC UA node)."""
        return self.sim.current(self.register.assets[asset].tag(signal))

    def tag(self, asset: str, signal: str) -> str:
        """Return an asset's tag name."""
        return self.register.assets[asset].tag(signal)

    def keep_bollards_free(self) -> None:
        """Let no pedestrian step on the bollards by chance (the test decides presence)."""
        model, _ = self.sim.physics._models["BO-T1"]
        model.events = lambda rate, dt: np.zeros(model.n, bool)

    async def occupy(self, asset: str, occupied: bool) -> None:
        """Put someone on (or take everyone off) a bollard's presence sensor, and wait for it."""
        model, i = self.sim.physics._models[asset]
        model.presence_until[i] = math.inf if occupied else -math.inf
        tag = self.tag(asset, "presence")
        await eventually(lambda: (s := self.live.get(tag)) is not None and s.value is occupied)


@contextlib.asynccontextmanager
async def running_scene(
    cfg: Config,
    clock: Clock | None = None,
    start_time: datetime | None = None,
    with_jobs: bool = False,
) -> AsyncIterator[Scene]:
    """Start the simulator, an OPC UA collector feeding live values, and the control service
    (with its scheduler jobs: lighting, mail retries, when asked)."""
    register = build_register(cfg)
    live = LiveValues()
    sim = MetropolisSimulator(cfg, register, start_time=start_time)
    async with contextlib.AsyncExitStack() as stack:
        scheduler = None
        if with_jobs:
            scheduler = Scheduler(cfg.metropolis.timezone)
            await scheduler.start(stack)
        await sim.start(stack)
        collector = OpcUaCollector.from_config(cfg.collectors.opcua[0], cfg, register, live.update)
        await collector.start(stack)
        async with asyncio.timeout(30):
            await collector.wait_connected()
        await eventually(lambda: all(live.get(t) is not None for t in register.tags))
        control = ControlService(
            cfg,
            register,
            live,
            lambda tag: collector if tag in collector.tags else None,
            **({"clock": clock} if clock is not None else {}),
        )
        await control.start(stack, scheduler)
        yield Scene(cfg, register, live, sim, collector, control)


# --- pure helpers -----------------------------------------------------------------------


def test_distances_and_neighbours(small_register) -> None:
    """Distances are metres on the ground; the grid finds the same neighbours as a full scan."""
    assert distance_m(*P, *place(1.0, 0.0)) == pytest.approx(1000, rel=1e-3)
    assert distance_m(*P, *place(0.0, 1.0)) == pytest.approx(1000, rel=1e-3)
    assets = list(small_register.assets.values())
    centre = (assets[0].lat, assets[0].lon)
    by_scan = {a.id for a, _ in near(assets, *centre, 1500)}
    assert {a.id for a in GridIndex(assets).within(*centre, 1500)} == by_scan
    assert near(assets, *centre, 1500, nearest=2)[0][0].id == assets[0].id


def test_maintenance_windows_in_local_time_and_overnight() -> None:
    """Windows are in Europe/Paris; an overnight window belongs to the day it starts."""
    cal = MaintenanceCalendar(
        [MaintenanceWindow(name="night", days=["tue"], start="23:00", end="02:00")],
        "Europe/Paris",
    )
    tue_2330 = datetime(2025, 3, 4, 22, 30, tzinfo=UTC)  # Tuesday 23:30 in Paris (UTC+1)
    assert cal.window("dijon", "traffic_controller", tue_2330) == "night"
    assert cal.window("dijon", "traffic_controller", tue_2330 + timedelta(hours=2)) == "night"
    assert cal.window("dijon", "traffic_controller", tue_2330 + timedelta(hours=3)) is None
    assert cal.window("dijon", "traffic_controller", tue_2330 - timedelta(days=1)) is None


def test_values_are_coerced_and_checked_against_range_and_step() -> None:
    """Form text becomes the tag's kind; out-of-range and off-step numbers are refused."""
    plan = TagSpec("d/TC-1/plan", "TC-1", "d", "plan", "float", "", True, 0, 9)
    assert coerce(plan, "5") == 5.0 and coerce(plan, "2,0") == 2.0
    raised = TagSpec("d/BO-1/raised", "BO-1", "d", "raised", "bool", "", True)
    assert coerce(raised, "false") is False and coerce(raised, True) is True
    for bad in ("abc", "nan", True):
        with pytest.raises(ControlError):
            coerce(plan, bad)
    with pytest.raises(ControlError, match="supérieur au maximum 9"):
        check_range(plan, 12.0, 1)
    with pytest.raises(ControlError, match="le pas de 1"):
        check_range(plan, 2.5, 1)
    with in_locale("en"), pytest.raises(ControlError, match="above the maximum 9"):
        check_range(plan, 12.0, 1)  # a refusal speaks the language of whoever asked
    check_range(plan, 9.0, 1)


def dash_request(
    outputs: list[str], inputs: dict[str, object], state: dict[str, object] | None = None
) -> dict:
    """Build the body of a Dash callback request by hand, as a browser would send it."""
    outs = [dict(zip(("id", "property"), o.split("."), strict=True)) for o in outputs]

    def props(values: dict[str, object]) -> list[dict]:
        return [
            {"id": k.split(".")[0], "property": k.split(".")[1], "value": v}
            for k, v in values.items()
        ]

    return {
        "output": outputs[0] if len(outputs) == 1 else ".." + "...".join(outputs) + "..",
        "outputs": outs[0] if len(outs) == 1 else outs,
        "inputs": props(inputs),
        "changedPropIds": [next(iter(inputs))],
        "state": props(state or {}),
    }


def post_callback(opener, base: str, payload: dict) -> tuple[int, dict | str]:  # type: ignore[no-untyped-def]
    """Send a hand-built callback request; return the status and the JSON (or error text)."""
    import json
    import urllib.error
    import urllib.request

    req = urllib.request.Request(
        base + "_dash-update-component",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with opener.open(req, timeout=60) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_control_config_errors_name_the_toml_path() -> None:
    """Unknown classes and signals, read-only setpoints and bad values are load-time errors."""
    from beffroi.app.config import parse_config
    from beffroi.core.errors import ConfigError

    base = (Path(__file__).resolve().parents[1] / "config.toml").read_text()
    bad = (
        base
        + """
[[control.interlocks]]
name = "typo"
class = "bollard"
signal = "presence"
block_when = { signal = "raised", equals = true }

[[control.playbooks]]
name = "flood"
label = "Flood"
[[control.playbooks.steps]]
title = "Plan 12"
class = "traffic_controller"
signal = "plan"
value = 12
[[control.playbooks.steps]]
title = "Call"
action = "email"
to = ["not an address"]
subject = "x"
"""
    )
    with pytest.raises(ConfigError) as err:
        parse_config(bad, "c.toml")
    assert err.value.lines == [
        "c.toml: control.playbooks[2].steps[1].to: not an e-mail address: 'not an address'"
    ]
    with pytest.raises(ConfigError) as err:
        parse_config(bad.replace('to = ["not an address"]', 'to = ["a@b.fr"]'), "c.toml")
    assert err.value.lines == [
        "c.toml: control.interlocks[2]: bollard.presence is not writable",
        "c.toml: control.playbooks[2].steps[0].value: 12.0 is outside plan's range [0.0, 9.0]",
    ]
