"""Redundant pair benchmark: the state stores on PostgreSQL against DuckDB, failover time, and
the alarm flood the pair journals.

Run: .venv/bin/python bench/pair.py [--kills 20] [--flood-seconds 20]
Needs Debian's PostgreSQL (started here in a temporary cluster, fsync on). Prints JSON lines:
- audit appends/s and journal writes/s, one per transaction and in batches of 100, on
  PostgreSQL and on a DuckDB file of the same machine (the peer), and their ratio;
- failover: two `beffroi run --node` processes on one OPC UA plant; the active one is killed
  with SIGKILL `--kills` times (the killed one restarted as the standby each time); the time
  from the kill to the other holding the lease and reporting itself active, p50/p99
  (target p99 < 10 s) with the default lease (5 s, renewed every second);
- alarm flood: every cabinet's fault toggled every second; transitions journaled per second
  by the pair's active node, against those offered.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from beffroi.alerts.journal import Journal  # noqa: E402
from beffroi.alerts.state import AlarmEvent, AlarmState  # noqa: E402
from beffroi.app.config import load_config  # noqa: E402
from beffroi.control.audit import AuditLog  # noqa: E402
from beffroi.core.register import build_register  # noqa: E402
from beffroi.state.config import PgPlace  # noqa: E402
from tests.conftest import free_port  # noqa: E402
from tests.servers import OpcUaPlant  # noqa: E402
from tests.servers_db import PostgresServer  # noqa: E402
from tests.test_pair import TOKEN, Pg, _config, _node  # noqa: E402

CABINET = "streetlight_cabinet"


def emit(name: str, value: float, unit: str, **extra) -> None:
    """Print one figure as a JSON line."""
    row = {"bench": "pair", "figure": name, "value": round(value, 4), "unit": unit, **extra}
    print(json.dumps(row), flush=True)


def _event(i: int) -> AlarmEvent:
    return AlarmEvent(
        ts=datetime.now(UTC), alarm_id=f"dijon/LC-{i % 500:04d}/fault#cabinet-fault",
        rule="cabinet-fault", kind="discrete", event="activate",
        state=AlarmState("unack_active"), tag=f"dijon/LC-{i % 500:04d}/fault",
        asset=f"LC-{i % 500:04d}", commune="dijon", domain="lighting", severity=3, level="",
        value=1.0, limit=None, user="", comment="", active=True, acked=False,
        shelved_until=None, oneshot=False, since=None, message="Cabinet fault",
    )  # fmt: skip


def _timed(n: int, run) -> float:  # type: ignore[no-untyped-def]
    """Return n divided by the seconds run() takes."""
    t0 = time.perf_counter()
    run()
    return n / (time.perf_counter() - t0)


def _rates(where, n: int) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Time audit appends and journal writes on one back end (`where` names each store)."""
    audit = AuditLog(where("audit"))
    batch = [("bench", "operate", f"t{i}", "dijon", "sent", {"v": i}) for i in range(100)]

    def appends() -> None:
        for i in range(n):
            audit.record("bench", "operate", target=f"t{i}")

    def batched() -> None:
        for _ in range(n // 100):
            audit.record_many(batch)

    out = {"audit_appends": _timed(n, appends), "audit_batched": _timed(n, batched)}
    assert audit.verify(anchor=False).ok
    audit.close()
    journal = Journal(where("journal"))
    events = [_event(i) for i in range(100)]

    def writes() -> None:
        for i in range(n):
            journal.write([_event(i)])

    def written() -> None:
        for _ in range(n // 100):
            journal.write(events)

    out |= {"journal_writes": _timed(n, writes), "journal_batched": _timed(n, written)}
    journal.close()
    return out


def stores(pg: PostgresServer, folder: Path, n: int) -> None:
    """Audit appends and journal writes per second, PostgreSQL against DuckDB."""
    url = pg.create_database("stores")
    figures = {
        "duckdb": _rates(lambda s: folder / f"{s}.duckdb", n),
        "postgres": _rates(lambda s: PgPlace(url, s), n),
    }
    for figure, unit in (("audit_appends", "records/s (one per transaction)"),
                         ("audit_batched", "records/s (100 per transaction)"),
                         ("journal_writes", "events/s (one per transaction)"),
                         ("journal_batched", "events/s (100 per transaction)")):  # fmt: skip
        pg_value, duck = figures["postgres"][figure], figures["duckdb"][figure]
        emit(f"{figure}_postgres", pg_value, unit, peer_duckdb=round(duck, 1),
             ratio_vs_duckdb=round(pg_value / duck, 3))  # fmt: skip


async def failover(pg: PostgresServer, folder: Path, kills: int, flood_s: float) -> None:
    """Kill the active node `kills` times; then flood the pair with alarm transitions."""
    url = pg.create_database("pair")
    cfg = load_config(ROOT / "config.toml")
    register = build_register(cfg, assets=1000)
    cabinets = [a for a in register.assets.values() if a.asset_class == CABINET]
    plant = OpcUaPlant(free_port(), [t for a in register.assets.values() for t in a.tags])
    await plant.start()
    config = _config(folder / "pair.toml", plant, None, assets=1000, lease_s=5.0, renew_s=1.0)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "BEFFROI_STATE_URL": url,
           "BEFFROI_PAIR_TOKEN": TOKEN, "BEFFROI_SESSION_SECRET": "s" * 32,
           "BEFFROI_FIELD_LINK_SECRET": "f" * 32}  # fmt: skip
    db = Pg(url)
    procs: dict[str, asyncio.subprocess.Process] = {}

    async def until(predicate, within: float) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + within
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError("the pair did not get there in time")
            await asyncio.sleep(0.05)

    async def start(node: str) -> None:
        procs[node] = await _node(config, node, folder, env, free_port())

    try:
        await start("a")
        await until(lambda: db.holder() == "a", 60)
        await start("b")
        await until(lambda: db.role("b") == "standby", 60)
        times = []
        for _ in range(kills):
            active = db.holder()
            other = "b" if active == "a" else "a"
            await until(lambda o=other: db.role(o) == "standby", 60)
            await asyncio.sleep(2)  # the standby warm: live values and journal followed
            procs[active].send_signal(signal.SIGKILL)
            killed = time.monotonic()
            await procs[active].wait()
            await until(lambda o=other: db.holder() == o and db.role(o) == "active", 30)
            times.append(time.monotonic() - killed)
            await start(active)  # back as the standby
        emit("failover_p50", float(np.percentile(times, 50)), "s", kills=kills,
             lease_s=5.0, renew_s=1.0)  # fmt: skip
        emit("failover_p99", float(np.percentile(times, 99)), "s", target="< 10 s",
             max=round(max(times), 2))  # fmt: skip
        # The flood: every cabinet's fault toggled every second.
        await until(lambda: all(db.role(n) in ("active", "standby") for n in procs), 60)
        before = db.rows("SELECT count(*) FROM journal.alarm_events")[0][0]
        t0, offered, on = time.monotonic(), 0, True
        while time.monotonic() - t0 < flood_s:
            tick = time.monotonic()
            await asyncio.gather(*(plant.set(c.tag("fault"), on) for c in cabinets))
            offered += len(cabinets)
            on = not on
            await asyncio.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))
        await asyncio.sleep(5)  # what the last second offered reaches the journal
        after = db.rows("SELECT count(*) FROM journal.alarm_events")[0][0]
        journaled = after - before
        emit("alarm_flood_journaled", journaled / flood_s, "transitions/s",
             offered_per_s=round(offered / flood_s, 1), journaled=journaled, offered=offered,
             cabinets=len(cabinets))  # fmt: skip
    finally:
        for p in procs.values():
            if p.returncode is None:
                p.kill()
                await p.wait()
        await plant.stop()


def main() -> None:
    """Run the benchmark and print its figures."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--flood-seconds", type=float, default=20.0)
    ap.add_argument("--store-ops", type=int, default=2000)
    args = ap.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="beffroi-bench-pair-"))
    pg = PostgresServer(Path(tempfile.mkdtemp(prefix="beffroi-bench-pg-")), durable=True)
    pg.start()
    try:
        stores(pg, folder, args.store_ops)
        asyncio.run(failover(pg, folder, args.kills, args.flood_seconds))
    finally:
        pg.stop()


if __name__ == "__main__":
    main()
