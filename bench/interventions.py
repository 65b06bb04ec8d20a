"""Interventions page benchmark: the data of one refresh with 5,000 open work orders and 500
reports waiting for triage.

Run: .venv/bin/python bench/interventions.py [--open 5000] [--closed 20000] [--reports 500]
     [--runs 20] [--no-postgres]
Prints one JSON line per figure.

The store is filled as a year of use leaves it: `--open` open interventions (new, assigned, en
route, on site) and `--closed` done or cancelled ones over the demo register's communes, each
with 0–3 linked alarms, a fifth with reports already triaged; then `--reports` new residents'
reports through `InterventionService.report` (matched to nearby assets, duplicates found), as
the public page sends them (`report_in_ms`). Then, `--runs` times each, what the page's
refresh builds (`intervention_views.triage_data`: the store's two queries and the rows of the
triage list and of the grid, plus the JSON the browser gets):
- `page_data_metropolis_ms`: a metropolis-wide supervisor (every commune), p50 and p95, with
  the queries' and the views' shares (p50) and the payload's size;
- `page_data_commune_ms`: a user of one commune (Dijon, the largest);
- `page_data_all_ms`: the metropolis with closed ones too ("Toutes": the store's 10,000 cap).
On a DuckDB file, then with `[state] backend = "postgres"` (Debian's PostgreSQL started here in
a temporary cluster, fsync on) unless `--no-postgres` or it is not installed.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.servers_db: the PostgreSQL cluster of the tests

from beffroi.app.config import Config, load_config  # noqa: E402
from beffroi.core.model import naive_utc, utcnow  # noqa: E402
from beffroi.core.register import Register, build_register  # noqa: E402
from beffroi.hmi.intervention_views import (  # noqa: E402
    intervention_rows,
    report_rows,
    triage_data,
)
from beffroi.interventions.model import CATEGORIES, ORDER, State  # noqa: E402
from beffroi.interventions.service import InterventionService  # noqa: E402
from beffroi.interventions.store import InterventionStore  # noqa: E402
from beffroi.state.config import PgPlace, Place  # noqa: E402

OPEN = (State.NEW, State.ASSIGNED, State.EN_ROUTE, State.ON_SITE)
TIMES = {
    State.ASSIGNED: "assigned_at",
    State.EN_ROUTE: "en_route_at",
    State.ON_SITE: "on_site_at",
    State.DONE: "done_at",
    State.CANCELLED: "cancelled_at",
}
STREETS = ("rue de la Liberté", "avenue Jean Jaurès", "boulevard Carnot", "place Darcy",
           "rue d'Auxonne", "Grande Rue", "route de Beaune", "rue des Écoles")  # fmt: skip


def emit(name: str, value: float, unit: str, **extra: object) -> None:
    """Print one figure as a JSON line."""
    row = {"bench": "interventions", "figure": name, "value": round(value, 2), "unit": unit}
    print(json.dumps(row | extra), flush=True)


def percentiles(times: Sequence[float]) -> tuple[float, float]:
    """Return the p50 and p95 of durations in seconds, in milliseconds."""
    p50, p95 = np.percentile(np.asarray(times) * 1000, [50, 95])
    return float(p50), float(p95)


def _interventions(register: Register, teams: list[str], n_open: int, n_closed: int,
                   rng: random.Random) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Return interventions as the store keeps them and their alarm links."""
    assets = sorted(register.assets.values(), key=lambda a: a.id)
    now = naive_utc(utcnow())
    rows: list[dict[str, Any]] = []
    links: list[tuple[int, str, str, datetime]] = []
    for i in range(n_open + n_closed):
        a = rng.choice(assets)
        state = rng.choice(OPEN) if i < n_open else rng.choice((State.DONE, State.CANCELLED))
        created = now - timedelta(days=rng.uniform(0, 30 if i < n_open else 365))
        row: dict[str, Any] = {
            "id": i + 1, "created": created, "title": f"Défaut {a.asset_class} — {a.id}",
            "commune": a.commune, "domain": a.domain, "lat": a.lat, "lon": a.lon,
            "assets": a.id, "priority": rng.randint(1, 4),
            "team": "" if state is State.NEW else rng.choice(teams), "state": str(state),
            "origin": rng.choice(("alarm", "operator", "report")), "updated": created,
            "merged_into": None,
        }  # fmt: skip
        # The states it went through: forward one by one; a cancelled one once assigned.
        if state is State.CANCELLED:
            path = [State.ASSIGNED, State.CANCELLED]
        else:
            path = list(ORDER[1 : ORDER.index(state) + 1])
        at = created
        for s, column in TIMES.items():
            if s in path:
                at += timedelta(minutes=rng.uniform(5, 120))
            row[column] = at if s in path else None
        if state is not State.NEW:
            row["team"] = row["team"] or rng.choice(teams)
        rows.append(row)
        for tag in a.tags[: rng.randint(0, 3)]:
            links.append((i + 1, "alarm", f"{tag.name}#fault", created))
    frame = pd.DataFrame(rows)
    frame["merged_into"] = pd.array(frame["merged_into"], dtype="Int64")
    for column in TIMES.values():
        frame[column] = pd.to_datetime(frame[column]).astype("datetime64[us]")
    link_frame = pd.DataFrame(links, columns=["intervention", "kind", "ref", "linked"])
    return frame, link_frame


def _triaged(frame: pd.DataFrame, rng: random.Random) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Return reports already taken into a fifth of the interventions, and their links."""
    rows, links = [], []
    for iv in frame.sample(frac=0.2, random_state=rng.randint(0, 1 << 30)).itertuples():
        for _ in range(rng.randint(1, 2)):
            rid = len(rows) + 1
            closed = iv.state in ("done", "cancelled")
            rows.append(
                {
                    "id": rid, "created": iv.created, "category": "other",
                    "commune": iv.commune, "lat": iv.lat, "lon": iv.lon,
                    "address": f"{rng.randint(1, 90)} {rng.choice(STREETS)}",
                    "text": "Signalé par un habitant", "state": "closed" if closed else "linked",
                    "intervention": iv.id, "duplicate_of": None,
                    "matches": json.dumps({"assets": [iv.assets], "alarms": []}),
                    "closed_at": iv.updated if closed else None, "wants_news": False,
                    "told_at": None,
                }
            )  # fmt: skip
            links.append((iv.id, "report", str(rid), iv.created))
    reports = pd.DataFrame(rows)
    for column in ("duplicate_of",):
        reports[column] = pd.array(reports[column], dtype="Int64")
    for column in ("closed_at", "told_at"):
        reports[column] = pd.to_datetime(reports[column]).astype("datetime64[us]")
    return reports, pd.DataFrame(links, columns=["intervention", "kind", "ref", "linked"])


def fill(service: InterventionService, register: Register, n_open: int, n_closed: int,
         n_reports: int) -> list[float]:  # fmt: skip
    """Fill the store; return the seconds each new report took through the service."""
    rng = random.Random(18)
    db = service.store.db
    frame, alarm_links = _interventions(register, list(service.teams), n_open, n_closed, rng)
    triaged, report_links = _triaged(frame, rng)
    with db.transaction():
        db.run("INSERT INTO interventions SELECT * FROM iv_rows", views={"iv_rows": frame})
        links = pd.concat([alarm_links, report_links], ignore_index=True)
        db.run("INSERT INTO intervention_links SELECT * FROM iv_links", views={"iv_links": links})
        db.run("INSERT INTO reports SELECT * FROM iv_reports", views={"iv_reports": triaged})
    assets = sorted(register.assets.values(), key=lambda a: a.id)
    categories = sorted(CATEGORIES)
    took = []
    for i in range(n_reports):
        a = rng.choice(assets)
        t0 = time.perf_counter()
        service.report(
            rng.choice(categories), a.lat + rng.gauss(0, 0.0005), a.lon + rng.gauss(0, 0.0007),
            f"Problème constaté n° {i}", address=f"{rng.randint(1, 90)} {rng.choice(STREETS)}",
            email=f"habitant{i}@example.org" if i % 3 == 0 else "", consent=i % 3 == 0,
        )  # fmt: skip
        took.append(time.perf_counter() - t0)
    return took


def timed(runs: int, fn: Callable[[], Any]) -> tuple[list[float], Any]:
    """Run fn `runs` times (after one warm-up); return each duration and the last result."""
    result = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def page_bytes(
    service: InterventionService, scope: list[str] | None, names: dict[str, str], open_only: bool
) -> int:
    """Build what the refresh callback builds and the JSON it sends; return its bytes."""
    reports, grid = triage_data(service, scope, names, open_only=open_only)
    return len(json.dumps(reports)) + len(json.dumps(grid))


def queries(
    service: InterventionService, scope: list[str] | None, open_only: bool
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Run the store's two queries only."""
    return service.reports(communes=scope), service.table(communes=scope, open_only=open_only)


def views(
    reports: pd.DataFrame, table: pd.DataFrame, names: dict[str, str], allowed: set[str] | None
) -> int:
    """Build the rows only, from the queries' answers; return how many."""
    triage = report_rows(reports, names, lambda c: allowed is None or c in allowed)
    return len(triage) + len(intervention_rows(table, names))


def measure(service: InterventionService, register: Register, backend: str, runs: int) -> None:
    """Time one refresh's data for the three kinds of view; print the figures."""
    names = {c.id: c.name for c in register.communes.values()}
    largest = max(register.communes.values(), key=lambda c: c.population).id
    for figure, scope, open_only in (
        ("page_data_metropolis_ms", None, True),
        ("page_data_commune_ms", [largest], True),
        ("page_data_all_ms", None, False),
    ):
        allowed = None if scope is None else set(scope)
        times, size = timed(runs, partial(page_bytes, service, scope, names, open_only))
        query_times, (reports, table) = timed(runs, partial(queries, service, scope, open_only))
        view_times, _ = timed(runs, partial(views, reports, table, names, allowed))
        p50, p95 = percentiles(times)
        shown = reports if allowed is None else reports[reports["commune"].isin(allowed)]
        emit(
            figure, p50, "ms", p95=round(p95, 2), backend=backend, runs=runs,
            queries_p50_ms=round(percentiles(query_times)[0], 2),
            views_p50_ms=round(percentiles(view_times)[0], 2), grid_rows=len(table),
            triage_rows=len(shown), payload_kb=round(size / 1024, 1),
            commune=largest if scope else "*",
        )  # fmt: skip


def run_on(cfg: Config, place: Place, backend: str, args: argparse.Namespace) -> None:
    """Fill a store at `place` and measure the page's data on it."""
    register = build_register(cfg)
    store = InterventionStore(place)
    try:
        service = InterventionService(cfg, register, store, b"bench-secret" * 3)
        t0 = time.perf_counter()
        took = fill(service, register, args.open, args.closed, args.reports)
        p50, p95 = percentiles(took)
        emit("report_in_ms", p50, "ms", p95=round(p95, 2), backend=backend, reports=len(took),
             fill_s=round(time.perf_counter() - t0, 1))  # fmt: skip
        measure(service, register, backend, args.runs)
    finally:
        store.close()


def main() -> None:
    """Run every figure on DuckDB, then on PostgreSQL when it is there."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--open", type=int, default=5000)
    ap.add_argument("--closed", type=int, default=20_000)
    ap.add_argument("--reports", type=int, default=500)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--no-postgres", action="store_true")
    args = ap.parse_args()
    cfg = load_config(ROOT / "config.toml")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        run_on(cfg, folder / "interventions.duckdb", "duckdb", args)
        if args.no_postgres:
            return
        from tests.servers_db import POSTGRES, PostgresServer

        if not POSTGRES.is_file():
            emit("postgres_skipped", 0, "", reason=f"{POSTGRES} is not installed")
            return
        # Its own folder: as root, the cluster belongs to `postgres`, who cannot enter `tmp`.
        pg_root = Path(tempfile.mkdtemp(prefix="beffroi-bench-pg-"))
        pg = PostgresServer(pg_root, durable=True)
        pg.start()
        try:
            url = pg.create_database("interventions")
            run_on(cfg, PgPlace(url, "interventions"), "postgres", args)
        finally:
            pg.stop()
            shutil.rmtree(pg_root, ignore_errors=True)


if __name__ == "__main__":
    main()
