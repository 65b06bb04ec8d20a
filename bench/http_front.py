"""HTTP front benchmark: a logged-in user's answer times while slow clients hold connections.

Run: .venv/bin/python bench/http_front.py [--slow 500] [--requests 50] [--assets 5000] [--no-old]
Prints one JSON line per figure.

Three processes, as on a real network: the HMI served by waitress with the config's
[hmi.http] (this process), the slow clients (slowloris: each connection sends a header line
every second and never ends its request; cut, it connects again), and the user (logs in, then
alternates the page's layout and the map's callback, each on a new connection).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import selectors
import socket
import statistics
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PW = "bench-password-123"
TIMEOUT_S = 5.0
MAP_OUTPUTS = [
    "map-fixed.data",
    "map-fixed.hideout",
    "map-moving.data",
    "map-moving.hideout",
    "map-frame.data",
    "map-legend.children",
    "map-digest.data",
]


def emit(figure: str, value: float | int, unit: str, **extra: Any) -> None:
    """Print one figure as a JSON line."""
    line = {"bench": "http_front", "figure": figure, "value": value, "unit": unit, **extra}
    print(json.dumps(line), flush=True)


def slow_clients(port: int, count: int, sources: list[str], stop: Any, counts: Any) -> None:
    """Hold `count` connections trickling a header line a second; reconnect those cut."""
    sel = selectors.DefaultSelector()
    socks: dict[socket.socket, list[float]] = {}
    opened = 0

    def connect() -> None:
        nonlocal opened
        s = socket.socket()
        s.bind((sources[opened % len(sources)], 0))
        s.setblocking(False)
        try:
            s.connect(("127.0.0.1", port))
        except BlockingIOError:
            pass
        socks[s] = [time.monotonic() + (opened % 50) / 50, 0]
        sel.register(s, selectors.EVENT_READ)
        opened += 1

    def cut(s: socket.socket) -> None:
        sel.unregister(s)
        del socks[s]
        s.close()
        counts[0] += 1
        connect()

    for _ in range(count):
        connect()
    while not stop.is_set():
        for key, _ in sel.select(0.05):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            try:
                data = s.recv(4096)
            except OSError:
                data = b""
            if not data:
                cut(s)
        now = time.monotonic()
        for s, state in list(socks.items()):
            if state[0] > now:
                continue
            n = int(state[1])
            line = b"GET / HTTP/1.1\r\nHost: hmi\r\n" if n == 0 else b"X-Slow-%d: 1\r\n" % n
            try:
                s.send(line)
            except BlockingIOError:
                pass
            except OSError:
                cut(s)
                continue
            state[0], state[1] = now + 1.0, n + 1
    for s in socks:
        s.close()


def user(url: str, requests: int, spacing_s: float, out: Any) -> None:
    """Log in, then time the page's layout and the map's callback in turn; None = no answer."""
    times: dict[str, list[float | None]] = {"layout": [], "map_callback": []}
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    form = urllib.parse.urlencode({"username": "sup", "password": PW}).encode()
    try:
        opener.open(url + "login", data=form, timeout=TIMEOUT_S * 2).read()
    except OSError:  # not even logged in: every request counts as unanswered
        out.put({kind: [None] * requests for kind in times})
        return
    body = json.dumps(
        {
            "output": ".." + "...".join(MAP_OUTPUTS) + "..",
            "outputs": [
                dict(zip(("id", "property"), o.split("."), strict=True)) for o in MAP_OUTPUTS
            ],
            "inputs": [
                {"id": "map-interval", "property": "n_intervals", "value": 1},
                {"id": "map-commune", "property": "value", "value": None},
                {"id": "map-domain", "property": "value", "value": None},
            ],
            "changedPropIds": ["map-commune.value"],
            "state": [{"id": "map-digest", "property": "data", "value": None}],
        }
    ).encode()
    for i in range(requests * 2):
        kind = "layout" if i % 2 == 0 else "map_callback"
        if kind == "layout":
            req = urllib.request.Request(url + "_dash-layout")
        else:
            req = urllib.request.Request(
                url + "_dash-update-component",
                data=body,
                headers={"Content-Type": "application/json"},
            )
        t0 = time.perf_counter()
        try:
            with opener.open(req, timeout=TIMEOUT_S) as resp:
                resp.read()
            times[kind].append((time.perf_counter() - t0) * 1000)
        except (OSError, urllib.error.URLError):
            times[kind].append(None)
        time.sleep(spacing_s)
    out.put(times)


def percentile(values: list[float], q: float) -> float:
    """Return the q-quantile of values (nearest rank)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]


class PlainWaitress:
    """The HMI's server as it was: waitress's defaults (100 connections, select())."""

    def __init__(self, wsgi: Any) -> None:
        from waitress import create_server

        self._map: dict[int, Any] = {}
        self.server = create_server(wsgi, map=self._map, host="127.0.0.1", port=0, threads=8)
        self.url = f"http://127.0.0.1:{self.server.effective_port}/"
        self.port = int(self.server.effective_port)
        self._thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self) -> None:
        """Serve in a thread."""
        self._thread.start()

    def open(self) -> int:
        """Return the connections the server holds."""
        return len(self.server.active_channels)

    def stop(self) -> None:
        """Close every socket from the loop's thread, then the workers."""
        from waitress import wasyncore

        self.server.trigger.pull_trigger(lambda: wasyncore.close_all(self._map, ignore_all=True))
        self._thread.join(5)
        self.server.task_dispatcher.shutdown(cancel_pending=True, timeout=5)


def scenario(
    name: str,
    server: Any,
    open_now: Any,
    n_slow: int,
    requests: int,
    spacing_s: float,
    expect_held: int | None = None,
    **extra: Any,
) -> None:
    """Run the user (and the slow clients, if any) against a started server; print figures."""
    ctx = mp.get_context("spawn")
    stop, counts = ctx.Event(), ctx.Array("q", 1)
    attacker = None
    if n_slow:
        # 25 per address, under the default per-address cap: the server holds them all.
        sources = [f"127.0.0.{i}" for i in range(2, 2 + max(1, n_slow // 25))]
        attacker = ctx.Process(
            target=slow_clients, args=(server.port, n_slow, sources, stop, counts), daemon=True
        )
        attacker.start()
        end = time.monotonic() + 30
        target = n_slow * 0.95 if expect_held is None else expect_held
        while open_now() < target and time.monotonic() < end:
            time.sleep(0.2)
        time.sleep(2)  # every slow client has sent a few lines
    held: list[int] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.5):
            held.append(open_now())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out = ctx.Queue()
    t0, cpu0 = time.monotonic(), time.process_time()
    client = ctx.Process(target=user, args=(server.url, requests, spacing_s, out), daemon=True)
    client.start()
    times = out.get(timeout=requests * 2 * (TIMEOUT_S + spacing_s) + 120)
    client.join(10)
    took = time.monotonic() - t0
    # This process is the server: its CPU share, the user's requests and the slow clients.
    cpu_pct = round(100 * (time.process_time() - cpu0) / took, 1)
    sampling.set()
    sampler.join()
    stop.set()
    if attacker is not None:
        attacker.join(10)
    for kind, values in times.items():
        answered = [v for v in values if v is not None]
        stats: dict[str, Any] = {"requests": len(values), "answered": len(answered)}
        if answered:
            stats |= {
                "p50": round(percentile(answered, 0.5), 1),
                "p95": round(percentile(answered, 0.95), 1),
                "max": round(max(answered), 1),
            }
        emit(
            f"{kind}_ms",
            stats.get("p95"),
            "ms p95",
            scenario=name,
            slow_clients=n_slow,
            held_min=min(held, default=0),
            held_mean=round(statistics.fmean(held), 1) if held else 0,
            slow_cut_and_reconnected=int(counts[0]),
            seconds=round(took, 1),
            server_cpu_pct=cpu_pct,
            **stats,
            **extra,
        )


def main() -> None:
    """Build the HMI with a supervisor and live values, then run the scenarios."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--slow", type=int, default=500)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--spacing-s", type=float, default=0.2)
    parser.add_argument("--assets", type=int, default=5000)
    parser.add_argument("--no-old", action="store_true", help="skip plain waitress")
    args = parser.parse_args()

    from beffroi.app.config import demo_config, load_config
    from beffroi.core.live import LiveValues
    from beffroi.core.model import Sample, utcnow
    from beffroi.core.register import build_register
    from beffroi.historian.duckdb.historian import DuckDBHistorian
    from beffroi.hmi.app import create_app
    from beffroi.hmi.server import HmiServer
    from beffroi.hmi.users import UserStore

    with tempfile.TemporaryDirectory(prefix="beffroi-bench-front-") as tmp:
        folder = Path(tmp)
        cfg = demo_config(load_config(ROOT / "config.toml"), data=folder, port=0, opcua_port=None)
        register = build_register(cfg, assets=args.assets)
        live = LiveValues()
        now = utcnow()
        live.update(
            [
                Sample(
                    t.name, now, False if t.kind == "bool" else (1.0 if t.kind == "float" else "ok")
                )
                for t in register.tags.values()
            ]
        )
        hist = DuckDBHistorian(folder / "bench.duckdb")
        users = UserStore(folder / "users.duckdb")
        users.add("sup", PW, "supervisor", ["*"])
        app = create_app(cfg, register, live, hist, users=users)
        http = cfg.hmi.http
        try:
            server = HmiServer(app, "127.0.0.1", 0, threads=cfg.hmi.threads, http=http)
            server.start()
            try:
                limits = {
                    "max_connections": server.max_connections,
                    "max_per_address": http.max_per_address,
                    "header_timeout_s": http.header_timeout_s,
                    "assets": len(register.assets),
                }
                opened = lambda: server.stats().open  # noqa: E731
                scenario("front, idle", server, opened, 0, args.requests, args.spacing_s, **limits)
                scenario(
                    "front, slow clients",
                    server,
                    opened,
                    args.slow,
                    args.requests,
                    args.spacing_s,
                    **limits,
                )
                stats = server.stats()
                emit(
                    "front_cuts",
                    stats.header_timeouts,
                    "connections cut at the header deadline",
                    peak_open=stats.peak_open,
                    refused_per_address=stats.refused_per_address,
                    closed_for_room=stats.closed_for_room,
                )
            finally:
                server.stop()
            if not args.no_old:
                plain = PlainWaitress(app.server)
                plain.start()
                try:
                    scenario(
                        "plain waitress, slow clients",
                        plain,
                        plain.open,
                        args.slow,
                        max(1, args.requests // 10),
                        args.spacing_s,
                        expect_held=95,
                        max_connections=100,
                        assets=len(register.assets),
                    )
                finally:
                    plain.stop()
        finally:
            users.close()
            hist.close()


if __name__ == "__main__":
    main()
