"""Alarm benchmark: 50,000 tags with limit rules through the engine, and end-to-end latencies.

Run: .venv/bin/python bench/alarms.py [--tags 50000] [--samples 2000000] [--seconds 20]
Prints one JSON line per figure:
- engine throughput (samples/s through AlarmEngine.process, 1 % of samples beyond a limit);
- sample → alarm active p50/p99 (the batch reaches the sink → the engine's activation event),
  and → journaled p99 (the transition is in the DuckDB journal), under a steady load;
- sample → e-mail accepted by a real aiosmtpd server p50/p99 (digest window 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import socket
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from email import message_from_bytes
from email.policy import default as default_policy
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from aiosmtpd.controller import Controller  # noqa: E402

from beffroi.alerts.config import AlarmsConfig  # noqa: E402
from beffroi.alerts.engine import AlarmEngine  # noqa: E402
from beffroi.alerts.service import AlarmService  # noqa: E402
from beffroi.app.config import load_config  # noqa: E402
from beffroi.core.model import Asset, Commune, Sample, TagSpec  # noqa: E402
from beffroi.core.register import Register  # noqa: E402

RULE = {
    "name": "limits", "class": "sensor", "signal": "value", "type": "limit",
    "lolo": 5.0, "lo": 10.0, "hi": 90.0, "hihi": 95.0, "deadband": 1.0, "severity": 2,
}  # fmt: skip


def free_port() -> int:
    """Return a TCP port free on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def emit(name: str, value: float, unit: str, **extra) -> None:
    """Print one figure as a JSON line."""
    line = {"bench": "alarms", "figure": name, "value": round(value, 4), "unit": unit, **extra}
    print(json.dumps(line), flush=True)


def make_register(n: int) -> Register:
    """Return n assets of one class with one float signal each: n tags with limit rules."""
    communes = {
        f"c{i:02d}": Commune(f"c{i:02d}", f"Commune {i}", 47.3, 5.04, 1000) for i in range(24)
    }
    assets, tags = {}, {}
    for i in range(n):
        commune = f"c{i % 24:02d}"
        aid = f"S-{i:05d}"
        spec = TagSpec(f"{commune}/{aid}/value", aid, commune, "value", "float", interval_s=10)
        assets[aid] = Asset(aid, "sensor", commune, 47.3, 5.04, "water", [spec])
        tags[spec.name] = spec
    return Register(communes, assets, tags)


def throughput(register: Register, total: int, batch: int) -> None:
    """Feed `total` samples in batches; 1 % beyond a limit (then back), as a busy plant."""
    clock_now = datetime.now(UTC)
    engine = AlarmEngine(AlarmsConfig.model_validate({"rules": [RULE]}), register,
                         clock=lambda: clock_now)  # fmt: skip
    names = list(register.tags)
    rng = random.Random(1)
    batches = []
    for b in range(total // batch):
        out = []
        for k in range(batch):
            tag = names[(b * batch + k) % len(names)]
            v = (
                rng.uniform(20.0, 80.0)
                if rng.random() > 0.01
                else rng.choice((3.0, 8.0, 92.0, 97.0))
            )
            out.append(Sample(tag, clock_now, v))
        batches.append(out)
    t0 = time.perf_counter()
    for out in batches:
        engine.process(out)
    dt = time.perf_counter() - t0
    n = len(batches) * batch
    events = len(engine.take_events())
    emit("engine_throughput", n / dt, "samples/s", tags=len(names), samples=n, batch=batch,
         transitions=events, target=200_000)  # fmt: skip


class Mailbox:
    """aiosmtpd handler noting when each alarm id arrived by e-mail."""

    def __init__(self) -> None:
        self.arrived: dict[str, float] = {}
        self.mails = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        now = time.perf_counter()
        msg = message_from_bytes(envelope.original_content, policy=default_policy)
        text = msg.get_body(("plain",)).get_content()
        with self.lock:
            self.mails += 1
            for alarm_id in re.findall(r"Alarm:\s+(\S+)", text):
                self.arrived.setdefault(alarm_id, now)
        return "250 OK"


async def latency(register: Register, seconds: float, rate: int, excursions_per_s: int) -> None:
    """Run the service under a steady load with excursions; time each to active, journal, mail."""
    port = free_port()
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=port)
    smtp.start()
    tmp = Path(tempfile.mkdtemp(prefix="beffroi-bench-alarms-"))
    demo = load_config(ROOT / "config.toml")
    ac = AlarmsConfig.model_validate({
        "rules": [RULE],
        "teams": [{"name": "eau", "addresses": ["eau@example.org"]}],
        "routes": [{"team": "eau"}],
        "email": {"enabled": True, "host": "127.0.0.1", "port": port, "security": "none",
                  "digest_window_s": 0, "retry_min_s": 0.5},
    })  # fmt: skip
    historian = demo.historian.model_copy(update={"path": str(tmp / "h.duckdb")})
    cfg = demo.model_copy(update={"alarms": ac, "historian": historian})
    cfg._source = demo.source
    names = list(register.tags)
    rng = random.Random(2)
    sent: dict[str, float] = {}
    active: dict[str, float] = {}
    journaled: dict[str, float] = {}
    try:
        async with contextlib.AsyncExitStack() as stack:
            svc = AlarmService(cfg, register)
            await svc.start(stack)
            svc.engine.listeners.append(
                lambda ev: active.setdefault(ev.alarm_id, time.perf_counter())
                if ev.event == "activate" else None
            )  # fmt: skip
            write = svc.journal.write

            def timed_write(events):  # type: ignore[no-untyped-def]
                n = write(events)
                done = time.perf_counter()
                for ev in events:
                    if ev.event == "activate":
                        journaled.setdefault(ev.alarm_id, done)
                return n

            svc.journal.write = timed_write  # type: ignore[method-assign]
            per_tick, ticks = rate // 10, int(seconds * 10)
            pool = iter(rng.sample(names, min(len(names), ticks * excursions_per_s)))
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            for _ in range(ticks):
                now = datetime.now(UTC)
                batch = [Sample(names[rng.randrange(len(names))], now, rng.uniform(20.0, 80.0))
                         for _ in range(per_tick)]  # fmt: skip
                hot = [next(pool) for _ in range(excursions_per_s // 10 or 1)]
                for tag in hot:
                    batch.insert(rng.randrange(len(batch) + 1), Sample(tag, now, 3.0))
                arrival = time.perf_counter()
                for tag in hot:
                    sent[f"{tag}#limits"] = arrival
                svc.process(batch)
                next_at += 0.1
                await asyncio.sleep(max(0.0, next_at - loop.time()))
            deadline = time.perf_counter() + 30
            # Polled: the SMTP server records arrivals in its own thread.
            while len(mailbox.arrived) < len(sent) and time.perf_counter() < deadline:  # noqa: ASYNC110
                await asyncio.sleep(0.1)
            await asyncio.sleep(1.0)
    finally:
        smtp.stop()

    def pct(d: dict[str, float]) -> tuple[float, float, int]:
        lat = sorted(d[k] - sent[k] for k in sent if k in d)
        if not lat:
            return float("nan"), float("nan"), 0
        return statistics.median(lat), lat[min(len(lat) - 1, int(len(lat) * 0.99))], len(lat)

    load = {"load_samples_per_s": rate, "alarms": len(sent), "tags": len(names)}
    p50, p99, n = pct(active)
    emit("sample_to_active_p50", p50 * 1000, "ms", **load)
    emit("sample_to_active_p99", p99 * 1000, "ms", target_ms=1000, measured=n, **load)
    p50, p99, n = pct(journaled)
    emit("sample_to_journaled_p99", p99 * 1000, "ms", measured=n, p50_ms=round(p50 * 1000, 1))
    p50, p99, n = pct(mailbox.arrived)
    emit("sample_to_email_p50", p50 * 1000, "ms", digest_window_s=0, **load)
    emit("sample_to_email_p99", p99 * 1000, "ms", target_ms=5000, measured=n,
         emails=mailbox.mails, digest_window_s=0)  # fmt: skip


def main() -> None:
    """Run the figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tags", type=int, default=50_000)
    ap.add_argument("--samples", type=int, default=2_000_000)
    ap.add_argument("--batch", type=int, default=5_000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=int, default=50_000, help="load samples/s in the latency run")
    ap.add_argument("--excursions", type=int, default=20, help="alarms raised per second")
    args = ap.parse_args()
    register = make_register(args.tags)
    throughput(register, args.samples, args.batch)
    asyncio.run(latency(register, args.seconds, args.rate, args.excursions))


if __name__ == "__main__":
    main()
