"""Inventory benchmark: a city's file of 40,000 assets (200,000 tags) imported, and diffed.

Run: .venv/bin/python bench/inventory.py [--assets 40000]
Prints one JSON line per figure.

1. 40,000 assets over the demo's 24 communes, half street-lighting cabinets (6 tags each), half
   traffic controllers (4): 200,000 tags, with names, addresses, models, dates and two
   attributes, written as a CSV file; every import goes through `Inventory.import_records`
   into the demo register (1,001 generated assets) with a real `InventoryStore` (DuckDB):
   - `read_csv`, `read_geojson`: reading and checking the file (`formats.read_inventory`);
   - `import_first`: all 40,000 added (stored, applied) — the target, < 30 s;
   - `import_live`: the same into a register that the demo's alarm engine and the KPIs' record
     of assets in service follow, as in a running gateway (rules bound to every new asset);
   - `import_changes`: the same origin again with 1 % moved, 0.5 % reclassified, 1 % gone
     (retired), 1 % new;
   - `import_unchanged`: the same file once more;
   - `restart_load`: a new register and `Inventory.load()` from the store (the gateway's start);
   - `import_command`: the whole path of `beffroi inventory import` on a fresh store (read,
     check each record, rehearsal on a copy of the register listing every change, import);
   - `takeover`: a generated register of 40,000 assets taken over by a file listing them all,
     each moved and named (quadratic before 2026-12: about a minute).
2. `diff`: two 40,000-asset files read and compared as `beffroi inventory diff` does — the
   target, < 5 s.
3. `peak_rss`: the process's peak resident memory (Python, DuckDB) after each phase.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import resource
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from beffroi.alerts.engine import AlarmEngine  # noqa: E402
from beffroi.api.inventory import import_text  # noqa: E402
from beffroi.app.config import load_config  # noqa: E402
from beffroi.core.register import Register, build_register  # noqa: E402
from beffroi.inventory.diff import diff  # noqa: E402
from beffroi.inventory.formats import Format, read_inventory, write_csv, write_geojson  # noqa: E402
from beffroi.inventory.records import AssetRecord  # noqa: E402
from beffroi.inventory.service import Inventory  # noqa: E402
from beffroi.inventory.store import InventoryStore  # noqa: E402
from beffroi.kpi.in_service import InService  # noqa: E402

STREETS = ("rue de la Liberté", "avenue Jean Jaurès", "boulevard Carnot", "place Darcy",
           "rue d'Auxonne", "Grande Rue", "route de Beaune", "rue des Écoles")  # fmt: skip


def emit(name: str, value: float, unit: str, **extra: object) -> None:
    """Print one figure as a JSON line."""
    row = {"bench": "inventory", "figure": name, "value": round(value, 4), "unit": unit, **extra}
    print(json.dumps(row), flush=True)


def peak_rss_mb() -> float:
    """Return the process's peak resident memory so far (Linux: ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def city_file(register: Register, n: int, rng: random.Random) -> list[AssetRecord]:
    """Return n records: half cabinets, half traffic controllers, around the communes."""
    communes = list(register.communes.values())
    weights = [c.population**0.7 for c in communes]
    out = []
    for i in range(n):
        c = rng.choices(communes, weights)[0]
        cabinet = i % 2 == 0
        street = rng.choice(STREETS)
        out.append(
            AssetRecord(
                f"{'EP' if cabinet else 'SLT'}-{i:06d}",
                "streetlight_cabinet" if cabinet else "traffic_controller",
                c.id,
                round(c.lat + rng.gauss(0, 0.01), 6),
                round(c.lon + rng.gauss(0, 0.014), 6),
                f"{'Armoire d’éclairage' if cabinet else 'Carrefour à feux'} {street}",
                f"{rng.randint(1, 120)} {street}, 21000 {c.name}",
                rng.choice(("Hélios 4", "Hélios 6", "Axis TR-400")),
                date(rng.randint(1995, 2025), rng.randint(1, 12), rng.randint(1, 28)),
                {
                    "contrat": f"EP-{rng.randint(2019, 2025)}-{rng.randint(1, 24):02d}",
                    "puissance_kva": str(rng.choice((12, 18, 24, 36))),
                },
            )
        )
    return out


def changed(records: list[AssetRecord], rng: random.Random) -> list[AssetRecord]:
    """Return the next version of a file: 1 % moved, 0.5 % reclassified, 1 % gone, 1 % new."""
    n = len(records)
    out = []
    for i, r in enumerate(records):
        k = i % 200
        if k < 2:
            continue  # gone
        if k < 4:
            r = dataclasses.replace(r, lat=r.lat + 0.0002, lon=r.lon - 0.0002)
        elif k == 4:
            r = dataclasses.replace(r, asset_class="camera")
        out.append(r)
    extra = city_file(Register({}, {}, {}), 0, rng)  # (no communes needed for none)
    base = records[: n // 100]
    out += extra + [dataclasses.replace(r, id=f"NEW-{i:06d}") for i, r in enumerate(base)]
    return out


def timed(fn, *args, **kwargs):  # type: ignore[no-untyped-def]
    """Return what fn returns and the seconds it took."""
    t0 = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - t0


def main() -> None:
    """Run every figure."""
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", type=int, default=40_000)
    args = ap.parse_args()
    cfg = load_config(ROOT / "config.toml")
    rng = random.Random(7)
    n = args.assets
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        register = build_register(cfg)
        generated = len(register.tags)
        records = city_file(register, n, rng)
        csv_path, geo_path = folder / "inventaire.csv", folder / "inventaire.geojson"
        csv_path.write_text(write_csv(records), encoding="utf-8", newline="")
        geo_path.write_text(write_geojson(records), encoding="utf-8")
        mb = csv_path.stat().st_size / 1e6
        (read, errors), s = timed(read_inventory, csv_path)
        assert read == records and not errors
        emit("read_csv", s, "s", assets=n, file_mb=round(mb, 1))
        (read, _), s = timed(read_inventory, geo_path)
        emit("read_geojson", s, "s", assets=n, file_mb=round(geo_path.stat().st_size / 1e6, 1))

        store = InventoryStore(folder / "inventory.duckdb")
        inventory = Inventory(cfg, register, store)
        inventory.load()
        report, s = timed(inventory.import_records, records, "inventaire.csv", "bench")
        tags = len(register.tags) - generated
        assert report.added == n and not report.errors
        emit("import_first", s, "s", assets=n, tags=tags, target_s=30, peak_rss_mb=peak_rss_mb())

        live = build_register(cfg)
        engine = AlarmEngine(cfg.alarms, live, timezone=cfg.metropolis.timezone)
        in_service = InService()
        live.subscribe(engine.follow)
        live.subscribe(lambda change: in_service.follow(change, time.time()))
        alarms_before = len(engine.alarms)
        following = Inventory(cfg, live, InventoryStore(folder / "live.duckdb"))
        following.load()
        report, s = timed(following.import_records, records, "inventaire.csv", "bench")
        assert report.added == n
        emit("import_live", s, "s", assets=n, alarms_bound=len(engine.alarms) - alarms_before,
             target_s=30, peak_rss_mb=peak_rss_mb())  # fmt: skip
        assert following.store is not None
        following.store.close()
        del engine, following, live

        second = changed(records, rng)
        report, s = timed(inventory.import_records, second, "inventaire.csv", "bench")
        counts = {k: v for k, v in report.as_dict().items() if k not in ("origin", "errors")}
        emit("import_changes", s, "s", **counts)
        report, s = timed(inventory.import_records, second, "inventaire.csv", "bench")
        emit("import_unchanged", s, "s", unchanged=report.unchanged)
        store.close()

        def restart() -> Inventory:
            again = Inventory(cfg, build_register(cfg), InventoryStore(folder / "inventory.duckdb"))
            again.load()
            return again

        again, s = timed(restart)
        emit(
            "restart_load", s, "s", assets=len(again.register.assets), tags=len(again.register.tags)
        )
        assert again.store is not None
        again.store.close()

        fresh = Inventory(cfg, build_register(cfg), InventoryStore(folder / "fresh.duckdb"))
        fresh.load()
        text = csv_path.read_text(encoding="utf-8")
        answer, s = timed(import_text, fresh, text, name=str(csv_path), fmt=Format.csv,
                          origin="inventaire.csv", user="bench")  # fmt: skip
        assert answer["counts"]["added"] == n and len(answer["changes"]) == n
        emit("import_command", s, "s", assets=n, peak_rss_mb=peak_rss_mb())
        assert fresh.store is not None
        fresh.store.close()

        big = build_register(cfg, assets=n)
        moved = [
            dataclasses.replace(AssetRecord.of(a), lat=a.lat + 0.0001, name=f"Équipement {a.id}")
            for a in big.assets.values()
        ]
        owner = Inventory(cfg, big, InventoryStore(folder / "takeover.duckdb"))
        owner.load()
        report, s = timed(owner.import_records, moved, "sig.geojson", "bench")
        emit("takeover", s, "s", assets=len(moved), tags=len(big.tags), updated=report.updated)
        assert owner.store is not None
        owner.store.close()

        second_path = folder / "inventaire-2.csv"
        second_path.write_text(write_csv(second), encoding="utf-8", newline="")

        def compare() -> dict[str, int]:
            (a, _), (b, _) = read_inventory(csv_path), read_inventory(second_path)
            return diff({r.id: r for r in a}, {r.id: r for r in b}).counts()

        counts, s = timed(compare)
        emit("diff", s, "s", assets=n, target_s=5, **counts)
        emit("peak_rss", peak_rss_mb(), "MB")


if __name__ == "__main__":
    main()
