"""Nothing lost: the durable spool, the write buffer's fallback to it, and a killed writer."""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import subprocess
import sys
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.ipc as ipc
import pytest

from beffroi.core.model import Quality, Sample
from beffroi.historian.buffer import DROPPED_TAG, WriteBuffer
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.historian.spool import SCHEMA, Spool
from tests.conftest import eventually

T0 = datetime(2026, 6, 1, 20, 0, tzinfo=UTC)
P = "dijon/LC-0001/power_kw"


def _batch(n: int, start: int = 0) -> list[Sample]:
    return [Sample(P, T0 + timedelta(seconds=start + i), float(start + i)) for i in range(n)]


def test_spool_survives_a_restart_with_every_kind_of_value(tmp_path: Path) -> None:
    """What was appended comes back identical from a new Spool on the same folder, in order."""
    spool = Spool(tmp_path, max_bytes=10**8)
    first = [
        Sample(P, T0, 1.5, Quality.GOOD, T0 + timedelta(milliseconds=3)),
        Sample("dijon/LC-0001/lit", T0, True),
        Sample("dijon/IP-0001/message", T0, "Travaux: déviation"),
        Sample(P, T0 + timedelta(seconds=1), float("nan"), Quality.COMM_LOSS, status=0x80310000),
    ]
    spool.append(first)
    spool.append(_batch(3, start=10))
    again = Spool(tmp_path, max_bytes=10**8)
    assert again.pending == 7
    seq, got = again.peek()
    assert [(s.tag, s.ts, s.quality, s.server_ts, s.status) for s in got] == [
        (s.tag, s.ts, s.quality, s.server_ts, s.status) for s in first
    ]
    assert got[0].value == 1.5 and got[1].value is True and got[2].value == "Travaux: déviation"
    assert math.isnan(got[3].value)
    again.remove(seq)
    assert [s.value for s in again.peek()[1]] == [10.0, 11.0, 12.0]


def test_spool_reads_segments_written_before_status_codes(tmp_path: Path) -> None:
    """A segment left by a version that did not spool status codes replays as plain Good."""
    older = pa.schema([f for f in SCHEMA if f.name != "status"])
    table = pa.table(
        [[P], [T0], [0], [1.5], [None], [0], [None]], schema=older
    )  # tag, ts, kind (float), num, text, quality, server_ts
    with ipc.new_file(tmp_path / "000000000001-1.arrow", older) as writer:
        writer.write_table(table)
    _, got = Spool(tmp_path, max_bytes=10**8).peek()
    assert [(s.tag, s.ts, s.value, s.status) for s in got] == [(P, T0, 1.5, 0)]


def test_spool_full_drops_oldest_and_counts(tmp_path: Path) -> None:
    """Past its size the spool drops its oldest segments, never the newest, and counts them."""
    spool = Spool(tmp_path, max_bytes=6_000)
    for k in range(10):
        spool.append(_batch(50, start=k * 50))
    assert spool.dropped > 0
    assert spool.pending + spool.dropped == 500
    newest = []
    while spool:
        seq, batch = spool.peek()
        newest.extend(s.value for s in batch)
        spool.remove(seq)
    assert newest[-1] == 499.0 and newest == sorted(newest)


class FlakyDuckDB(DuckDBHistorian):
    """A real DuckDB historian whose writes can be refused on demand.

    A stand-in for an unreachable back end: an embedded file cannot be taken down the way a
    server can. The outage against a real InfluxDB server is in test_historian_influx.py.
    """

    down = False

    def write(self, batch):
        if self.down:
            raise ConnectionError("back end unreachable")
        return super().write(batch)


async def test_outage_spools_then_drains_in_order_exactly_once(tmp_path: Path) -> None:
    """During an outage batches go to the spool; afterwards every sample is stored once."""
    hist = FlakyDuckDB(tmp_path / "h.duckdb")
    spool = Spool(tmp_path / "spool", max_bytes=10**8)
    buffer = WriteBuffer(hist, spool, flush_interval_s=0.05)
    async with contextlib.AsyncExitStack() as stack:
        await buffer.start(stack)
        buffer.put(_batch(100))
        await asyncio.sleep(0.2)
        hist.down = True
        for k in range(1, 6):
            buffer.put(_batch(100, start=k * 100))
            await asyncio.sleep(0.1)
        assert not buffer.backend_ok and spool.pending >= 400
        hist.down = False
        await eventually(lambda: not spool and not buffer.depth)
    df = hist.query([P], T0, T0 + timedelta(hours=1))
    assert list(df.value) == [float(i) for i in range(600)]
    assert buffer.written == 600 and buffer.dropped == 0
    hist.close()


async def test_shutdown_during_outage_leaves_samples_in_spool_for_next_start(tmp_path) -> None:
    """Samples not stored at shutdown stay on disk and reach the back end after a restart."""
    hist = FlakyDuckDB(tmp_path / "h.duckdb")
    hist.down = True
    async with contextlib.AsyncExitStack() as stack:
        buffer = WriteBuffer(hist, Spool(tmp_path / "spool", 10**8), flush_interval_s=0.05)
        await buffer.start(stack)
        buffer.put(_batch(250))
    hist.down = False
    spool = Spool(tmp_path / "spool", 10**8)
    assert spool.pending == 250
    async with contextlib.AsyncExitStack() as stack:
        buffer = WriteBuffer(hist, spool, flush_interval_s=0.05)
        await buffer.start(stack)
        await eventually(lambda: not spool)
    assert hist.count() == 250
    hist.close()


async def test_dropped_samples_are_recorded_as_a_system_tag(tmp_path: Path) -> None:
    """When the spool overflows, the count of dropped samples is itself stored."""
    hist = FlakyDuckDB(tmp_path / "h.duckdb")
    hist.down = True
    spool = Spool(tmp_path / "spool", max_bytes=5_000)
    buffer = WriteBuffer(hist, spool, flush_interval_s=0.02, max_batch=50)
    async with contextlib.AsyncExitStack() as stack:
        await buffer.start(stack)
        for k in range(10):
            buffer.put(_batch(50, start=k * 50))
            await asyncio.sleep(0.05)
        assert buffer.dropped > 0
        hist.down = False
        await eventually(lambda: not spool and not buffer.depth)
    latest = hist.latest([DROPPED_TAG])
    assert latest.value.iloc[0] == float(buffer.dropped)
    hist.close()


WRITER = textwrap.dedent(
    """
    import asyncio, contextlib, sys
    from datetime import UTC, datetime, timedelta
    from beffroi.core.model import Sample
    from beffroi.historian.buffer import WriteBuffer
    from beffroi.historian.duckdb.historian import DuckDBHistorian
    from beffroi.historian.spool import SCHEMA, Spool

    async def main(folder):
        hist = DuckDBHistorian(folder + "/h.duckdb")
        buffer = WriteBuffer(hist, Spool(folder + "/spool", 10**9), flush_interval_s=0.2)
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        async with contextlib.AsyncExitStack() as stack:
            await buffer.start(stack)
            i = 0
            while True:
                buffer.put([Sample("k/X-1/n", t0 + timedelta(milliseconds=i + j), float(i + j))
                            for j in range(100)])
                i += 100
                before = buffer.written
                await asyncio.sleep(0.05)
                if buffer.written != before:
                    print("acked", buffer.written, flush=True)

    asyncio.run(main(sys.argv[1]))
    """
)


def test_sigkilled_writer_loses_nothing_it_acknowledged(tmp_path: Path) -> None:
    """A writer killed with SIGKILL keeps every sample it reported as stored."""
    proc = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    acked = 0
    deadline = time.monotonic() + 60
    while acked < 5_000 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith("acked"):
            acked = int(line.split()[1])
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert acked >= 5_000, "the writer never acknowledged enough samples"
    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    df = hist.query(["k/X-1/n"], datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    hist.close()
    assert len(df) >= acked
    assert list(df.value[:acked]) == [float(i) for i in range(acked)]


@pytest.mark.parametrize("bad", [b"", b"not arrow at all"])
def test_a_torn_segment_from_a_crash_is_ignored(tmp_path: Path, bad: bytes) -> None:
    """A half-written temporary segment does not block the spool after a crash."""
    spool = Spool(tmp_path, 10**8)
    spool.append(_batch(5))
    (tmp_path / "000000000002-5.tmp").write_bytes(bad)
    again = Spool(tmp_path, 10**8)
    assert again.pending == 5
    assert not list(tmp_path.glob("*.tmp"))


SPOOLING_WRITER = textwrap.dedent(
    """
    import asyncio, contextlib, sys
    from datetime import UTC, datetime, timedelta
    from beffroi.core.model import Sample
    from beffroi.historian.buffer import WriteBuffer
    from beffroi.historian.influx.historian import InfluxHistorian
    from beffroi.historian.spool import SCHEMA, Spool

    async def main(url, db, folder):
        hist = InfluxHistorian(url, api="v1", database=db, register={})
        spool = Spool(folder, 10**9)
        buffer = WriteBuffer(hist, spool, flush_interval_s=0.1)
        t0 = datetime(2026, 1, 1, tzinfo=UTC)
        async with contextlib.AsyncExitStack() as stack:
            await buffer.start(stack)
            i = 0
            while True:
                buffer.put([Sample("k/X-1/n", t0 + timedelta(milliseconds=i + j), float(i + j))
                            for j in range(50)])
                i += 50
                await asyncio.sleep(0.05)
                print("spooled", spool.pending, flush=True)

    asyncio.run(main(*sys.argv[1:]))
    """
)


async def test_sigkilled_writer_spool_drains_after_restart(db_server_factory, tmp_path) -> None:
    """InfluxDB down, the writer spools and is SIGKILLed; a new writer delivers it all once."""
    from beffroi.historian.influx.historian import InfluxHistorian

    server = db_server_factory("influxd")
    db = server.create_database("city")
    await asyncio.to_thread(server.stop)
    proc = await asyncio.to_thread(
        subprocess.Popen,
        [sys.executable, "-c", SPOOLING_WRITER, server.url, db, str(tmp_path / "spool")],
        stdout=subprocess.PIPE,
        text=True,
    )

    def wait_spooled() -> int:
        n = 0
        while n < 2_000:
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("spooled"):
                n = int(line.split()[1])
        return n

    spooled = await asyncio.wait_for(asyncio.to_thread(wait_spooled), 60)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=10)
    assert spooled >= 2_000
    spool = Spool(tmp_path / "spool", 10**9)
    on_disk = spool.pending
    assert on_disk >= spooled  # acknowledged to the spool: on disk despite SIGKILL
    await asyncio.to_thread(server.start)
    hist = InfluxHistorian(server.url, api="v1", database=db, register={})
    async with contextlib.AsyncExitStack() as stack:
        buffer = WriteBuffer(hist, spool, flush_interval_s=0.05)
        await buffer.start(stack)
        await eventually(lambda: not spool, within=60)
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    df = hist.query(["k/X-1/n"], t0, t0 + timedelta(days=1))
    assert len(df) == on_disk  # every spooled sample once, no duplicates
    assert list(df.value) == [float(i) for i in range(on_disk)]
    hist.close()
