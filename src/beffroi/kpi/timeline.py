"""Vectorised time arithmetic over many tags' samples: segments, hourly splits, integrals.

Samples arrive by exception (a value is sent when it changes), so a sample's value holds until
the next one. Between two Good samples closer than `hold_after` the value moves linearly (as a
swinging-door archive means); after a longer silence it was held, then changed. A CommLoss or
Bad sample starts a hole: not covered, and optionally filled by a straight line between the Good
values around it. Every quantity is cut at hour boundaries by linear interpolation, so hourly
cells add up exactly to days and months.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GOOD, COMM_LOSS = 0, 3


@dataclass(slots=True)
class Samples:
    """Samples of many tags as columns, sorted by tag index then time (epoch seconds)."""

    tag: np.ndarray
    t: np.ndarray
    v: np.ndarray
    q: np.ndarray
    n_tags: int

    @property
    def good(self) -> np.ndarray:
        """Return which samples are Good with a finite value."""
        return (self.q == GOOD) & np.isfinite(self.v)

    def take(self, mask: np.ndarray) -> Samples:
        """Return the samples where mask is true."""
        return Samples(self.tag[mask], self.t[mask], self.v[mask], self.q[mask], self.n_tags)


@dataclass(slots=True)
class Grid:
    """Hour boundaries (epoch seconds) and the horizon up to which held values are known."""

    edges: np.ndarray
    horizon: float

    @property
    def n(self) -> int:
        """Return the number of hours."""
        return len(self.edges) - 1


@dataclass(slots=True)
class Parts:
    """Segments cut at hour boundaries: tag, hour, [a, b), values at a and b, jump at b."""

    tag: np.ndarray
    hour: np.ndarray
    a: np.ndarray
    b: np.ndarray
    va: np.ndarray
    vb: np.ndarray
    jump: np.ndarray
    flag: np.ndarray

    def cells(self, weights: np.ndarray, n_tags: int, n_hours: int) -> np.ndarray:
        """Sum weights per (tag, hour) into an (n_tags, n_hours) matrix."""
        flat = np.bincount(self.tag * n_hours + self.hour, weights, n_tags * n_hours)
        return flat.reshape(n_tags, n_hours)

    @property
    def duration(self) -> np.ndarray:
        """Return each part's length in seconds."""
        return self.b - self.a

    @property
    def integral(self) -> np.ndarray:
        """Return each part's trapezoid integral in value·seconds."""
        return (self.va + self.vb) / 2.0 * (self.b - self.a)

    @property
    def increase(self) -> np.ndarray:
        """Return each part's increase, the jump at its end included."""
        return self.vb - self.va + self.jump

    def time_within(self, low: float, high: float) -> np.ndarray:
        """Return the seconds of each part spent with low <= value <= high (linear in between)."""
        vmin, vmax = np.minimum(self.va, self.vb), np.maximum(self.va, self.vb)
        span = vmax - vmin
        flat = span <= 1e-12
        overlap = np.clip(np.minimum(vmax, high) - np.maximum(vmin, low), 0.0, None)
        frac = np.where(
            flat, (self.va >= low) & (self.va <= high), overlap / np.where(flat, 1, span)
        )
        return frac * (self.b - self.a)


def _neighbours(s: Samples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return has_next, the previous Good index (-1) and the next Good index (n) per sample."""
    n = len(s.t)
    idx = np.arange(n)
    first = np.ones(n, bool)
    first[1:] = s.tag[1:] != s.tag[:-1]
    last = np.ones(n, bool)
    last[:-1] = first[1:]
    start = np.maximum.accumulate(np.where(first, idx, 0))
    end = np.minimum.accumulate(np.where(last, idx, n)[::-1])[::-1]
    good = s.good
    prev_good = np.maximum.accumulate(np.where(good, idx, -1))
    prev_good[prev_good < start] = -1
    next_good = np.minimum.accumulate(np.where(good, idx, n)[::-1])[::-1]
    next_good[next_good > end] = n
    return ~last, prev_good, next_good


def segment_ends(s: Samples, horizon: float) -> tuple[np.ndarray, np.ndarray]:
    """Return has_next and where each sample's segment ends (the next sample, or the horizon)."""
    has_next = np.zeros(len(s.t), bool)
    has_next[:-1] = s.tag[1:] == s.tag[:-1]
    e = np.empty(len(s.t))
    e[:-1] = s.t[1:]
    e[~has_next] = np.maximum(horizon, s.t[~has_next])
    return has_next, e


@dataclass(slots=True)
class Segments:
    """Pieces of a value path: tag, [start, end), values at both ends, jump at the end.

    `hole_from` is, for pieces filled across a hole, the time the hole began (NaN otherwise).
    """

    tag: np.ndarray
    start: np.ndarray
    end: np.ndarray
    vs: np.ndarray
    ve: np.ndarray
    jump: np.ndarray
    hole_from: np.ndarray

    @property
    def filled(self) -> np.ndarray:
        """Return which pieces were filled across a hole."""
        return np.isfinite(self.hole_from)

    def cut(self, edges: np.ndarray) -> Parts:
        """Cut the pieces at hour boundaries."""
        return split(
            self.tag, self.start, self.end, self.vs, self.ve, self.jump, edges, self.filled
        )

    def take(self, mask: np.ndarray) -> Segments:
        """Return the segments where mask is true."""
        return Segments(*(getattr(self, f)[mask] for f in self.__slots__))

    def earliest_fill(self) -> float:
        """Return when the earliest filled hole began (inf when none was filled)."""
        f = self.hole_from[self.filled]
        return float(f.min()) if len(f) else np.inf


def value_segments(
    s: Samples,
    values: np.ndarray,
    horizon: float,
    *,
    linear: bool,
    hold_after: float,
    fill: bool,
    fill_max: float,
    jumps: bool = False,
) -> Segments:
    """Return the value path of every tag as segments from each sample to the next.

    `values` are the samples' values (a counter's unwrapped values for counters). With `jumps`,
    a held segment ends with a jump to the next Good value (a counter's increase lands at the
    report that shows it); without, values are levels and the jump is ignored.
    """
    n = len(s.t)
    if n == 0:
        e = np.empty(0)
        return Segments(np.empty(0, np.int64), e, e, e, e, e, e)
    has_next, e = segment_ends(s, horizon)
    _, prev_good, next_good = _neighbours(s)
    good = s.good
    nxt = np.minimum(np.arange(n) + 1, n - 1)
    next_is_good = has_next & good[nxt]
    dt = e - s.t
    lin = good & next_is_good & (dt <= hold_after) & bool(linear)
    vs = values.astype(float).copy()
    ve = np.where(lin, values[nxt], values)
    jump = np.where(good & next_is_good & ~lin, values[nxt] - values, 0.0) if jumps else np.zeros(n)
    keep = good.copy()
    hole_from = np.full(n, np.nan)
    if fill:
        hole = ~good & (prev_good >= 0) & (next_good < n)
        p, nn = np.where(hole, prev_good, 0), np.where(hole, next_good, 0)
        t_h = s.t[np.minimum(p + 1, n - 1)]  # the hole starts at the first sample after P
        t_n = s.t[nn]
        hole &= (t_n - t_h) <= fill_max
        span = np.where(hole, t_n - t_h, 1.0)
        slope = (values[nn] - values[p]) / span
        vs = np.where(hole, values[p] + slope * (s.t - t_h), vs)
        ve = np.where(hole, values[p] + slope * (e - t_h), ve)
        keep |= hole
        hole_from = np.where(hole, t_h, np.nan)
    return Segments(
        s.tag[keep], s.t[keep], e[keep], vs[keep], ve[keep], jump[keep], hole_from[keep]
    )


def split(
    tag: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    vs: np.ndarray,
    ve: np.ndarray,
    jump: np.ndarray,
    edges: np.ndarray,
    flag: np.ndarray | None = None,
) -> Parts:
    """Cut segments at hour boundaries, interpolating values; drop what lies outside the grid."""
    lo, hi = edges[0], edges[-1]
    if flag is None:
        flag = np.zeros(len(tag), bool)
    keep = (end > start) & (end > lo) & (start < hi)
    tag, start, end, vs, ve, jump, flag = (x[keep] for x in (tag, start, end, vs, ve, jump, flag))
    slope = (ve - vs) / (end - start)
    s_c, e_c = np.maximum(start, lo), np.minimum(end, hi)
    vs_c = vs + slope * (s_c - start)
    # A jump beyond the grid belongs to a later hour.
    jump_c = np.where(end <= hi, jump, 0.0)
    h0 = np.searchsorted(edges, s_c, "right") - 1
    h1 = np.searchsorted(edges, e_c, "left") - 1
    count = h1 - h0 + 1
    rep = np.repeat(np.arange(len(tag)), count)
    offset = np.arange(len(rep)) - np.repeat(np.cumsum(count) - count, count)
    hour = h0[rep] + offset
    a = np.maximum(s_c[rep], edges[hour])
    b = np.minimum(e_c[rep], edges[hour + 1])
    va = vs_c[rep] + slope[rep] * (a - s_c[rep])
    vb = vs_c[rep] + slope[rep] * (b - s_c[rep])
    jp = np.where(hour == h1[rep], jump_c[rep], 0.0)
    return Parts(tag[rep], hour, a, b, va, vb, jp, flag[rep])


def covered(s: Samples, grid: Grid) -> np.ndarray:
    """Return the seconds per (tag, hour) backed by Good data (held till the next sample)."""
    _, e = segment_ends(s, grid.horizon)
    good = s.good
    z = np.zeros(int(good.sum()))
    parts = split(s.tag[good], s.t[good], e[good], z, z, z, grid.edges)
    return parts.cells(parts.duration, s.n_tags, grid.n)


def unwrap_counter(s: Samples, rollover: float | None) -> tuple[np.ndarray, int]:
    """Return a counter's running total since each tag's first Good sample, and resets seen.

    A decrease is a rollover when the counter wraps (configured maximum, fall over half of it),
    else a reset to zero (a replaced meter): the new reading is all new energy.
    """
    good = s.good
    u = np.full(len(s.t), np.nan)
    g = np.flatnonzero(good)
    if len(g) == 0:
        return u, 0
    tag, v = s.tag[g], s.v[g]
    d = np.zeros(len(g))
    same = tag[1:] == tag[:-1]
    step = v[1:] - v[:-1]
    down = same & (step < 0)
    if rollover is not None:
        wrap = down & (v[:-1] - v[1:] > rollover / 2)
        step = np.where(wrap, v[1:] + rollover - v[:-1], step)
        down &= ~wrap
    step = np.where(down, v[1:], step)
    d[1:] = np.where(same, step, 0.0)
    total = np.cumsum(d)
    first = np.ones(len(g), bool)
    first[1:] = ~same
    base = np.maximum.accumulate(np.where(first, np.arange(len(g)), 0))
    u[g] = total - total[base]
    return u, int(down.sum())


def drops(s: Samples, min_drop: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (tag, time, level before) of falls of at least min_drop between Good samples."""
    g = s.take(s.good)
    same = g.tag[1:] == g.tag[:-1]
    fall = same & (g.v[:-1] - g.v[1:] >= min_drop)
    idx = np.flatnonzero(fall)
    return g.tag[idx + 1], g.t[idx + 1], g.v[idx]


def events_cells(tag: np.ndarray, t: np.ndarray, grid: Grid, n_tags: int) -> np.ndarray:
    """Count events per (tag, hour) of the grid."""
    h = np.searchsorted(grid.edges, t, "right") - 1
    ok = (h >= 0) & (h < grid.n) & (t < grid.horizon + 1e-9)
    flat = np.bincount(tag[ok] * grid.n + h[ok], None, n_tags * grid.n)
    return flat.reshape(n_tags, grid.n).astype(float)


def level_parts(s: Samples, grid: Grid, hold_after: float, linear: bool = True) -> Parts:
    """Return the Good value path of levels (no filling), cut at hours."""
    segs = value_segments(
        s, s.v, grid.horizon, linear=linear, hold_after=hold_after, fill=False, fill_max=0.0
    )
    return segs.cut(grid.edges)


def counter_parts(
    s: Samples,
    grid: Grid,
    hold_after: float,
    fill_max: float,
    rollover: float | None = None,
    linear: bool = True,
) -> tuple[Segments, int]:
    """Return a counter's unwrapped path (cut it, then use .increase), and the resets seen.

    Holes are always spread between the readings around them: the counter measured what was
    used meanwhile, only its place in time is estimated (and flagged).
    """
    u, resets = unwrap_counter(s, rollover)
    segs = value_segments(
        s, u, grid.horizon, linear=linear, hold_after=hold_after, fill=True,
        fill_max=fill_max, jumps=True,
    )  # fmt: skip
    # Since the last reading, if it is recent, the counter has moved without reporting yet (it
    # reports every interval while it moves): that time is not known until the next reading.
    waiting = (segs.end >= grid.horizon) & (segs.end - segs.start <= hold_after) & ~segs.filled
    return segs.take(~waiting), resets
