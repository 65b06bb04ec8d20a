"""OPC UA acquisition benchmark: a real asyncua server in another process, the collector here.

Run: .venv/bin/python bench/collect_opcua.py [--tags 50000] [--rate 20000] [--seconds 30]

The server process builds N variables and, on command, changes `rate` of them per second
(round robin, each change a new value with its source timestamp). This process runs the
OpcUaCollector writing into the embedded historian (DuckDBHistorian through WriteBuffer).
Prints one JSON line per figure: monitored items and the time to create them, the server's own
production rate, the rate stored with the loss count, and source-to-stored latency p50/p99.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing as mp
import os
import platform
import socket
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

NS = "urn:beffroi:bench"
TICK_S = 0.02  # the server changes values in slices this often


def emit(name: str, value: float, unit: str, **extra) -> None:
    """Print one figure as a JSON line."""
    line = {"bench": "collect_opcua", "figure": name, "value": round(value, 3), "unit": unit}
    print(json.dumps(line | extra), flush=True)


def tag(i: int) -> str:
    """Return the name of the i-th benchmark tag (commune/asset/signal, 500 assets a folder)."""
    return f"c{i % 24:02d}/A-{i:06d}/power_kw"


# --- the server process -------------------------------------------------------------------


def serve(port: int, n: int, stock: bool, conn) -> None:
    """Run the asyncua server of the benchmark until told to stop (in its own process)."""
    asyncio.run(_serve(port, n, stock, conn))


def _skip_deepcopy() -> None:
    """Keep asyncua's server from deep-copying every changed value for its monitored items.

    More than half of the stock server's time goes there (py-spy); the values this benchmark
    writes are new objects never changed afterwards, so the copy protects nothing. This speeds
    up the simulated equipment only: the collector's side is untouched.
    """
    from asyncua.server.monitored_item_service import MonitoredItemValues

    def set_current_datavalue(self, cur_val) -> None:
        self.old_dvalue = self.current_dvalue
        self.current_dvalue = cur_val

    MonitoredItemValues.set_current_datavalue = set_current_datavalue


async def _serve(port: int, n: int, stock: bool, conn) -> None:
    import logging

    from asyncua import Server, ua

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    if not stock:
        _skip_deepcopy()
    t0 = time.perf_counter()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace(NS)
    objects = server.nodes.objects
    nodes = [ua.NodeId(tag(i), idx) for i in range(n)]
    items, folder = [], None
    for i, nid in enumerate(nodes):
        if i % 200 == 0:  # AddNodes checks every sibling: keep folders small
            folder = await objects.add_folder(ua.NodeId(f"f{i}", idx), f"f{i}")
        attrs = ua.VariableAttributes()
        attrs.DisplayName = ua.LocalizedText("power_kw")
        attrs.DataType = ua.NodeId(ua.ObjectIds.Double)
        attrs.Value = ua.Variant(0.0, ua.VariantType.Double)
        attrs.AccessLevel = attrs.UserAccessLevel = ua.AccessLevel.CurrentRead.mask
        items.append(
            ua.AddNodesItem(
                ParentNodeId=folder.nodeid,
                ReferenceTypeId=ua.NodeId(ua.ObjectIds.HasComponent),
                RequestedNewNodeId=nid,
                BrowseName=ua.QualifiedName(f"v{i}", idx),
                NodeClass=ua.NodeClass.Variable,
                NodeAttributes=attrs,
                TypeDefinition=ua.NodeId(ua.ObjectIds.BaseDataVariableType),
            )
        )
    for r in server.iserver.node_mgt_service.add_nodes(items):
        r.StatusCode.check()
    await server.start()
    conn.send(("ready", time.perf_counter() - t0))
    loop = asyncio.get_running_loop()
    while True:
        msg = await loop.run_in_executor(None, conn.recv)
        if msg[0] == "stop":
            break
        _, rate, seconds = msg
        conn.send(("done", *await _produce(server, nodes, rate, seconds)))
    await server.stop()


async def _produce(server, nodes, rate: float, seconds: float) -> tuple[int, float, float]:
    """Change `rate` values a second for `seconds`; return (changes, elapsed, busy seconds)."""
    from asyncua import ua

    write = server.iserver.aspace.write_attribute_value
    attr, good, double = ua.AttributeIds.Value, ua.StatusCode(ua.StatusCodes.Good), ua.VariantType
    loop = asyncio.get_running_loop()
    n, i, done, busy = len(nodes), 0, 0, 0.0
    start = loop.time()
    next_at = start
    while True:
        now = loop.time()
        if now - start >= seconds:
            break
        # Catch up at most a few ticks: a server that cannot keep up produces what it can.
        due = min(int((now - start + TICK_S) * rate) - done, int(rate * TICK_S * 3) + 1)
        t = time.perf_counter()
        ts = datetime.now(UTC)
        for k in range(max(due, 0)):
            done += 1
            dv = ua.DataValue(
                ua.Variant(float(done), double.Double),
                StatusCode=good,
                SourceTimestamp=ts,
                ServerTimestamp=ts,
            )
            await write(nodes[i], attr, dv)
            i = (i + 1) % n
            if k % 200 == 199:  # let the server answer publish requests meanwhile
                busy += time.perf_counter() - t
                await asyncio.sleep(0)
                t = time.perf_counter()
        busy += time.perf_counter() - t
        next_at += TICK_S
        await asyncio.sleep(max(0.0, next_at - loop.time()))
    return done, loop.time() - start, busy


# --- this process: the collector and the historian ----------------------------------------


class TimedHistorian:
    """Wrap the historian: count what is stored and when, for loss and latency."""

    def __init__(self, inner):
        self.inner = inner
        self.stored = 0
        self.latencies: list[np.ndarray] = []
        self.lock = threading.Lock()

    def write(self, batch) -> int:
        """Store a batch, then record each sample's source-to-stored latency."""
        n = self.inner.write(batch)
        now = time.time()
        ts = np.fromiter((s.ts.timestamp() for s in batch if s.tag[0] != "_"), float)
        with self.lock:
            self.stored += len(ts)
            self.latencies.append(now - ts)
        return n

    def close(self) -> None:
        """Close the wrapped historian."""
        self.inner.close()


async def bench(args, port: int, conn) -> None:
    """Subscribe to every tag, then measure a sustained run against the server's rate."""
    from beffroi.collectors.opcua import OpcUaCollector
    from beffroi.core.config import OpcUaCollectorConfig
    from beffroi.core.model import TagSpec
    from beffroi.historian.buffer import WriteBuffer
    from beffroi.historian.duckdb import DuckDBHistorian
    from beffroi.historian.spool import Spool

    folder = Path(tempfile.mkdtemp(prefix="bench-opcua-"))
    historian = TimedHistorian(DuckDBHistorian(folder / "bench.duckdb"))
    buffer = WriteBuffer(historian, Spool(folder / "spool", 1 << 30), 1.0, 100_000)
    tags = [
        TagSpec(tag(i), f"A-{i:06d}", f"c{i % 24:02d}", "power_kw", "float", "kW")
        for i in range(args.tags)
    ]
    config = OpcUaCollectorConfig(
        name="bench",
        url=f"opc.tcp://127.0.0.1:{port}/bench/",
        namespace=NS,
        publishing_interval_ms=args.publishing_interval_ms,
        chunk_size=args.chunk_size,
        timeout_s=60,
    )
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(historian.close)
        await buffer.start(stack)
        collector = OpcUaCollector(config, tags, buffer.put)
        t0 = time.perf_counter()
        await collector.start(stack)
        async with asyncio.timeout(600):
            await collector.wait_connected()
        created = time.perf_counter() - t0
        emit(
            "monitored_items_created",
            collector.monitored,
            "items",
            seconds=round(created, 2),
            calls=collector.create_calls,
            target="50000 in < 60 s",
        )
        # Let the initial values (one per item) be stored before measuring.
        while historian.stored < args.tags:  # noqa: ASYNC110  (a counter has no event)
            await asyncio.sleep(0.2)
        await asyncio.sleep(args.publishing_interval_ms / 1000 * 3)
        base, historian.latencies = historian.stored, []
        conn.send(("run", args.rate, args.seconds))
        loop = asyncio.get_running_loop()
        t_run, cpu = time.perf_counter(), time.process_time()
        _, produced, elapsed, busy = await loop.run_in_executor(None, conn.recv)
        emit(
            "server_production_rate",
            produced / elapsed,
            "changes/s",
            requested=args.rate,
            changes=produced,
            server_busy_pct=round(100 * busy / elapsed, 1),
            server="asyncua stock" if args.stock_server else "asyncua, per-change deepcopy skipped",
        )
        deadline = time.perf_counter() + 60
        while historian.stored - base < produced and time.perf_counter() < deadline:  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        drained = time.perf_counter() - t_run
        cpu = time.process_time() - cpu
        stored = historian.stored - base
        emit(
            "stored_rate",
            stored / max(drained, elapsed),
            "changes/s",
            stored=stored,
            lost=produced - stored,
            seconds=round(drained, 2),
            target=">= 20000/s, zero loss",
            collector_cpu_pct=round(100 * cpu / drained, 1),
        )
        lat = np.concatenate(historian.latencies) * 1000 if historian.latencies else np.zeros(1)
        emit("latency_p50", float(np.percentile(lat, 50)), "ms", source="source ts → stored")
        emit("latency_p99", float(np.percentile(lat, 99)), "ms", source="source ts → stored")


def free_port() -> int:
    """Return a free TCP port on the loopback interface."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    """Start the server process, run the benchmark, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tags", type=int, default=50_000)
    parser.add_argument("--rate", type=float, default=20_000, help="value changes per second")
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--publishing-interval-ms", type=int, default=250)
    parser.add_argument("--chunk-size", type=int, default=5000)
    parser.add_argument(
        "--stock-server", action="store_true", help="keep asyncua's per-change deepcopy"
    )
    args = parser.parse_args()
    emit(
        "machine",
        os.cpu_count() or 0,
        "cores",
        python=platform.python_version(),
        date=datetime.now(UTC).date().isoformat(),
        tags=args.tags,
    )
    port = free_port()
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=serve, args=(port, args.tags, args.stock_server, child), daemon=True)
    proc.start()
    try:
        _, build = parent.recv()
        emit("server_build", build, "s", nodes=args.tags)
        asyncio.run(bench(args, port, parent))
    finally:
        parent.send(("stop",))
        proc.join(timeout=30)
        if proc.is_alive():
            proc.terminate()


if __name__ == "__main__":
    sys.exit(main())
