"""Historian benchmark: the embedded back end, and VictoriaMetrics as a peer, on the same data.

Run: .venv/bin/python bench/historian.py [--tags 10000] [--days 30] [--step-s 300]
Prints one JSON line per figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from beffroi.historian.duckdb.historian import DuckDBHistorian

DAY = timedelta(days=1)


def emit(name: str, value: float, unit: str, **extra) -> None:
    """Print one figure as a JSON line."""
    print(
        json.dumps(
            {"bench": "historian", "figure": name, "value": round(value, 4), "unit": unit, **extra}
        ),
        flush=True,
    )


def make_tags(n: int) -> tuple[list[str], np.ndarray]:
    """Return tag names and their shape: 0 analog power, 1 step state, 2 energy counter."""
    names, shapes = [], []
    for i in range(n):
        shape = 0 if i % 5 < 3 else (1 if i % 5 == 3 else 2)
        signal = ("power_kw", "lit", "energy_kwh")[shape]
        names.append(f"c{i % 24:02d}/A-{i:05d}/{signal}")
        shapes.append(shape)
    return names, np.array(shapes)


def day_columns(
    shapes: np.ndarray, day0: datetime, step_s: int, rng: np.random.Generator, state: np.ndarray
):
    """Generate one day of samples for every tag: slow drifts with noise, steps, counters."""
    n_tags = len(shapes)
    per_day = 86_400 // step_s
    t_us = int(day0.timestamp() * 1_000_000) + np.arange(per_day, dtype=np.int64) * step_s * 10**6
    ts = np.tile(t_us, n_tags)
    idx = np.repeat(np.arange(n_tags, dtype=np.int32), per_day)
    hours = (np.arange(per_day) * step_s / 3600.0)[None, :]
    night = ((hours < 7) | (hours > 19)).astype(float)
    drift = np.cumsum(rng.normal(0, 0.02, (n_tags, per_day)), axis=1)
    values = np.empty((n_tags, per_day))
    analog = shapes == 0
    values[analog] = 5 + 3 * night + drift[analog] + rng.normal(0, 0.05, (analog.sum(), per_day))
    steps = shapes == 1
    values[steps] = np.broadcast_to(night, (steps.sum(), per_day))
    counters = shapes == 2
    inc = np.abs(rng.normal(0.4, 0.1, (counters.sum(), per_day)))
    values[counters] = state[counters, None] + np.cumsum(inc, axis=1)
    state[counters] = values[counters, -1]
    return idx, ts, np.round(values.ravel(), 3)


def bench_embedded(args, names, shapes, folder: Path) -> dict:
    h = DuckDBHistorian(folder / "bench.duckdb")
    rng = np.random.default_rng(42)
    state = np.zeros(len(names))
    start = datetime(2026, 1, 1, tzinfo=UTC)
    points = 0
    t_ingest = t_compact = 0.0
    for d in range(args.days):
        idx, ts, values = day_columns(shapes, start + d * DAY, args.step_s, rng, state)
        t = time.perf_counter()
        h.write_columns(names, idx, ts, values)
        t_ingest += time.perf_counter() - t
        t = time.perf_counter()
        h.compact()
        t_compact += time.perf_counter() - t
        points += len(ts)
    emit(
        "embedded_ingest_points_per_s",
        points / t_ingest,
        "points/s",
        points=points,
        target=">= 1,000,000",
    )
    emit("embedded_compaction_points_per_s", points / t_compact, "points/s")
    emit(
        "embedded_sustained_points_per_s",
        points / (t_ingest + t_compact),
        "points/s",
        note="ingest + compaction + sealing",
    )
    h._con.execute("CHECKPOINT")
    size = (folder / "bench.duckdb").stat().st_size
    block, used = h._con.execute(
        "SELECT block_size, used_blocks FROM pragma_database_size()"
    ).fetchall()[0]
    emit(
        "embedded_bytes_per_point",
        size / points,
        "bytes",
        file_bytes=size,
        target="<= 3",
        note="whole file: sealed blocks, open day, statistics, tag dictionary, free blocks",
    )
    emit("embedded_bytes_per_point_used_blocks", block * used / points, "bytes")
    if args.breakdown:
        for table, column, nbytes, compression in storage_breakdown(h._con, block):
            emit(
                "embedded_bytes_per_point_by_column",
                nbytes / points,
                "bytes",
                table=table,
                column=column,
                compression=compression,
            )

    end = start + args.days * DAY
    analog = [names[i] for i in range(len(names)) if shapes[i] == 0]
    pick = np.random.default_rng(7).choice(len(analog), size=50, replace=False)
    lat = []
    for i in pick:
        t = time.perf_counter()
        df = h.query([analog[i]], start, end, max_points=2000)
        lat.append((time.perf_counter() - t) * 1000)
        assert 0 < len(df) <= 2000
    emit(
        "embedded_trend_30d_2000pts_p50_ms",
        statistics.median(lat),
        "ms",
        p95=round(sorted(lat)[int(0.95 * len(lat))], 2),
        tags=len(names),
        target="< 30",
    )

    day = start + (args.days - 2) * DAY
    t = time.perf_counter()
    df = h.query(analog, day, day + DAY, every=DAY, agg="integral")
    emit(
        "embedded_daily_energy_all_tags_s",
        time.perf_counter() - t,
        "s",
        tags=len(analog),
        rows=len(df),
        path="sealed days' statistics",
        target="< 1",
    )
    t = time.perf_counter()
    df = h.query(analog, day, day + DAY, every=timedelta(hours=1), agg="integral")
    emit(
        "embedded_hourly_energy_all_tags_s",
        time.perf_counter() - t,
        "s",
        tags=len(analog),
        rows=len(df),
        path="raw samples (blocks decoded)",
    )
    h.close()
    return {"points": points, "ingest_s": t_ingest, "bytes": size}


def storage_breakdown(con, block_size: int) -> list[tuple[str, str, int, str]]:
    """Return (table, column, bytes, compression) from DuckDB's segment list.

    A segment's size is the distance to the next one in its block (the last one up to the
    block's end), so the unused tail of a partly filled block is counted with its last segment.
    """
    tables = [r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()]
    segs = []
    for t in tables:
        rows = con.execute(
            "SELECT column_name, block_id, block_offset, compression, "
            "len(additional_block_ids) FROM pragma_storage_info(?) WHERE persistent",
            [t],
        ).fetchall()
        segs += [(t, *r) for r in rows]
    segs.sort(key=lambda r: (r[2], r[3]))
    out: dict[tuple[str, str], list] = {}
    for i, (t, col, blk, off, comp, extra) in enumerate(segs):
        nxt = segs[i + 1] if i + 1 < len(segs) else None
        end = nxt[3] if nxt is not None and nxt[2] == blk else block_size
        entry = out.setdefault((t, col), [0, set()])
        entry[0] += end - off + extra * block_size
        entry[1].add(comp)
    return [(t, c, n, "/".join(sorted(comp))) for (t, c), (n, comp) in sorted(out.items())]


def bench_peer(args, names, shapes, folder: Path, embedded: dict) -> None:
    """Write the first day to VictoriaMetrics through /api/v2/write and compare."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        import historian_vm as vm
    except ImportError as exc:
        emit("peer_skipped", 0, "", reason=f"historian_vm unavailable: {exc}")
        return
    rng = np.random.default_rng(42)
    idx, ts, values = day_columns(
        shapes, datetime(2026, 1, 1, tzinfo=UTC), args.step_s, rng, np.zeros(len(names))
    )
    url, stop = vm.start_victoria_metrics(folder / "vm")
    try:
        t = time.perf_counter()
        vm.write_vm(url, names, idx, ts, values)
        elapsed = time.perf_counter() - t
        rate = len(ts) / elapsed
        emb_rate = embedded["points"] / embedded["ingest_s"]
        emit(
            "vm_ingest_points_per_s",
            rate,
            "points/s",
            points=len(ts),
            path="influxdb-client /api/v2/write",
        )
        emit("ingest_ratio_embedded_vs_vm", emb_rate / rate, "x", target="> 1")
        vm_bytes = vm.vm_bytes_on_disk(folder / "vm")
        emit("vm_bytes_per_point", vm_bytes / len(ts), "bytes", points=len(ts))
    finally:
        stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tags", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--step-s", type=int, default=300)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument(
        "--breakdown", action="store_true", help="bytes per point of every table and column"
    )
    args = parser.parse_args()
    names, shapes = make_tags(args.tags)
    with tempfile.TemporaryDirectory(prefix="beffroi-bench-") as tmp:
        folder = Path(tmp)
        embedded = bench_embedded(args, names, shapes, folder)
        if not args.no_peer:
            bench_peer(args, names, shapes, folder, embedded)
    emit(
        "peak_memory_mb",
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "MB",
        cpus=os.cpu_count(),
    )


if __name__ == "__main__":
    main()
