"""OPC UA acquisition benchmark: a real asyncua server in another process, the collector here.

Run: .venv/bin/python bench/collect_opcua.py [--tags 50000] [--rate 20000] [--seconds 30]
     [--servers 1] [--stock-server] [--asyncua-decoder]

Each server process (one by default; `--servers K` splits the tags over K, as a gateway polling
K PLCs) builds its variables and, on command, changes its share of `rate` of them per second
(round robin, each change a new value with its source timestamp). This process runs one
OpcUaCollector per server, writing into the embedded historian (DuckDBHistorian through
WriteBuffer).
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


def serve(port: int, first: int, n: int, stock: bool, conn) -> None:
    """Run one asyncua server of the benchmark until told to stop (in its own process)."""
    asyncio.run(_serve(port, first, n, stock, conn))


def _trim_server() -> None:
    """Spare asyncua's server two costly steps per changed value, keeping what it sends.

    py-spy shows more than half of the stock server's time in a deepcopy of every changed value
    kept by each monitored item, and a third of the rest in building a default DataValue for each
    notification before replacing it. The values this benchmark writes are new objects never
    changed afterwards, so the copy protects nothing. This speeds up the simulated equipment
    only; what goes on the wire is the same, and the collector's side is untouched.
    """
    from asyncua import ua
    from asyncua.server.monitored_item_service import MonitoredItemService, MonitoredItemValues

    def set_current_datavalue(self, cur_val) -> None:
        self.old_dvalue = self.current_dvalue
        self.current_dvalue = cur_val

    disabled, status_value = ua.MonitoringMode.Disabled, ua.DataChangeTrigger.StatusValue

    async def datachange_callback(self, handle, value, error=None) -> None:
        if error:
            await self.trigger_statuschange(error)
            return
        mid = self._monitored_datachange[handle]
        mdata = self._monitored_items[mid]
        if mdata.mode == disabled:
            return
        mdata.mvalue.set_current_datavalue(value)
        if mdata.filter:
            passes = self._is_data_changed(
                mdata.mvalue, mdata.filter.Trigger
            ) and self._is_deadband_exceeded(mdata.mvalue, mdata.filter)
        else:
            passes = self._is_data_changed(mdata.mvalue, status_value)
        if passes:
            event = ua.MonitoredItemNotification(ClientHandle=mdata.client_handle, Value=value)
            await self.isub.enqueue_datachange_event(mid, event, mdata.queue_size)

    MonitoredItemValues.set_current_datavalue = set_current_datavalue
    MonitoredItemService.datachange_callback = datachange_callback


async def _serve(port: int, first: int, n: int, stock: bool, conn) -> None:
    import logging

    from asyncua import Server, ua

    logging.getLogger("asyncua").setLevel(logging.ERROR)
    if not stock:
        _trim_server()
    t0 = time.perf_counter()
    server = Server()
    await server.init()
    server.set_endpoint(f"opc.tcp://127.0.0.1:{port}/bench/")
    server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
    idx = await server.register_namespace(NS)
    objects = server.nodes.objects
    nodes = [ua.NodeId(tag(first + i), idx) for i in range(n)]
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
    attr, good = ua.AttributeIds.Value, ua.StatusCode(ua.StatusCodes.Good)
    double = ua.VariantType.Double  # enum lookups are costly in a loop this hot
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
                ua.Variant(float(done), double),
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


async def bench(args, servers: list[tuple[int, int, int, object]]) -> None:
    """Subscribe to every tag, then measure a sustained run against the servers' rate."""
    from beffroi.collectors.opcua.collector import OpcUaCollector
    from beffroi.collectors.opcua.config import OpcUaCollectorConfig
    from beffroi.core.model import TagSpec
    from beffroi.historian.buffer import WriteBuffer
    from beffroi.historian.duckdb.historian import DuckDBHistorian
    from beffroi.historian.spool import Spool

    if args.asyncua_decoder:  # measure what the fast publish decoder saves
        from beffroi.collectors.opcua import decoder

        decoder.install = lambda session: None
    folder = Path(tempfile.mkdtemp(prefix="bench-opcua-"))
    historian = TimedHistorian(DuckDBHistorian(folder / "bench.duckdb"))
    buffer = WriteBuffer(historian, Spool(folder / "spool", 1 << 30), 1.0, 100_000)
    collectors = []
    for k, (port, first, n, _) in enumerate(servers):
        tags = [
            TagSpec(tag(i), f"A-{i:06d}", f"c{i % 24:02d}", "power_kw", "float", "kW")
            for i in range(first, first + n)
        ]
        config = OpcUaCollectorConfig(
            name=f"bench-{k}",
            url=f"opc.tcp://127.0.0.1:{port}/bench/",
            namespace=NS,
            publishing_interval_ms=args.publishing_interval_ms,
            chunk_size=args.chunk_size,
            timeout_s=60,
        )
        collectors.append(OpcUaCollector(config, tags, buffer.put))
    async with contextlib.AsyncExitStack() as stack:
        stack.callback(historian.close)
        await buffer.start(stack)
        t0 = time.perf_counter()
        for collector in collectors:
            await collector.start(stack)
        async with asyncio.timeout(600):
            for collector in collectors:
                await collector.wait_connected()
        created = time.perf_counter() - t0
        emit(
            "monitored_items_created",
            sum(c.monitored for c in collectors),
            "items",
            seconds=round(created, 2),
            calls=sum(c.create_calls for c in collectors),
            servers=len(servers),
            target="50000 in < 60 s",
        )
        # Let the initial values (one per item) be stored before measuring.
        while historian.stored < args.tags:  # noqa: ASYNC110  (a counter has no event)
            await asyncio.sleep(0.2)
        await asyncio.sleep(args.publishing_interval_ms / 1000 * 3)
        base, historian.latencies = historian.stored, []
        for *_, conn in servers:
            conn.send(("run", args.rate / len(servers), args.seconds))
        loop = asyncio.get_running_loop()
        t_run, cpu = time.perf_counter(), time.process_time()
        done = [await loop.run_in_executor(None, conn.recv) for *_, conn in servers]
        produced = sum(d[1] for d in done)
        elapsed = max(d[2] for d in done)
        emit(
            "server_production_rate",
            produced / elapsed,
            "changes/s",
            requested=args.rate,
            changes=produced,
            servers=len(servers),
            server_busy_pct=[round(100 * d[3] / d[2], 1) for d in done],
            server="asyncua stock" if args.stock_server else "asyncua, trimmed (see _trim_server)",
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
            decoder="asyncua" if args.asyncua_decoder else "beffroi fast path",
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
    parser.add_argument("--servers", type=int, default=1, help="server processes (PLCs)")
    parser.add_argument(
        "--asyncua-decoder", action="store_true", help="decode publish responses with asyncua"
    )
    parser.add_argument("--stock-server", action="store_true", help="do not trim asyncua's server")
    args = parser.parse_args()
    emit(
        "machine",
        os.cpu_count() or 0,
        "cores",
        python=platform.python_version(),
        date=datetime.now(UTC).date().isoformat(),
        tags=args.tags,
    )
    ctx = mp.get_context("spawn")
    servers, procs = [], []
    per = args.tags // args.servers
    for k in range(args.servers):
        parent, child = ctx.Pipe()
        port, first = free_port(), k * per
        n = per if k < args.servers - 1 else args.tags - first
        proc = ctx.Process(
            target=serve, args=(port, first, n, args.stock_server, child), daemon=True
        )
        proc.start()
        servers.append((port, first, n, parent))
        procs.append(proc)
    try:
        builds = [conn.recv()[1] for *_, conn in servers]
        emit("server_build", max(builds), "s", nodes=args.tags, servers=args.servers)
        asyncio.run(bench(args, servers))
    finally:
        for *_, conn in servers:
            with contextlib.suppress(OSError):
                conn.send(("stop",))
        for proc in procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.terminate()


if __name__ == "__main__":
    sys.exit(main())
