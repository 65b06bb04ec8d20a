"""Sparkplug B benchmark: four edges publishing to one central primary host over Mosquitto.

Run: .venv/bin/python bench/sparkplug.py [--edges 4] [--tags 5000] [--seconds 20]
Prints one JSON line per figure.

Each edge is a process running Beffroi's `SparkplugEdge` (the write path a real edge uses:
the buffer's batches → DDATA by alias, QoS 1), fed batches of `--tags` changing values as
fast as it publishes them for `--seconds`. The central is Beffroi's `SparkplugHost` in this
process, with a sink that counts samples and measures edge → central latency (sample time
to its arrival in the sink), on Debian's Mosquitto (a broker of the machine, on loopback).

Figures: `central_ingest` (metrics/s over the run, and lost = sent - received, must be 0),
`latency_ms` (p50, p99), `edge_rss_mb` (each edge's peak), and `single_process_sink`
(the same samples handed to a counting sink in one process: the cost the transport adds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from beffroi.core.live import LiveValues  # noqa: E402
from beffroi.core.model import Sample, TagSpec, utcnow  # noqa: E402
from beffroi.historian.buffer import WriteBuffer  # noqa: E402
from beffroi.historian.spool import Spool  # noqa: E402
from beffroi.sparkplug.config import SparkplugConfig  # noqa: E402
from beffroi.sparkplug.edge import SparkplugEdge  # noqa: E402
from beffroi.sparkplug.host import SparkplugHost  # noqa: E402

GROUP, HOST = "bench", "bench-central"


def emit(name: str, value: float, unit: str, **extra: object) -> None:
    """Print one figure as a JSON line."""
    row = {"bench": "sparkplug", "figure": name, "value": round(value, 3), "unit": unit, **extra}
    print(json.dumps(row), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def specs(edge: int, n: int) -> list[TagSpec]:
    """Return an edge's tags: n cabinets' power, in the edge's own commune."""
    commune = f"commune-{edge}"
    return [
        TagSpec(
            f"{commune}/LC-{edge}{i:05d}/power_kw",
            f"LC-{edge}{i:05d}",
            commune,
            "power_kw",
            "float",
            "kW",
        )
        for i in range(n)
    ]


def config(port: int, edges: int) -> SparkplugConfig:
    return SparkplugConfig.model_validate({
        "host": "127.0.0.1", "port": port, "group": GROUP, "name": HOST, "keepalive_s": 30,
        "batch_metrics": 1000, "edges": [{"name": f"edge-{i}"} for i in range(edges)],
    })  # fmt: skip


def edge_process(
    port: int, index: int, edges: int, n: int, seconds: float, rate: float, out: mp.Queue
) -> None:
    """Run one edge: publish batches of n changing values for `seconds`; report what it sent."""

    async def main() -> None:
        cfg = config(port, edges)
        edge = SparkplugEdge(cfg, cfg.edges[index], LiveValues(), lambda tag: None)
        tags = specs(index, n)
        edge.tags_of = lambda: tags
        sent = 0
        with tempfile.TemporaryDirectory() as spool_dir:
            async with contextlib.AsyncExitStack() as stack:
                await edge.start(stack)
                # The edge's own write path: the buffer, its durable spool, the replay.
                buffer = WriteBuffer(edge, Spool(spool_dir, 8 << 30), 0.2, 4 * n,
                                     replay=edge.write_historical, live_first=True)  # fmt: skip
                await buffer.start(stack)
                while not edge.born:  # noqa: ASYNC110  (a bench: no event to wait on)
                    await asyncio.sleep(0.05)
                start = time.monotonic()
                end = start + seconds
                k = 0
                while time.monotonic() < end:
                    # Paced: n values every n / rate seconds (more than the link takes: the
                    # buffer spools the rest, and the edge sends it when it can).
                    await asyncio.sleep(max(0.0, start + k * n / rate - time.monotonic()))
                    now = utcnow()
                    buffer.put([Sample(t.name, now, float(k % 100) + i * 1e-3)
                                for i, t in enumerate(tags)])  # fmt: skip
                    sent += n
                    k += 1
                while buffer.depth or buffer.spool:  # noqa: ASYNC110
                    await asyncio.sleep(0.1)
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        out.put((index, sent, rss))

    asyncio.run(main())


async def central(
    port: int, edges: int, n: int, seconds: float, rate: float, outage: float
) -> None:
    cfg = config(port, edges)
    received = historical = 0
    first = last = 0.0
    latencies: list[float] = []

    def sink(batch: list[Sample]) -> None:
        nonlocal received, first, last
        # Values only: not the host's status, nor the CommLoss marks of the edges' deaths.
        batch = [s for s in batch if s.quality == 0 and not s.tag.startswith("_system/")]
        if not batch:
            return
        now = utcnow()
        t = time.monotonic()
        if not first:
            first = t
        last = t
        received += len(batch)
        # One latency per batch (its newest sample): the figure, not a per-sample cost.
        latencies.append((now - batch[-1].ts) / timedelta(milliseconds=1))

    def past(batch: list[Sample]) -> None:
        nonlocal received, historical
        received += len(batch)
        historical += len(batch)

    all_tags = [t for i in range(edges) for t in specs(i, n)]

    async def host_up(stack: contextlib.AsyncExitStack) -> SparkplugHost:
        host = SparkplugHost(cfg, all_tags, sink)
        host.store_historical = past
        await host.start(stack)
        await host.wait_connected()
        return host

    ctx = mp.get_context("spawn")
    queue: mp.Queue = ctx.Queue()
    stack = contextlib.AsyncExitStack()
    await host_up(stack)
    per_edge = rate / edges
    procs = [ctx.Process(target=edge_process, args=(port, i, edges, n, seconds, per_edge,
                                                    queue)) for i in range(edges)]  # fmt: skip
    for p in procs:
        p.start()
    if outage:
        await asyncio.sleep(seconds / 3)
        await stack.aclose()  # the central stops cleanly: the edges spool
        await asyncio.sleep(outage)
        stack = contextlib.AsyncExitStack()
        back = time.monotonic()
        await host_up(stack)
    results = [await asyncio.to_thread(queue.get) for _ in procs]
    for p in procs:
        p.join()
    sent = sum(r[1] for r in results)
    deadline = time.monotonic() + 60
    while received < sent and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.1)
    await stack.aclose()
    if outage:
        emit("backlog_drain", historical / (last - back), "metrics/s", outage_s=outage,
             backlog=historical, note="spooled values sent flagged historical, while live "
             "values go on")  # fmt: skip
    data = received  # births carry no value here (nothing known yet): data messages only
    throughput = (data - historical) / (last - first - outage) if last > first else 0.0
    emit("central_ingest", throughput, "metrics/s", offered=rate,
         edges=edges, tags_per_edge=n, sent=sent,
         received=data, lost=sent - data, target=50_000)  # fmt: skip
    latencies.sort()
    if latencies:
        p50 = latencies[len(latencies) // 2]
        p99 = latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))]
        emit("latency_ms", p99, "ms", p50=round(p50, 1), p99=round(p99, 1), target_p99=2000)
    for index, _, rss in sorted(results):
        emit("edge_rss_mb", rss, "MB", edge=index)
    emit("central_rss_mb", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "MB")


def single_process(n: int, rounds: int) -> None:
    """The same values handed straight to a sink in one process (no transport)."""
    tags = specs(0, n)
    count = 0

    def sink(batch: list[Sample]) -> None:
        nonlocal count
        count += len(batch)

    t0 = time.perf_counter()
    for k in range(rounds):
        now = utcnow()
        sink([Sample(t.name, now, float(k % 100) + i * 1e-3) for i, t in enumerate(tags)])
    s = time.perf_counter() - t0
    emit("single_process_sink", count / s, "metrics/s", samples=count)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--edges", type=int, default=4)
    ap.add_argument("--tags", type=int, default=5000)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--rate", type=float, default=50_000.0, help="metrics/s offered, in all")
    ap.add_argument("--outage", type=float, default=0.0, help="central stopped this long")
    args = ap.parse_args()
    mosquitto = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        conf = Path(tmp) / "mosquitto.conf"
        conf.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                        "max_queued_messages 100000\nmax_inflight_messages 100\n")  # fmt: skip
        broker = subprocess.Popen([mosquitto, "-c", str(conf)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)  # fmt: skip
        try:
            time.sleep(0.5)
            asyncio.run(central(port, args.edges, args.tags, args.seconds, args.rate, args.outage))
        finally:
            broker.terminate()
            broker.wait()
    single_process(args.tags, 200)


if __name__ == "__main__":
    main()
