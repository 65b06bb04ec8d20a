"""Edge compression on recorded-shape signals: what is stored still draws the original trend."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from beffroi.app.config import parse_config
from beffroi.core.errors import ConfigError
from beffroi.core.model import Quality, Sample
from beffroi.core.register import build_register
from beffroi.historian.compression import (
    CompressionSpec,
    Compressor,
    DeadbandFilter,
    SwingingDoorFilter,
)
from tests.conftest import ROOT

T0 = datetime(2026, 3, 1, tzinfo=UTC)
TAG = "dijon/LC-0001/power_kw"


def _drift(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A slow analog drift with sensor noise, every 10 s for 6 h (a temperature, a level)."""
    t = np.arange(0, 6 * 3600, 10.0)
    return t, 20 + np.cumsum(rng.normal(0, 0.02, len(t))) + rng.normal(0, 0.05, len(t))


def _steps(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Load steps with noise, every 10 s for 4 h (a cabinet switching lamp circuits)."""
    t = np.arange(0, 4 * 3600, 10.0)
    levels = rng.choice([0.0, 4.5, 9.0, 13.5], size=len(t) // 90 + 1)
    return t, np.repeat(levels, 90)[: len(t)] + rng.normal(0, 0.05, len(t))


def _daily(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A building's daily power profile, every 60 s for 2 days, irregular jitter in time."""
    # Whole milliseconds, so that times survive the trip through datetime exactly.
    t = np.arange(0, 2 * 86400, 60.0) + rng.integers(0, 5000, 2880) / 1000
    hours = t / 3600 % 24
    v = 30 + 25 * np.clip(np.sin((hours - 6) / 12 * np.pi), 0, None) + rng.normal(0, 0.3, len(t))
    return t, v


SHAPES = {"drift": _drift, "steps": _steps, "daily": _daily}
DEVIATION = {"drift": 0.2, "steps": 0.2, "daily": 1.0}  # about 3-4 sigma of each shape's noise


def _run(filt, t: np.ndarray, v: np.ndarray) -> list[Sample]:
    stored = []
    for ti, vi in zip(t, v, strict=True):
        stored += filt.offer(Sample(TAG, T0 + timedelta(seconds=float(ti)), float(vi)))
    return stored + filt.flush()


def _xy(stored: list[Sample]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.array([(s.ts - T0).total_seconds() for s in stored]),
        np.array([float(s.value) for s in stored]),
    )


@pytest.mark.parametrize("shape", SHAPES)
def test_swinging_door_stays_within_deviation(shape) -> None:
    """Linear interpolation between stored samples is within the deviation at every sample."""
    t, v = SHAPES[shape](np.random.default_rng(11))
    dev = DEVIATION[shape]
    stored = _run(
        SwingingDoorFilter(CompressionSpec("swinging_door", dev, max_time=timedelta(hours=1))), t, v
    )
    st, sv = _xy(stored)
    error = np.abs(np.interp(t, st, sv) - v).max()
    ratio = len(t) / len(stored)
    message = f"{shape}: {len(t)} → {len(stored)} stored, ratio {ratio:.1f}, error {error:.4f}"
    assert error <= dev + 1e-9, message
    assert ratio > 3, message
    assert st[0] == t[0] and st[-1] == t[-1], message  # the trend starts and ends where it did


@pytest.mark.parametrize("shape", SHAPES)
def test_deadband_stays_within_deviation(shape) -> None:
    """A stepped trend of the stored samples is within the deviation; straight lines within 2x."""
    t, v = SHAPES[shape](np.random.default_rng(12))
    dev = DEVIATION[shape]
    stored = _run(
        DeadbandFilter(CompressionSpec("deadband", dev, max_time=timedelta(hours=1))), t, v
    )
    st, sv = _xy(stored)
    held = sv[np.searchsorted(st, t, side="right") - 1]  # last stored value at each sample
    step_error = np.abs(held - v).max()
    line_error = np.abs(np.interp(t, st, sv) - v).max()
    ratio = len(t) / len(stored)
    message = (
        f"{shape}: {len(t)} → {len(stored)} stored, ratio {ratio:.1f}, "
        f"stepped error {step_error:.4f}, linear error {line_error:.4f}"
    )
    assert step_error <= dev + 1e-9, message
    assert line_error <= 2 * dev + 1e-9, message
    assert ratio > 1.5, message


@pytest.mark.parametrize("method", ["deadband", "swinging_door"])
def test_min_and_max_time_are_honoured(method) -> None:
    """Stored samples are at least min_time and at most max_time apart."""
    rng = np.random.default_rng(3)
    t = np.arange(0, 3 * 3600, 5.0)
    v = np.where(t < 3600, 10.0, 10.0 + rng.normal(0, 2, len(t)))  # flat hour, then noise
    spec = CompressionSpec(method, 0.5, timedelta(seconds=60), timedelta(seconds=600))
    filt = DeadbandFilter(spec) if method == "deadband" else SwingingDoorFilter(spec)
    st, _ = _xy(_run(filt, t, v))
    gaps = np.diff(st)
    assert gaps.min() >= 60, f"{method}: gaps {gaps.min()}..{gaps.max()} s"
    assert gaps.max() <= 600, f"{method}: gaps {gaps.min()}..{gaps.max()} s"


@pytest.mark.parametrize("method", ["deadband", "swinging_door"])
def test_bad_quality_always_passes_and_closes_the_segment(method) -> None:
    """A Bad or CommLoss sample is stored, after the last good value held before it."""
    spec = CompressionSpec(method, 1.0)
    filt = DeadbandFilter(spec) if method == "deadband" else SwingingDoorFilter(spec)
    at = [T0 + timedelta(seconds=10 * i) for i in range(6)]
    out = [filt.offer(Sample(TAG, at[i], 5.0)) for i in range(3)]
    assert out == [[Sample(TAG, at[0], 5.0)], [], []]
    lost = Sample(TAG, at[3], float("nan"), Quality.COMM_LOSS)
    assert filt.offer(lost) == [Sample(TAG, at[2], 5.0), lost]
    bad = Sample(TAG, at[4], 5.0, Quality.BAD)
    assert filt.offer(bad) == [bad]
    # Back to good: the first good sample opens a new segment and is stored.
    assert filt.offer(Sample(TAG, at[5], 5.0)) == [Sample(TAG, at[5], 5.0)]


def test_late_samples_pass_unchanged() -> None:
    """A sample older than the last one seen is stored as it is and does not move the door."""
    filt = SwingingDoorFilter(CompressionSpec("swinging_door", 1.0))
    filt.offer(Sample(TAG, T0, 1.0))
    filt.offer(Sample(TAG, T0 + timedelta(seconds=20), 1.0))
    late = Sample(TAG, T0 + timedelta(seconds=10), 50.0)
    assert filt.offer(late) == [late]
    assert filt.offer(Sample(TAG, T0 + timedelta(seconds=30), 1.0)) == []


def _config(extra: str):
    """Return the demo config with its [compression] tables replaced by `extra`."""
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    text = text[: text.index("[compression]")] + text[text.index("[hmi]") :]
    return parse_config(text + "\n" + extra, str(ROOT / "config.toml"))


def test_demo_config_compresses_analog_measurements_only(demo_config) -> None:
    """Analog measurements are compressed; setpoints, states and text pass whole."""
    register = build_register(demo_config, assets=60)
    comp = Compressor.from_config(demo_config, register)
    asset = next(a for a in register.assets.values() if a.asset_class == "streetlight_cabinet")
    assert asset.tag("power_kw") in comp.specs
    for signal in ("dimming_pct", "lit", "fault"):  # a setpoint, states
        assert asset.tag(signal) not in comp.specs
    panel = next(a for a in register.assets.values() if a.asset_class == "info_panel")
    assert panel.tag("message") not in comp.specs
    # Unknown tags (e.g. _system) pass whole, and the ratio counts everything offered.
    flat = [Sample(asset.tag("power_kw"), T0 + timedelta(seconds=i), 3.0) for i in range(100)]
    system = Sample("_system/collector/x/connected", T0, True)
    stored = comp.offer_batch([*flat, system]) + comp.flush()
    assert system in stored and len(stored) == 3 and comp.ratio == pytest.approx(101 / 3)


def test_deviation_pct_uses_the_signal_span() -> None:
    """deviation_pct is a percentage of high - low, or of `span` when the signal has none."""
    cfg = _config(
        "[compression.classes.reservoir]\n"
        'level_pct = { method = "deadband", deviation_pct = 1, span = 50 }\n'
        "[compression.classes.building]\n"
        'setpoint_c = { method = "deadband", deviation_pct = 10 }\n'
    )
    register = build_register(cfg, assets=200)
    comp = Compressor.from_config(cfg, register)
    devs = {t.rsplit("/", 1)[1]: s.deviation for t, s in comp.specs.items()}
    assert devs["level_pct"] == pytest.approx(0.5)
    assert devs["setpoint_c"] == pytest.approx(1.2)  # 10 % of 24 - 12


def test_compression_rules_are_checked() -> None:
    """Rules on unknown classes or signals, on non-float signals, or without a span are errors."""
    with pytest.raises(ConfigError) as err:
        _config(
            "[compression.classes.streetlight_cabinet]\n"
            "lit = { deviation = 1 }\n"
            "power_kw = { deviation_pct = 1 }\n"
            "nope = { deviation = 1 }\n"
            "[compression.classes.tram]\n"
            "speed = { deviation = 1 }\n"
        )
    lines = str(err.value)
    assert "compression.classes.streetlight_cabinet.lit: only float signals" in lines
    assert "compression.classes.streetlight_cabinet.power_kw: deviation_pct needs a span" in lines
    assert (
        "compression.classes.streetlight_cabinet.nope: streetlight_cabinet has no signal" in lines
    )
    assert "compression.classes.tram: unknown asset class 'tram'" in lines
    with pytest.raises(ConfigError, match="give one of deviation"):
        _config("[compression.classes.bus]\nspeed_kmh = { deviation = 1, deviation_pct = 2 }\n")


def test_no_rule_means_every_sample_is_kept() -> None:
    """Without a spec a tag's samples all pass, whatever their values."""
    comp = Compressor({})
    batch = [Sample(TAG, T0 + timedelta(seconds=i), 1.0) for i in range(10)]
    assert comp.offer_batch(batch) == batch and math.isclose(comp.ratio, 1.0)
