"""A demo with a past: days of simulated history written at the demo's first start.

The same `Metropolis` the live simulator serves is stepped from N days ago to now in coarse
steps (`[simulator] history_step_s`), every asset class of `MODELS` included, with the demo's
own street-lighting schedule (`[control.lighting]`: dimming at night, presence boosts) applied
to the cabinets' dimming setpoints as the live scheduler would. Reports go to the historian's
bulk path as columns; the real alarm engine runs over them in time order, with operators'
acknowledgements at plausible delays, into the journal; the KPI engine then computes the hours,
days and months of the history. The stepped metropolis is handed to the live simulator, which
goes on from its state.

A marker file (`simulated-history.json` in the data folder) records the simulated interval, so
that pages can say the history before it is simulated. Nothing is written when the historian
already holds data: a restart never rewrites the past.

This is composition work (historian, alarms, KPIs): the composition root calls `demo_history`
between opening the historian and starting the alarm service, which then restores the state
the journal ends in.
"""

from __future__ import annotations

import heapq
import json
import logging
import math
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from zoneinfo import ZoneInfo

import numpy as np

from beffroi.core.model import Sample, utcnow
from beffroi.core.register import Register
from beffroi.core.site import Site
from beffroi.simulator.physics import Columns, Metropolis

if TYPE_CHECKING:
    from beffroi.alerts.state import AlarmEvent
    from beffroi.app.config import Config

log = logging.getLogger(__name__)

MARKER = "simulated-history.json"
CHUNK_SAMPLES = 500_000  # samples per bulk write: large, yet written while the next one fills
JOURNAL_CHUNK = 20_000  # alarm events per journal transaction
TEXT_CHUNK = 50_000  # text samples (vehicles' states) per ordinary write
# The KPI recomputation of the history reads a week at once: fewer reads of the values carried
# in from before each slice (the KPI engine's default, a day, bounds memory for big sites).
KPI_SLICE_H = 7 * 24
ACK_USER = "superviseur"  # a demo user (hmi/users.py DEMO_USERS) who may act everywhere
# Median minutes before an operator acknowledges an alarm, by severity (P1 … P4); a share of
# P4 alarms is never acknowledged, as on a real command post.
ACK_MEDIAN_MIN = {1: 3.0, 2: 8.0, 3: 20.0, 4: 90.0}
ACK_P4_SHARE = 0.5
# Rules the history does not replay: its steps are coarser than the equipment's reporting (a
# stale rule would fire on the simulation's step) and its data are all Good (no CommLoss).
NOT_REPLAYED = ("stale", "commloss")
# The replay's tick (on-delays, daylight suppression): its cost is one daylight check per
# cabinet; activations and clears still come at the step that reports them.
TICK_S = 900.0


@runtime_checkable
class ColumnHistorian(Protocol):
    """A historian with the bulk path for imports and replays (the DuckDB back end)."""

    def write(self, batch: list[Sample]) -> int: ...

    def write_columns(
        self,
        names: list[str],
        tag_index: np.ndarray,
        ts_us: np.ndarray,
        values: np.ndarray,
        quality: np.ndarray | None = None,
        status: np.ndarray | None = None,
    ) -> int: ...

    def tags(self) -> list[str]: ...

    def compact(self) -> int: ...


@dataclass
class HistoryReport:
    """What the history wrote, how long each part took, and the metropolis it ended in."""

    start: datetime
    end: datetime
    step_s: float
    physics: Metropolis
    samples: int = 0
    alarm_events: int = 0
    kpi_values: int = 0
    kpis_done: bool = False  # the month's KPIs are computed (or no KPI engine runs)
    seconds: dict[str, float] = field(default_factory=dict)

    def marker(self) -> dict[str, Any]:
        """Return the marker file's content."""
        return {
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "step_s": self.step_s,
            "samples": self.samples,
            "alarm_events": self.alarm_events,
            "kpi_values": self.kpi_values,
            "kpis_done": self.kpis_done,
        }


def marker_path(site: Site) -> Path:
    """Return the marker file of the simulated history, in the data folder."""
    return site.data_dir() / MARKER


def simulated_until(site: Site) -> tuple[datetime, datetime] | None:
    """Return the (start, end) of the simulated history, None when there is none."""
    try:
        data = json.loads(marker_path(site).read_text())
        return datetime.fromisoformat(data["start"]), datetime.fromisoformat(data["end"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def history_start(now: datetime, days: int, timezone: str) -> datetime:
    """Return local midnight `days` days before now (UTC): the first day is a whole day."""
    tz = ZoneInfo(timezone)
    day = (now.astimezone(tz) - timedelta(days=days)).date()
    return datetime.combine(day, dtime(0), tz).astimezone(UTC)


def demo_history(
    cfg: Config,
    register: Register,
    historian: object,
    *,
    days: int | None = None,
    now: datetime | None = None,
) -> HistoryReport | None:
    """Write the simulated history at a first start; return it, None when nothing was written."""
    days = cfg.simulator.history_days if days is None else days
    if days <= 0:
        return None
    if not isinstance(historian, ColumnHistorian):
        log.warning(
            "no simulated history: the %s historian has no bulk path", cfg.historian.backend
        )
        return None
    if historian.tags():
        log.info("the historian holds data already: no simulated history")
        return None
    t_all = time.perf_counter()
    end = (now or utcnow()).astimezone(UTC)
    start = history_start(end, days, cfg.metropolis.timezone)
    physics = Metropolis(
        register,
        seed=cfg.simulator.seed,
        fault_rate_per_hour=cfg.simulator.fault_rate_per_hour,
        start=start,
        timezone=cfg.metropolis.timezone,
    )
    report = HistoryReport(start, end, cfg.simulator.history_step_s, physics)
    replay = AlarmReplay(cfg, register, physics.tags, start) if cfg.alarms.enabled else None
    _simulate(cfg, historian, physics, report, replay)
    if replay is not None:
        report.alarm_events = _journal(cfg, replay, report)
    report.seconds["total"] = round(time.perf_counter() - t_all, 2)
    marker_path(cfg).write_text(json.dumps(report.marker(), indent=1))
    log.info(
        "simulated history %s to %s: %d samples, %d alarm events in %.1f s",
        start.isoformat(timespec="minutes"),
        end.isoformat(timespec="minutes"),
        report.samples,
        report.alarm_events,
        report.seconds["total"],
    )
    return report


def _simulate(
    cfg: Config,
    historian: ColumnHistorian,
    physics: Metropolis,
    report: HistoryReport,
    replay: AlarmReplay | None,
) -> None:
    """Step the metropolis to the end, writing its reports in large column chunks.

    A chunk is written by a thread while the next one is stepped: DuckDB's insert releases the
    GIL, so on two cores the write costs little more than its hand-over.
    """
    t_gen = time.perf_counter()
    names = physics.tags
    schedule = LightingSchedule.of(cfg, physics)
    chunks = _Chunks(historian, names, round(report.step_s * 1_000_000))
    # The first values: every tag's, at the start (text ones through the ordinary path).
    first = physics.values()
    texts = [Sample(t, report.start, v) for t, v in first.items() if isinstance(v, str)]
    numeric = [i for i, v in enumerate(first.values()) if not isinstance(v, str)]
    chunks.add(
        np.array(numeric, np.int64),
        np.array([float(v) for v in first.values() if not isinstance(v, str)]),
        _us(report.start),
    )
    step = timedelta(seconds=report.step_s)
    t = report.start
    with ThreadPoolExecutor(1, thread_name_prefix="history-write") as writer:
        while t < report.end:
            t = min(t + step, report.end)
            if schedule is not None:
                schedule.apply(t)
            cols = physics.step_columns(t)
            if replay is not None:
                replay.feed(t, cols)
            ts = _us(t)
            for c in cols:
                if c.kind == "str":  # vehicles' states: few, through the ordinary path
                    tags = [names[i] for i in c.at.tolist()]
                    texts.extend(Sample(n, t, v) for n, v in zip(tags, c.values, strict=True))
                else:
                    chunks.add(c.at, c.values, ts)
            if chunks.pending >= CHUNK_SAMPLES or t >= report.end:
                chunks.flush(writer)
        chunks.wait()
    t0 = time.perf_counter()
    for i in range(0, len(texts), TEXT_CHUNK):
        historian.write(texts[i : i + TEXT_CHUNK])
    text_s = time.perf_counter() - t0
    report.samples = chunks.written + len(texts)
    alarms_s = replay.seconds if replay is not None else 0.0
    waited = chunks.wait_s + text_s
    report.seconds["generate"] = round(time.perf_counter() - t_gen - waited - alarms_s, 2)
    report.seconds["alarms"] = round(alarms_s, 2)
    # The writer's own time, mostly hidden behind the stepping; `write_wait` is what it added.
    report.seconds["write"] = round(chunks.write_s + text_s, 2)
    report.seconds["write_wait"] = round(waited, 2)


class _Chunks:
    """Numeric reports gathered into large column chunks, each written while the next fills.

    Equipment reports by exception, and a trend draws straight lines between stored samples:
    a cabinet's power, silent at 0 all day, would rise in one slope from dawn to dusk. As the
    live path's compression does with its held point, a report after a silence longer than a
    step also stores the value that held until the step before it.
    """

    def __init__(self, historian: ColumnHistorian, names: list[str], step_us: int):
        self.historian, self.names, self.step_us = historian, names, step_us
        self.last_ts = np.full(len(names), np.iinfo(np.int64).min, np.int64)
        self.last_val = np.zeros(len(names))
        self.idx: list[np.ndarray] = []
        self.val: list[np.ndarray] = []
        self.ts: list[np.ndarray] = []
        self.pending = self.written = 0
        self.write_s = self.wait_s = 0.0
        self.job: Future[tuple[int, float]] | None = None

    def add(self, at: np.ndarray, values: np.ndarray, ts_us: int) -> None:
        """Add one signal's reports of one step (and the values they end, after a silence)."""
        values = values.astype(np.float64)
        prev = self.last_ts[at]
        held = (prev > np.iinfo(np.int64).min) & (prev < ts_us - self.step_us)
        if held.any():
            self.idx.append(at[held])
            self.val.append(self.last_val[at[held]])
            self.ts.append(np.full(int(held.sum()), ts_us - self.step_us, np.int64))
            self.pending += int(held.sum())
        self.last_ts[at] = ts_us
        self.last_val[at] = values
        self.idx.append(at)
        self.val.append(values)
        self.ts.append(np.full(at.size, ts_us, np.int64))
        self.pending += at.size

    def flush(self, writer: ThreadPoolExecutor) -> None:
        """Hand the gathered reports to the writer, once it has written the previous chunk."""
        if not self.pending:
            return
        columns = (np.concatenate(self.idx), np.concatenate(self.ts), np.concatenate(self.val))
        self.idx, self.val, self.ts, self.pending = [], [], [], 0
        self.wait()  # one chunk in the writer, one filling: memory stays two chunks
        self.job = writer.submit(self._write, *columns)

    def _write(self, idx: np.ndarray, ts: np.ndarray, val: np.ndarray) -> tuple[int, float]:
        t0 = time.perf_counter()
        n = self.historian.write_columns(self.names, idx, ts, val)
        return n, time.perf_counter() - t0

    def wait(self) -> None:
        """Wait for the chunk being written (its error, if any, is raised here)."""
        if self.job is None:
            return
        t0 = time.perf_counter()
        n, seconds = self.job.result()
        self.wait_s += time.perf_counter() - t0
        self.written += n
        self.write_s += seconds
        self.job = None


def _us(t: datetime) -> int:
    return round(t.timestamp() * 1_000_000)


class LightingSchedule:
    """The demo's street-lighting schedule applied to the cabinets' dimming, vectorised.

    The rules of `control/lighting.py` (`target_pct`): the day level between dawn and dusk
    (with offsets), the night level in the night window, the evening level otherwise, and the
    presence level while a sensor within the radius sees someone.
    """

    def __init__(self, cfg: Config, physics: Metropolis, model: Any, dimming: np.ndarray):
        from beffroi.control.geo import GridIndex
        from beffroi.control.lighting import Levels, Twilight

        lc = cfg.control.lighting
        self.lc, self.dimming = lc, dimming
        self.tz = ZoneInfo(cfg.metropolis.timezone)
        self.twilight = Twilight(cfg.metropolis.timezone)
        cabinets = model.assets
        self.cabinets = cabinets
        levels = [Levels.merged(lc, _profile(lc, a)) for a in cabinets]
        self.day_pct = np.array([lv.day_pct for lv in levels])
        self.evening_pct = np.array([lv.evening_pct for lv in levels])
        self.night_pct = np.array([lv.night_pct for lv in levels])
        self.presence_pct = np.array([lv.presence_pct for lv in levels])
        self.dusk_off = np.array([lv.dusk_offset_min * 60.0 for lv in levels])
        self.dawn_off = np.array([lv.dawn_offset_min * 60.0 for lv in levels])
        windows = sorted({(lv.night_start, lv.night_end) for lv in levels})
        self.windows = [
            (w, np.array([(lv.night_start, lv.night_end) == w for lv in levels])) for w in windows
        ]
        simulated = set(physics.tags)
        sensors = [
            a for m in physics.models() for a in m.assets if a.tag(lc.presence_signal) in simulated
        ]
        index = GridIndex(sensors)
        pairs = [
            (i, s.tag(lc.presence_signal))
            for i, a in enumerate(cabinets)
            for s in index.within(a.lat, a.lon, lc.presence_radius_m)
        ]
        tags = sorted({tag for _, tag in pairs})
        where = {tag: k for k, tag in enumerate(tags)}
        self.pair_cab = np.array([i for i, _ in pairs], np.int64)
        self.pair_sensor = np.array([where[tag] for _, tag in pairs], np.int64)
        self.presence = physics.reader(tags) if tags else None
        self.boost_until = np.full(len(cabinets), -np.inf)
        self._day: Any = None
        self.on_at = self.off_at = np.zeros(len(cabinets))

    @classmethod
    def of(cls, cfg: Config, physics: Metropolis) -> LightingSchedule | None:
        """Return the schedule of the demo's cabinets, None without one (or without cabinets)."""
        lc = cfg.control.lighting
        if not (cfg.control.enabled and lc.enabled):
            return None
        model = physics.model(lc.asset_class)
        if model is None or lc.signal not in model.sp:
            return None
        return cls(cfg, physics, model, model.sp[lc.signal])

    def _twilights(self, day: Any) -> None:
        """Compute each cabinet's switch-on and switch-off times of a local day."""
        tw = [self.twilight.of(a.lat, a.lon, day) for a in self.cabinets]
        dawn = np.array([_ts(d) for d, _ in tw])
        dusk = np.array([_ts(k) for _, k in tw])
        self.off_at, self.on_at = dawn + self.dawn_off, dusk + self.dusk_off
        self._day = day

    def apply(self, now: datetime) -> None:
        """Set every cabinet's dimming setpoint for the step ending at `now`."""
        from beffroi.control.lighting import in_window

        local = now.astimezone(self.tz)
        if local.date() != self._day:
            self._twilights(local.date())
        t = now.timestamp()
        day = (self.off_at <= t) & (t < self.on_at)
        level = self.evening_pct.copy()
        for (a, b), mask in self.windows:
            if in_window(local.time(), a, b):
                level[mask] = self.night_pct[mask]
        if self.presence is not None:
            seen = self.presence()[self.pair_sensor] > 0
            cabs = np.unique(self.pair_cab[seen])
            self.boost_until[cabs] = t + self.lc.presence_hold_s
        boosted = self.boost_until >= t
        level = np.where(boosted & (self.presence_pct > level), self.presence_pct, level)
        np.copyto(self.dimming, np.where(day, self.day_pct, level))


def _profile(lc: Any, asset: Any) -> Any:
    """Return the first lighting profile naming an asset or its commune (as the scheduler)."""
    for p in lc.profiles:
        if asset.id in p.assets or asset.commune in p.communes:
            return p
    return None


def _ts(d: datetime) -> float:
    try:
        return d.timestamp()
    except (OverflowError, ValueError):  # polar extremes: datetime.min / max
        return -math.inf if d.year < 2 else math.inf


class AlarmReplay:
    """The real alarm engine run over the history in time order, with operators' acks."""

    def __init__(self, cfg: Config, register: Register, names: list[str], start: datetime):
        from beffroi.alerts.engine import AlarmEngine

        self.now = start
        rules = [r for r in cfg.alarms.rules if r.type not in NOT_REPLAYED]
        alarms_cfg = cfg.alarms.model_copy(update={"rules": rules})
        self.engine = AlarmEngine(
            alarms_cfg, register, clock=lambda: self.now, timezone=cfg.metropolis.timezone
        )
        watched = _watched_tags(rules, register)
        self.names = names
        self.watched = np.array([n in watched for n in names], bool)
        self.rng = np.random.default_rng([cfg.simulator.seed, 19])
        self.acks: list[tuple[float, str]] = []
        self.events: list[AlarmEvent] = []
        self.acked = 0
        self.seconds = 0.0
        self.next_tick = start.timestamp()

    def feed(self, t: datetime, cols: list[Columns]) -> None:
        """Acknowledge what operators would have by t, then evaluate the step's reports."""
        from beffroi.alerts.state import AlarmCommandError

        t0 = time.perf_counter()
        ts = t.timestamp()
        while self.acks and self.acks[0][0] <= ts:
            at, alarm_id = heapq.heappop(self.acks)
            self.now = datetime.fromtimestamp(at, UTC)
            try:
                self.engine.ack([alarm_id], ACK_USER)
                self.acked += 1
            except AlarmCommandError:  # acknowledged already, or masked since
                pass
        self.now = t
        batch: list[Sample] = []
        for c in cols:
            keep = self.watched[c.at]
            if keep.any():
                tags = [self.names[i] for i in c.at[keep].tolist()]
                batch.extend(
                    Sample(tag, t, v) for tag, v in zip(tags, c.values[keep].tolist(), strict=True)
                )
        self.engine.process(batch)
        if ts >= self.next_tick:  # delays and daylight: every TICK_S, not every step
            self.engine.tick(t)
            self.next_tick = ts + TICK_S
        self._take()
        self.seconds += time.perf_counter() - t0

    def _take(self) -> None:
        """Keep the engine's new events and schedule the acknowledgement of activations."""
        for ev in self.engine.take_events():
            self.events.append(ev)
            if ev.event != "activate":
                continue
            sev = ev.severity
            if sev >= 4 and self.rng.random() > ACK_P4_SHARE:
                continue
            median = ACK_MEDIAN_MIN.get(sev, ACK_MEDIAN_MIN[4]) * 60.0
            delay = median * math.exp(self.rng.normal(0.0, 0.6))
            heapq.heappush(self.acks, (ev.ts.timestamp() + delay, ev.alarm_id))


def _watched_tags(rules: list[Any], register: Register) -> set[str]:
    """Return the tags the replayed rules read (the engine's binding, from the config)."""
    out: set[str] = set()
    by_class: dict[str, list[Any]] = {}
    for a in register.assets.values():
        by_class.setdefault(a.asset_class, []).append(a)
    for rule in rules:
        if rule.tag:
            out.add(rule.tag)
            continue
        for a in by_class.get(rule.asset_class or "", []):
            if rule.signal:
                out.add(a.tag(rule.signal))
            else:
                out.update(t.name for t in a.tags)
            if rule.setpoint:
                out.add(a.tag(rule.setpoint.rsplit("/", 1)[-1]))
    return out


def _journal(cfg: Config, replay: AlarmReplay, report: HistoryReport) -> int:
    """Write the replay's events into the alarm journal, in time order; return how many."""
    from beffroi.alerts.config import journal_place
    from beffroi.alerts.journal import Journal

    t0 = time.perf_counter()
    journal = Journal(journal_place(cfg))
    try:
        events = replay.events
        for i in range(0, len(events), JOURNAL_CHUNK):
            journal.write(events[i : i + JOURNAL_CHUNK])
    finally:
        journal.close()
    report.seconds["journal"] = round(time.perf_counter() - t0, 2)
    return len(replay.events)


class KpiRecompute(Protocol):
    """The KPI engine's recomputation of past hours (kpi/engine.py KpiEngine.recompute)."""

    def recompute(
        self,
        start: datetime,
        end: datetime,
        progress: Callable[[int, int], None] | None = None,
        *,
        slice_h: int = ...,
    ) -> dict[str, Any]: ...


def complete_history(
    cfg: Site, historian: ColumnHistorian, kpi: KpiRecompute | None, report: HistoryReport
) -> None:
    """Compute the history's KPIs, then seal its days: run once the gateway serves.

    The KPIs first, so that the KPI page fills in soon; they read the history's samples as
    written, unsealed (scarcely slower). The seal follows (the month sealed now, not by the
    first scheduled compaction).
    """
    if kpi is not None:
        t0 = time.perf_counter()
        out = kpi.recompute(report.start, report.end, slice_h=KPI_SLICE_H)
        report.kpi_values = int(out.get("values", 0))
        report.seconds["kpis"] = round(time.perf_counter() - t0, 2)
    report.kpis_done = True
    marker_path(cfg).write_text(json.dumps(report.marker(), indent=1))
    t0 = time.perf_counter()
    historian.compact()
    report.seconds["compact"] = round(time.perf_counter() - t0, 2)
    marker_path(cfg).write_text(json.dumps(report.marker(), indent=1))
    log.info(
        "simulated history completed: %d KPI values in %.1f s; compaction %.1f s",
        report.kpi_values,
        report.seconds.get("kpis", 0.0),
        report.seconds["compact"],
    )
