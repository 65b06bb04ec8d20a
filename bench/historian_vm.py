"""VictoriaMetrics as the historian benchmark's peer: start it, write through influxdb-client's
/api/v2/write, query a trend and a daily energy, measure its bytes on disk.

Layout: one series per tag, `beffroi_value{tag="<commune/asset/signal>"}` (line protocol
`beffroi,tag=<tag> value=<v> <ms>`); VictoriaMetrics keeps milliseconds.
"""

from __future__ import annotations

import json
import math
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS

BINARY = "/usr/bin/victoria-metrics"
LINES_PER_REQUEST = 50_000
METRIC = "beffroi_value"
_TAG_ESCAPES = str.maketrans({" ": "\\ ", ",": "\\,", "=": "\\="})


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, data: dict | None = None, timeout: float = 600) -> bytes:
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    with urllib.request.urlopen(url, data=body, timeout=timeout) as resp:
        return resp.read()


def start_victoria_metrics(folder: str | Path) -> tuple[str, Callable[[], None]]:
    """Start VictoriaMetrics on a free port with its data in folder; return (url, stop)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = (folder / "victoria-metrics.log").open("ab")
    proc = subprocess.Popen(
        [
            BINARY,
            f"-httpListenAddr=127.0.0.1:{port}",
            f"-storageDataPath={folder / 'data'}",
            "-retentionPeriod=100y",  # the default (1 month) drops samples with older times
            "-search.disableCache",  # repeated queries must not be answered from a result cache
            "-search.maxQueryLen=16MB",  # a daily energy over thousands of named tags
            "-loggerLevel=WARN",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if _get(url + "/health", timeout=1).strip() == b"OK":
                break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"victoria-metrics did not start; see {folder}/victoria-metrics.log")
        time.sleep(0.05)

    def stop() -> None:
        _STOPS.pop(folder.resolve(), None)
        if proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    _STOPS[folder.resolve()] = stop
    return url, stop


_STOPS: dict[Path, Callable[[], None]] = {}


def _flush(url: str) -> None:
    """Make buffered samples searchable and write them to disk."""
    _get(url + "/internal/force_flush")


def write_vm(
    url: str,
    names: Sequence[str],
    idx: np.ndarray,
    ts_us: np.ndarray,
    values: np.ndarray,
    workers: int = 2,
) -> dict:
    """Write columns (tag index into names, µs timestamps, values) through /api/v2/write.

    Lines are encoded, then sent in batches by `workers` threads; returns the points, the
    seconds spent encoding and sending, and points per second over both.
    """
    began = time.perf_counter()
    heads = [f"beffroi,tag={n.translate(_TAG_ESCAPES)} value=" for n in names]
    ms = (np.asarray(ts_us, dtype=np.int64) // 1000).tolist()
    vals = np.asarray(values, dtype=np.float64).tolist()
    lines = [f"{heads[i]}{v!r} {t}" for i, v, t in zip(idx.tolist(), vals, ms, strict=True)]
    batches = [
        "\n".join(lines[i : i + LINES_PER_REQUEST]).encode()
        for i in range(0, len(lines), LINES_PER_REQUEST)
    ]
    encoded = time.perf_counter()
    with InfluxDBClient(url=url, token="-", org="-", timeout=120_000) as client:
        api = client.write_api(write_options=SYNCHRONOUS)

        def send(body: bytes) -> None:
            api.write("beffroi", record=body, write_precision=WritePrecision.MS)

        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(send, batches))
    _flush(url)
    done = time.perf_counter()
    return {
        "points": len(lines),
        "encode_s": encoded - began,
        "send_s": done - encoded,
        "points_per_s": len(lines) / (done - began),
    }


def query_vm_trend(
    url: str, tag: str, start: datetime, end: datetime, max_points: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return (unix seconds, values) of one tag: min and max per step, ≤ max_points in all.

    The same idea as MinMax downsampling (each step keeps its extremes), done by
    VictoriaMetrics' min_over_time / max_over_time; steps are 2x wider to fit both.
    """
    step = max(1, math.ceil(2 * (end - start).total_seconds() / max_points))
    sel = f'{METRIC}{{tag="{tag}"}}[{step}s]'
    query = (
        f'label_set(min_over_time({sel}), "agg", "min") or '
        f'label_set(max_over_time({sel}), "agg", "max")'
    )
    params = {
        "query": query,
        "start": f"{start.timestamp() + step:.3f}",  # each point covers the step before it
        "end": f"{end.timestamp():.3f}",
        "step": f"{step}s",
    }
    answer = json.loads(_get(url + "/api/v1/query_range", params))
    ts, vs = [], []
    for series in answer["data"]["result"]:
        for t, v in series["values"]:
            ts.append(float(t))
            vs.append(float(v))
    order = np.argsort(ts, kind="stable")
    return np.asarray(ts)[order], np.asarray(vs)[order]


def query_vm_daily_energy(url: str, tags: Sequence[str], day: datetime) -> dict[str, float]:
    """Return each tag's integral over [day, day + 24 h) in value·hours (kW → kWh).

    VictoriaMetrics' integrate() holds each value until the next sample (and the last one
    until the window's end), so its figures differ slightly from the contract's trapezoids
    between samples; the work is the same. The window is (t - 1d, t]: it is evaluated 1 ms
    before the day's end so that the next day's first sample stays out.
    """
    alternatives = "|".join(_regex_literal(t) for t in tags)
    end = (day + timedelta(days=1)).timestamp() - 0.001
    query = f'integrate({METRIC}{{tag=~"{alternatives}"}}[1d])'
    answer = json.loads(_get(url + "/api/v1/query", {"query": query, "time": f"{end:.3f}"}))
    return {r["metric"]["tag"]: float(r["value"][1]) / 3600 for r in answer["data"]["result"]}


def _regex_literal(text: str) -> str:
    """Escape a tag for a regex inside a MetricsQL string (backslashes doubled)."""
    special = set(".^$*+?()[]{}|\\")
    return "".join("\\\\" + c if c in special else c for c in text).replace('"', '\\"')


def vm_bytes_on_disk(folder: str | Path) -> int:
    """Return the bytes of VictoriaMetrics' data and index under folder.

    Stops the server first if it is still running: /internal/force_flush makes samples
    searchable but leaves recent parts in memory (0.2 against 1.5 bytes per point measured
    on the benchmark's data); only a clean shutdown writes everything. Counts `data/` and
    `indexdb/`; leaves out `cache/`, caches saved at shutdown and rebuilt at start.
    """
    folder = Path(folder)
    stop = _STOPS.get(folder.resolve())
    if stop is not None:
        stop()
    total = 0
    for part in ("data", "indexdb"):
        for f in (folder / "data" / part).rglob("*"):
            if f.is_file():
                total += f.stat().st_size
    return total
