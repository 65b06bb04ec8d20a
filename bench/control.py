"""Control benchmark: audit records one at a time and in bursts, and a dawn change of lighting.

Run: .venv/bin/python bench/control.py [--records 2000] [--burst 8000] [--assets 10000]
         [--settle-s 2.5] [--no-lighting]
Prints one JSON line per figure.

1. `audit_record_ms` (p50/p99): one `AuditLog.record` at a time, each its own transaction, with
   the details a lighting command carries.
2. `audit_burst_*_records_per_s`: `--burst` records as the lighting schedule produces them
   (an `operate` and a `result` per cabinet), one at a time, then through `record_many` when
   the log has it (one transaction).
3. `lighting_dawn_s`: the real simulator (asyncua server, `--assets` assets of the demo config)
   and an OPC UA collector, as tests/test_control_helpers.py starts them; the clock is set just
   after dawn, so every cabinet is commanded from its lit level to the day level in one
   `LightingScheduler.tick()`: checks, audit, write with read-back, `--settle-s` wait and the
   result's audit. `lighting_audit_busy_s`: the time during which an audit transaction was
   running (calls from several threads counted once), with the number of transactions and the
   largest; `lighting_first_write_after_s`: from the tick's start to the first equipment write
   (the checks and the wait for the `operate` records); `lighting_writes_s`: first write to the
   last read-back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import socket
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from beffroi.control.audit import AuditLog  # noqa: E402

DETAIL = {"value": 0.0, "previous": 100.0, "reason": "lighting schedule: day", "source": "lighting"}


def emit(name: str, value: float, unit: str, **extra) -> None:
    """Print one figure as a JSON line."""
    row = {"bench": "control", "figure": name, "value": round(value, 4), "unit": unit, **extra}
    print(json.dumps(row), flush=True)


def entries(n: int) -> list[tuple[str, str, str, str, str, dict]]:
    """Return n lighting records: (user, action, target, commune, outcome, detail)."""
    out = []
    for i in range(n // 2 + n % 2):
        tag = f"dijon/LC-{i:05d}/dimming_pct"
        out.append(("system", "operate", tag, "dijon", "sent", DETAIL))
        out.append(("system", "result", tag, "dijon", "confirmed", {**DETAIL, "detail": "ok"}))
    return out[:n]


def bench_single(folder: Path, n: int) -> None:
    """Time records appended one at a time, each committed on its own."""
    log = AuditLog(folder / "single.duckdb")
    times = []
    for user, action, target, commune, outcome, detail in entries(n):
        t = time.perf_counter()
        log.record(user, action, target=target, commune=commune, outcome=outcome, **detail)
        times.append((time.perf_counter() - t) * 1000)
    assert log.verify().ok
    log.close()
    p50, p99 = np.percentile(times, [50, 99])
    emit("audit_record_ms", float(p50), "ms", p99=round(float(p99), 3), records=n)


def bench_burst(folder: Path, n: int) -> None:
    """Time a lighting-sized burst, one record at a time, then as one batch if offered."""
    log = AuditLog(folder / "burst.duckdb")
    t = time.perf_counter()
    for user, action, target, commune, outcome, detail in entries(n):
        log.record(user, action, target=target, commune=commune, outcome=outcome, **detail)
    dt = time.perf_counter() - t
    emit("audit_burst_single_records_per_s", n / dt, "records/s", records=n, seconds=round(dt, 3))
    if hasattr(log, "record_many"):
        t = time.perf_counter()
        log.record_many(entries(n))
        dt = time.perf_counter() - t
        emit("audit_burst_batch_records_per_s", n / dt, "records/s", records=n,
             seconds=round(dt, 3))  # fmt: skip
    ok = log.verify()
    assert ok.ok, ok.problem
    log.close()


def free_port() -> int:
    """Return a free TCP port on localhost."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Clock:
    """A clock fixed at one instant: the tick's commands all happen 'just after dawn'."""

    def __init__(self, t):  # type: ignore[no-untyped-def]
        self.t = t

    def __call__(self):  # type: ignore[no-untyped-def]
        return self.t


def time_audit(log: AuditLog) -> list[tuple[float, float, int]]:
    """Wrap the log's append to note when each transaction ran and its records; return them."""
    spans: list[tuple[float, float, int]] = []
    # record_many when the log has it (record goes through it), else record: one span each.
    name = "record_many" if hasattr(log, "record_many") else "record"
    method = getattr(log, name)

    def timed(*args, **kw):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return method(*args, **kw)
        finally:
            spans.append((t, time.perf_counter(), len(args[0]) if name == "record_many" else 1))

    setattr(log, name, timed)
    return spans


def time_writes(collector) -> list[tuple[float, float]]:  # type: ignore[no-untyped-def]
    """Wrap the collector's write (with read-back) to note when each ran; return the spans."""
    spans: list[tuple[float, float]] = []
    write = collector.write

    async def timed(tag, value):  # type: ignore[no-untyped-def]
        t = time.perf_counter()
        try:
            return await write(tag, value)
        finally:
            spans.append((t, time.perf_counter()))

    collector.write = timed
    return spans


def busy_s(spans: list[tuple]) -> float:
    """Return the time at least one span was open (calls from threads overlap)."""
    total, end = 0.0, float("-inf")
    for a, b, *_ in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


async def bench_lighting(folder: Path, n_assets: int, settle_s: float) -> None:
    """Start the simulator and a collector, then time one tick that commands every cabinet."""
    from beffroi.app.config import demo_config, load_config
    from beffroi.collectors.opcua.collector import OpcUaCollector
    from beffroi.control.lighting import LightingScheduler
    from beffroi.control.setpoints import SetpointService
    from beffroi.core.live import LiveValues
    from beffroi.core.model import utcnow
    from beffroi.core.register import build_register
    from beffroi.simulator.server import MetropolisSimulator

    base = load_config(ROOT / "config.toml")
    cfg = demo_config(base, data=folder, port=None, opcua_port=free_port())
    cfg = cfg.model_copy(
        update={
            "simulator": cfg.simulator.model_copy(update={"fault_rate_per_hour": 0}),
            "control": cfg.control.model_copy(update={"settle_s": settle_s}),
        }
    )
    register = build_register(cfg, assets=n_assets)
    live = LiveValues()
    sim = MetropolisSimulator(cfg, register)
    async with contextlib.AsyncExitStack() as stack:
        t = time.perf_counter()
        await sim.start(stack)
        collector = OpcUaCollector.from_config(cfg.collectors.opcua[0], cfg, register, live.update)
        await collector.start(stack)
        async with asyncio.timeout(600):
            await collector.wait_connected()
        for _ in range(1200):  # every tag's first value in, so that every cabinet is due
            if all(live.get(t) is not None for t in register.tags):
                break
            await asyncio.sleep(0.5)
        emit("scene_start_s", time.perf_counter() - t, "s", assets=n_assets,
             tags=len(register.tags))  # fmt: skip
        audit = AuditLog(folder / "audit.duckdb")
        spans = time_audit(audit)
        writes = time_writes(collector)
        probe = LightingScheduler(cfg, register, live, None, clock=utcnow)  # type: ignore[arg-type]
        cab = probe.cabinets[0]
        dawn, _ = probe.twilight.of(cab.lat, cab.lon, utcnow().astimezone(probe.tz).date())
        clock = Clock(dawn + timedelta(minutes=10))  # every cabinet: from lit to the day level
        setpoints = SetpointService(
            cfg, register, live, lambda tag: collector if tag in collector.tags else None,
            audit, clock=clock,
        )  # fmt: skip
        lighting = LightingScheduler(cfg, register, live, setpoints, clock=clock)
        due = len(lighting.due(clock()))
        records = len(audit)
        t = time.perf_counter()
        sent = await lighting.tick()
        dt = time.perf_counter() - t
        written = len(audit) - records
        confirmed = audit.fetch(
            "SELECT count(*) AS n FROM audit WHERE action = 'result' AND outcome = 'confirmed'"
        )[0]["n"]
        ok = audit.verify()
        spans = [sp for sp in spans if sp[0] >= t]
        largest = max(spans, key=lambda sp: sp[2])
        emit("lighting_dawn_s", dt, "s", cabinets=len(lighting.cabinets), due=due, sent=sent,
             confirmed=confirmed, records=written, chain_ok=ok.ok, settle_s=settle_s)  # fmt: skip
        emit("lighting_audit_busy_s", busy_s(spans), "s", transactions=len(spans),
             largest=largest[2], largest_s=round(largest[1] - largest[0], 3),
             target="< 2")  # fmt: skip
        emit("lighting_first_write_after_s", min(w[0] for w in writes) - t, "s")
        emit("lighting_writes_s", max(w[1] for w in writes) - min(w[0] for w in writes), "s",
             writes=len(writes), busy_s=round(busy_s(writes), 3))  # fmt: skip
        audit.close()


def main() -> None:
    """Run the benchmarks."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=2000)
    ap.add_argument("--burst", type=int, default=8000)
    ap.add_argument("--assets", type=int, default=10_000)
    ap.add_argument("--settle-s", type=float, default=2.5)
    ap.add_argument("--no-lighting", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bench_single(folder, args.records)
        bench_burst(folder, args.burst)
        if not args.no_lighting:
            asyncio.run(bench_lighting(folder, args.assets, args.settle_s))


if __name__ == "__main__":
    main()
