"""The KPI engine: scheduled computation of hourly cells, day and month values, late data.

Every 15 minutes the hours not yet closed (and today's and yesterday's closed hours whose inputs
changed) are computed from raw samples into hourly cells, and the hour, day and month values
they belong to are written to the historian. At 01:00 the last `late_days` days are checked for
late data (store-and-forward replays), and on the 1st the previous month is. An hour is closed
once computed `settle_min` after its end; a change to a closed period's value is recorded with
its reason in the KPI store's `kpi_changes` table.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd

from beffroi.alerts.service import AlarmService
from beffroi.core.errors import ConfigError
from beffroi.core.model import utcnow
from beffroi.core.register import Register, RegisterChange
from beffroi.core.scheduler import Scheduler
from beffroi.core.seams import Historian
from beffroi.kpi import availability, energy, mobility, waste, water
from beffroi.kpi.cells import CellContext, CellSink
from beffroi.kpi.config import KpiSite, kpi_register_problems, kpi_store_place
from beffroi.kpi.derive import differences, period_values, stored_values, write_values
from beffroi.kpi.fingerprints import Fingerprints, input_tags, read_margin
from beffroi.kpi.in_service import InService
from beffroi.kpi.inputs import Reader, epoch_grid
from beffroi.kpi.lighting import LightingCalc
from beffroi.kpi.periods import HOUR, RESOLUTIONS, day_of, floor_hour, hours, month_of, periods
from beffroi.kpi.store import KpiStore, aware, naive
from beffroi.kpi.timeline import Grid

log = logging.getLogger(__name__)

Events = Callable[[datetime, datetime], pd.DataFrame]
LATE, HOLE, REQUESTED = "late data", "data hole closed", "recompute requested"
SLICE_H = 24  # hours computed at once: bounds memory on long recomputations
KEEP_DAYS = 70  # cells kept: a closed month can be summed again at its monthly close
WARMUP_S = 20.0  # first computation after start


class KpiEngine:
    """Compute, store and keep up to date the KPIs of [kpi] (see the module docstring)."""

    def __init__(
        self,
        cfg: KpiSite,
        register: Register,
        historian: Historian,
        *,
        alarms: AlarmService | None = None,
        events: Events | None = None,
        store: KpiStore | None = None,
        clock: Callable[[], datetime] = utcnow,
        chunk: int = 2000,
    ):
        problems = kpi_register_problems(cfg, register)
        if problems:
            raise ConfigError(str(cfg.source or "config"), problems)
        self.cfg, self.register, self.historian = cfg, register, historian
        self.kc = cfg.kpi
        self.tz = ZoneInfo(cfg.metropolis.timezone)
        self.clock, self.chunk = clock, chunk
        if events is None and alarms is not None:
            events = lambda a, b: alarms.events(start=a, end=b)  # noqa: E731
        self.events = events
        self._store = store
        self.kpis = active_kpis(cfg)
        self.params = {"target_pct": cfg.kpi.lighting.target_pct if cfg.kpi.lighting else 65.0}
        self.inputs = input_tags(cfg, register)
        self.margin = read_margin(cfg)
        self.fingerprints = Fingerprints(historian, self.inputs, events, chunk)
        # Assets added and retired while running: each counts while in service (in_service.py).
        self.in_service = InService()
        self._inputs_of = 0  # the in_service revision the inputs were listed at
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.last_report: dict[str, Any] = {}
        self.last_error = ""
        self.runs = 0
        self.warmup_s = WARMUP_S

    @property
    def store(self) -> KpiStore:
        """Return the KPI store, opening it on first use."""
        if self._store is None:
            self._store = KpiStore(kpi_store_place(self.cfg))
        return self._store

    # -- life cycle ---------------------------------------------------------------------------

    async def start(self, stack: contextlib.AsyncExitStack, scheduler: Scheduler) -> None:
        """Open the store, schedule the jobs, compute once soon; stop with the stack."""
        await asyncio.to_thread(lambda: self.store)
        stack.callback(self.close)
        every = self.kc.every_min
        scheduler.cron(self.run_current, "kpi-current", duty=True, minute=f"*/{every}")
        scheduler.cron(self.close_day, "kpi-close-day", duty=True, hour=1, minute=0)
        scheduler.cron(self.close_month, "kpi-close-month", duty=True, day=1, hour=1, minute=30)
        first = asyncio.create_task(self._first_run(), name="kpi-first-run")
        stack.push_async_callback(self._stop_runs, first)
        log.info(
            "KPIs: %d definitions over %d input tags, every %d min", len(self.kpis),
            len(self.inputs), every,
        )  # fmt: skip

    async def _first_run(self) -> None:
        """Compute once soon after start, so today's figures show without waiting 15 minutes."""
        await asyncio.sleep(self.warmup_s)  # the collectors' first values are stored by then
        await asyncio.to_thread(self.run_current)

    async def _stop_runs(self, first: asyncio.Task) -> None:
        """Stop between chunks and wait for a running computation before the stores close."""
        self._stop.set()
        first.cancel()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await first
        await asyncio.to_thread(self._lock.acquire)
        self._lock.release()

    def close(self) -> None:
        """Close the KPI store."""
        self._stop.set()
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def follow(self, change: RegisterChange) -> None:
        """Follow a change of the register (a listener): the next runs count what it changed.

        Only noted here, at once: a run in progress (minutes, for a year recomputed) keeps the
        set of assets it started with, and the next one reads the new set.
        """
        self.in_service.follow(change, self.clock().timestamp())

    def _sync_inputs(self) -> None:
        """List the input tags again after register changes (called under the run lock)."""
        revision = self.in_service.revision
        if revision == self._inputs_of:
            return
        # Retired assets' tags stay inputs: closed hours' fingerprints read them as before,
        # so a retirement is not late data.
        self.inputs = input_tags(self.cfg, self.register, self.in_service.retired_records())
        self.fingerprints.tags = self.inputs
        self._inputs_of = revision

    def status(self) -> dict[str, Any]:
        """Return the engine's state for /healthz and the HMI."""
        return {"runs": self.runs, "last": self.last_report, "last_error": self.last_error}

    # -- scheduled jobs -------------------------------------------------------------------------

    def run_current(self) -> dict[str, Any]:
        """Compute the open hours; check today's and yesterday's closed ones for late data."""
        now = self.clock()
        return self._guarded(now, day_of(now - timedelta(days=1), self.tz)[0], "current", True)

    def close_day(self) -> dict[str, Any]:
        """Check the last late_days days for late data and close yesterday."""
        now = self.clock()
        report = self._guarded(now, self._late_start(now), "day", False)
        with contextlib.suppress(Exception):
            self.store.prune(day_of(now, self.tz)[0] - timedelta(days=KEEP_DAYS))
        return report

    def close_month(self) -> dict[str, Any]:
        """Check the previous month for late data and close it."""
        now = self.clock()
        prev = month_of(month_of(now, self.tz)[0] - HOUR, self.tz)[0]
        return self._guarded(now, min(prev, self._late_start(now)), "month", False)

    def _late_start(self, now: datetime) -> datetime:
        return day_of(now, self.tz)[0] - timedelta(days=self.kc.late_days)

    def _guarded(
        self, now: datetime, check_from: datetime, job: str, open_hours: bool
    ) -> dict[str, Any]:
        if self._stop.is_set():
            return {}
        try:
            with self._lock:
                report = self._refresh(now, check_from, open_hours)
        except Exception as exc:
            # A failed run leaves hours open: the next run computes them again.
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("KPI %s run failed", job)
            return {"error": self.last_error}
        report["job"] = job
        self.last_report, self.last_error = report, ""
        self.runs += 1
        if report.get("hours"):
            log.info(
                "KPIs (%s): %d hours from %s, %d values written, %d changes recorded, %.1f s",
                job, report["hours"], report["from"], report["values"], report["changes"],
                report["seconds"],
            )  # fmt: skip
        return report

    # -- computation ------------------------------------------------------------------------------

    def _refresh(self, now: datetime, check_from: datetime, open_hours: bool) -> dict[str, Any]:
        """Compute hours not closed yet and closed ones whose inputs changed since.

        The 15-minute job computes up to now; the 01:00 and monthly jobs leave today's hours to
        it, unless late data moved something before them.
        """
        t0 = time.monotonic()
        self._sync_inputs()
        current = floor_hour(now)
        window = self._late_start(now)
        limit = current + HOUR if open_hours else day_of(now, self.tz)[0]
        states = self.store.hour_states(window, current + HOUR)
        final = dict(zip(_aware(states.hour), states.final.astype(bool), strict=True))
        last = self.store.last_hour()
        if last is None:
            todo_from = day_of(now, self.tz)[0]  # a new store starts with today
        else:
            # Hours never computed (the gateway was stopped) or not closed yet, in the window.
            lo = max(window, min(final) if final else last + HOUR)
            todo = [h for h in hours(lo, limit) if not final.get(h, False)]
            todo_from = todo[0] if todo else limit
        reasons: dict[datetime, str] = {}
        closed = states[states.final.astype(bool) & (states.hour >= naive(check_from))]
        if not closed.empty:
            for h in self.fingerprints.changed(closed, min(_aware(closed.hour)), current):
                reasons[h] = LATE
        if reasons:
            log.info("late data in %d closed hours from %s", len(reasons), min(reasons))
            # What held on after late data may have moved every later hour too.
            todo_from, limit = min(todo_from, min(reasons)), current + HOUR
        if todo_from >= limit:
            return {"hours": 0, "seconds": round(time.monotonic() - t0, 3)}
        return self._compute(todo_from, limit, now, reasons, floor=window, t0=t0)

    def recompute(
        self,
        start: datetime,
        end: datetime,
        progress: Callable[[int, int], None] | None = None,
        *,
        slice_h: int = SLICE_H,
    ) -> dict[str, Any]:
        """Compute the hours of [start, end) again from raw data; record what changed.

        `slice_h` hours are read and computed at once: longer slices read less (fewer carried
        values), shorter ones hold fewer samples in memory; the values are the same.
        """
        now = self.clock()
        a, b = floor_hour(start), min(floor_hour(end - timedelta(microseconds=1)) + HOUR,
                                      floor_hour(now) + HOUR)  # fmt: skip
        if a >= b:
            return {"from": a.isoformat(), "to": a.isoformat(), "hours": 0, "values": 0,
                    "changes": 0, "seconds": 0.0}  # fmt: skip
        with self._lock:
            self._sync_inputs()
            return self._compute(
                a, b, now, {}, floor=a, progress=progress, default=REQUESTED, slice_h=slice_h
            )

    def _compute(
        self,
        a: datetime,
        b: datetime,
        now: datetime,
        reasons: dict[datetime, str],
        *,
        floor: datetime,
        t0: float | None = None,
        progress: Callable[[int, int], None] | None = None,
        default: str = HOLE,
        slice_h: int = SLICE_H,
    ) -> dict[str, Any]:
        t0 = time.monotonic() if t0 is None else t0
        before = self.store.hour_states(a - timedelta(days=32), b)
        was_final = dict(zip(_aware(before.hour), before.final.astype(bool), strict=True))
        start, origin = a, a
        total = max(int((b - a) / HOUR), 1)
        while start < b:
            end = min(start + max(slice_h, 1) * HOUR, b)
            hole_from = self._slice(start, end, now)
            reopen = None
            if np.isfinite(hole_from):
                reopen = floor_hour(datetime.fromtimestamp(hole_from, UTC))
            if reopen is not None and floor <= reopen < a:
                # A hole that began before this range closed in it: the hours it covers were
                # computed without its far end; compute them again, with it.
                log.info("data hole closed: computing again from %s", reopen.isoformat())
                for h in hours(reopen, a):
                    reasons.setdefault(h, HOLE)
                self._slice(reopen, a, now)
                a = reopen
            if progress is not None:
                progress(int((end - origin) / HOUR), total)
            start = end
            if self._stop.is_set():
                b = end
                break
        written, changes = self._derive(a, b, now, reasons, was_final, default)
        return {
            "from": a.isoformat(),
            "to": b.isoformat(),
            "hours": int((b - a) / HOUR),
            "late_hours": sum(1 for r in reasons.values() if r == LATE),
            "values": written,
            "changes": changes,
            "seconds": round(time.monotonic() - t0, 3),
        }

    def _slice(self, a: datetime, b: datetime, now: datetime) -> float:
        """Compute and store the cells of [a, b); return when the earliest filled hole began."""
        fps = self.fingerprints.of(a, b)  # before reading: late data afterwards shows next time
        hs = hours(a, b)
        ctx = CellContext(
            cfg=self.cfg,
            register=self.register,
            reader=Reader(
                self.historian,
                now=now,
                carry_days=self.kc.carry_days,
                fill_max_s=self.kc.fill_max_h * 3600.0,
                chunk=self.chunk,
                prefetch=self.inputs,
            ),
            grid=Grid(epoch_grid(a, b), now.timestamp()),
            hours=hs,
            sink=CellSink(hs),
            margin=self.margin,
            events=self.events,
            chunk=self.chunk,
            in_service=self.in_service,
        )
        lighting = LightingCalc(ctx) if self.kc.lighting is not None else None
        energy.compute(ctx, on_chunk=lighting.on_chunk if lighting else None)
        if self.kc.availability is not None:
            availability.AvailabilityCalc(ctx).compute()
        mobility.compute(ctx)
        water.compute(ctx)
        waste.compute(ctx)
        self.store.replace_cells(a, b, ctx.sink.frame())
        settle = timedelta(minutes=self.kc.settle_min)
        fps["computed_at"] = naive(now)
        fps["final"] = [now >= h + HOUR + settle for h in hs]
        self.store.mark_hours(fps)
        return ctx.hole_from if ctx.hole_from < a.timestamp() else np.inf

    def _derive(self, a, b, now, reasons, was_final, default) -> tuple[int, int]:
        """Write the values of every period touching [a, b); record changes of closed ones."""
        frames: list[pd.DataFrame] = []
        changed: list[pd.DataFrame] = []
        for res in RESOLUTIONS:
            ps = list(periods(a, b, res, self.tz))
            values = period_values(self.store, self.kpis, self.params, res, ps)
            if values.empty:
                continue
            closed = {p0 for p0, p1 in ps if _all_final(was_final, p0, p1)}
            mask = np.array([_py(t) in closed for t in values["period_start"]], bool)
            if mask.any():
                diff = differences(stored_values(self.historian, values[mask]))
                if not diff.empty:
                    diff = diff.assign(
                        reason=[
                            _reason(reasons, t, res, self.tz, default) for t in diff.period_start
                        ]
                    )
                    changed.append(diff)
            frames.append(values)
        all_values = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
        written = write_values(self.historian, all_values)
        n_changes = 0
        if changed:
            rows = pd.concat(changed, ignore_index=True)
            rows = rows.rename(columns={"value": "new_value", "coverage": "new_coverage"})
            rows["detected_at"] = naive(now)
            rows["period_start"] = rows["period_start"].map(lambda t: naive(pd.Timestamp(t)))
            n_changes = self.store.record_changes(rows)
            log.warning("%d KPI values of closed periods changed (%s)", n_changes,
                        ", ".join(sorted(set(rows.reason))))  # fmt: skip
        return written, n_changes


def _aware(values: Any) -> list[datetime]:
    """Return stored naive UTC hours as aware datetimes."""
    return [aware(h) for h in values]


def _py(ts: Any) -> datetime:
    """Return an aware UTC datetime from a Timestamp or datetime."""
    return aware(ts).astimezone(UTC)


def _all_final(was_final: dict[datetime, bool], p0: datetime, p1: datetime) -> bool:
    """Tell whether every hour of a period was closed before this run."""
    return all(was_final.get(h, False) for h in hours(p0, p1))


def _reason(reasons: dict[datetime, str], start: Any, res: str, tz: ZoneInfo, default: str) -> str:
    p0 = _py(start)
    p1 = p0 + HOUR if res == "hour" else (day_of(p0, tz) if res == "day" else month_of(p0, tz))[1]
    found = [r for h, r in reasons.items() if p0 <= h < p1]
    return found[0] if found else default


def active_kpis(cfg: KpiSite) -> list:
    """Return the KPI definitions the config gives inputs for."""
    from beffroi.kpi.definitions import KPIS

    kc = cfg.kpi
    families = {"energy"} if kc.energy else set()
    for name in ("lighting", "availability", "mobility", "water", "waste"):
        if getattr(kc, name) is not None:
            families.add(name)
    out = [k for k in KPIS if k.family in families]
    if kc.mobility is not None and not kc.mobility.granted:
        out = [k for k in out if k.name != "bus_priority_granted_pct"]
    return out
