"""Encode each tag's samples of a day as one compact block: delta-of-delta times, decimal values.

Times (µs since the epoch) are divided by the largest of 1 s, 1 ms, 1 µs that divides every
step, then stored as the first time, the first step and the changes between steps: a regular
series costs nothing past its header, a jittered one a byte or two a sample.

Values that are decimals of at most 15 digits after the point (what sensors and registers give)
become integers `round(v * 10**e)`, stored as first differences (gauges) or second differences
(counters, ramps), whichever is smaller; other values as the XOR of each float's bits with the
previous one's. Either way the exact float comes back, bit for bit. Missing values (NaN),
qualities other than Good and non-zero OPC UA status codes are stored apart, so a block of
Good samples pays nothing for them.

Integer streams are zigzag-encoded, narrowed to the fewest bytes that hold them, their bytes
transposed (all low bytes first) and each block deflated: zlib undoes a block of a few hundred
bytes in microseconds. Blocks are encoded and decoded many at a time, with numpy over all of
them, because per-block numpy calls would cost more than the work.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

VERSION = 1
_HEAD = np.dtype(
    [
        ("version", "u1"),
        ("n", "<u4"),
        ("t0", "<i8"),  # first time, µs
        ("step0", "<i8"),  # first step, in `scale` units
        ("scale", "u1"),  # index into _SCALES
        ("t_width", "u1"),  # bytes a value of each stream
        ("v_width", "u1"),
        ("m_width", "u1"),
        ("o_width", "u1"),
        ("mode", "u1"),  # values: 1 first differences, 2 second differences, 3 float XOR
        ("exp", "u1"),  # decimal exponent
        ("n_missing", "<u4"),
        ("n_odd", "<u4"),  # samples with a non-zero status code
        ("has_quality", "u1"),
        ("head", "<i8"),  # first mantissa, or the first float's bits
        ("step", "<i8"),  # first difference of mantissas (mode 2)
    ]
)
_SCALES = np.array([1_000_000, 1_000, 1], np.int64)
_MAX_EXP = 15
_POW10 = 10.0 ** np.arange(_MAX_EXP + 1)
_LIMITS = np.array([1, 1 << 8, 1 << 16, 1 << 32], np.float64)


class Samples(NamedTuple):
    """Samples in time order per tag: µs timestamps, values, qualities and status codes."""

    ts: np.ndarray  # int64 µs since the epoch, strictly increasing within a block
    value: np.ndarray  # float64, NaN where the sample has no value
    quality: np.ndarray  # uint8
    status: np.ndarray  # uint32, 0 for plain Good


# A dataclass, not a NamedTuple: a field named `count` would hide tuple.count.
@dataclass(frozen=True, slots=True)
class _Segs:
    """Where each block's samples are in flat arrays."""

    start: np.ndarray
    count: np.ndarray
    block: np.ndarray  # block of each sample
    local: np.ndarray  # index of each sample within its block


def _segs(count: np.ndarray) -> _Segs:
    count = count.astype(np.int64)
    start = np.cumsum(count) - count
    block = np.repeat(np.arange(len(count)), count)
    return _Segs(start, count, block, np.arange(int(count.sum())) - start[block])


def _seg_cumsum(x: np.ndarray, s: _Segs) -> np.ndarray:
    """Cumulative sums restarting at each block (int64 wraps, the differences stay exact)."""
    if len(x) == 0:
        return x.copy()
    total = np.cumsum(x)
    before = (total - x)[np.minimum(s.start, len(x) - 1)]  # blocks without samples: unused
    return total - before[s.block]


def _zigzag(a: np.ndarray) -> np.ndarray:
    """Map signed to unsigned keeping small magnitudes small: 0, -1, 1, -2 → 0, 1, 2, 3."""
    a = a.astype(np.int64, copy=False)
    return ((a << 1) ^ (a >> 63)).view(np.uint64)


def _unzigzag(u: np.ndarray) -> np.ndarray:
    return (u >> np.uint64(1)).view(np.int64) ^ -(u & np.uint64(1)).view(np.int64)


def _width(top: np.ndarray) -> np.ndarray:
    """Return the fewest bytes (0, 1, 2, 4, 8) holding each maximum."""
    return np.array([0, 1, 2, 4, 8], np.int64)[np.searchsorted(_LIMITS, top, side="right")]


def _pack(
    u: np.ndarray, s: _Segs, skip: np.ndarray, width: np.ndarray | None = None
) -> tuple[np.ndarray, bytes, np.ndarray]:
    """Pack each block's stream u[start + skip:end]: (widths, bytes, byte offset per block)."""
    u = np.ascontiguousarray(u, "<u8")
    inside = s.local >= skip[s.block]
    first = s.start + np.minimum(skip, s.count)
    count = s.count - (first - s.start)
    if width is None:
        # A zero past the end lets blocks without samples start there; their width is 0 anyway.
        masked = np.append(np.where(inside, u, 0).astype(np.float64), 0.0)
        top = np.maximum.reduceat(masked, s.start)
        width = np.where(count > 0, _width(top), 0)
    rows = np.repeat(np.arange(len(count)), width)
    plane = np.arange(len(rows)) - np.repeat(np.cumsum(width) - width, width)
    length = count[rows]
    j = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
    src = (np.repeat(first[rows], length) + j) * 8 + np.repeat(plane, length)
    data = u.view(np.uint8)[src].tobytes()
    size = count * width
    return width, data, np.cumsum(size) - size


def _unpack(buf: np.ndarray, base: np.ndarray, count: np.ndarray, width: np.ndarray) -> np.ndarray:
    """Return the concatenated streams packed at byte `base` of each block, as uint64."""
    s = _segs(count)
    out = np.zeros(len(s.block), np.uint64)
    widths = np.unique(width)
    for w in widths[widths > 0].tolist():
        # One pass per width, in that width's integers: blocks mostly share one or two.
        idx: slice | np.ndarray
        if len(widths) == 1:
            idx, block, local = slice(None), s.block, s.local
        else:
            idx = np.flatnonzero((width == w)[s.block])
            block, local = s.block[idx], s.local[idx]
        at = base[block] + local
        plane_size = count[block]
        acc = buf[at].astype(f"<u{w}")
        for p in range(1, w):
            at += plane_size
            acc |= buf[at].astype(f"<u{w}") << (8 * p)
        out[idx] = acc
    return out


def _decimals(x: float) -> int:
    """Return the digits after the point in the shortest repr of a finite float."""
    mantissa, _, exp = repr(x).partition("e")
    return max(len(mantissa.partition(".")[2].rstrip("0")) - int(exp or 0), 0)


def _exponents(v: np.ndarray, s: _Segs) -> np.ndarray:
    """Return each block's smallest e with v == rint(v·10^e)/10^e bit for bit, or -1."""
    firsts = v[s.start]
    # The shortest repr of a block's first value gives the exponent to try first.
    exp = np.array([_decimals(x) if np.isfinite(x) else 99 for x in firsts.tolist()], np.int64)
    todo = exp <= _MAX_EXP
    exp[~todo] = -1
    bits = v.view(np.int64)
    while todo.any():
        sel = todo[s.block]
        e = exp[s.block[sel]]
        with np.errstate(over="ignore", invalid="ignore"):
            m = np.rint(v[sel] * _POW10[e])
        exact = np.abs(m) < 2**53
        # Compared after the integer round trip: -0.0 becomes 0 and is no decimal.
        back = np.where(exact, m, 0).astype(np.int64) / _POW10[e]
        exact &= back.view(np.int64) == bits[sel]
        ok = np.bincount(s.block[sel][~exact], minlength=len(exp)) == 0
        exp[todo & ~ok] += 1
        todo &= ~ok
        give_up = todo & (exp > _MAX_EXP)
        exp[give_up], todo[give_up] = -1, False
    return exp


def encode_many(samples: Samples, counts: Sequence[int] | np.ndarray) -> list[bytes]:
    """Return one block per run of `counts[i]` consecutive samples (each run one tag's)."""
    s = _segs(np.asarray(counts))
    n_blocks = len(s.count)
    if n_blocks == 0:
        return []
    head = np.zeros(n_blocks, _HEAD)
    head["version"], head["n"], head["t0"] = VERSION, s.count, samples.ts[s.start]
    zero = np.zeros(n_blocks, np.int64)

    ts = samples.ts.astype(np.int64)
    step = np.where(s.local > 0, ts - np.roll(ts, 1), 0)
    scale = np.full(n_blocks, 2)
    for i in (1, 0):  # the coarsest unit that divides every step
        scale[np.logical_and.reduceat(step % _SCALES[i] == 0, s.start)] = i
    step //= _SCALES[scale][s.block]
    has_step = s.count > 1
    head["scale"], head["step0"] = (
        scale,
        np.where(has_step, step[np.minimum(s.start + 1, len(ts) - 1)], 0),
    )
    t_width, t_data, t_at = _pack(_zigzag(step - np.roll(step, 1)), s, zero + 2)

    value = samples.value.astype(np.float64)
    nan = np.isnan(value)
    if nan.any():
        # A missing value repeats the one before it, so it adds no difference.
        last = np.maximum.accumulate(np.where(nan & (s.local > 0), 0, np.arange(len(value))))
        value = np.where(nan, 0.0, value)[last]
    exp = _exponents(value, s)
    decimal = (exp >= 0)[s.block]
    with np.errstate(over="ignore", invalid="ignore"):
        m = np.rint(value * _POW10[np.maximum(exp, 0)][s.block])
    m = np.where(decimal, m, 0).astype(np.int64)
    bits = value.view(np.uint64)
    first = np.where(s.local > 0, m - np.roll(m, 1), 0)
    z1, z2 = _zigzag(first), _zigzag(first - np.roll(first, 1))
    w1, _, _ = _pack(z1, s, zero + 1)
    w2, _, _ = _pack(z2, s, zero + 2)
    sum1 = np.add.reduceat(np.where(s.local > 0, z1, 0).astype(np.float64), s.start)
    sum2 = np.add.reduceat(np.where(s.local > 1, z2, 0).astype(np.float64), s.start)
    # Gauges have small first differences; counters and ramps small second ones.
    second = (w2 < w1) | ((w2 == w1) & (sum2 < sum1))
    mode = np.where(exp < 0, 3, np.where(second, 2, 1))
    stream = np.where(
        mode[s.block] == 3, bits ^ np.roll(bits, 1), np.where(second[s.block], z2, z1)
    )
    v_width, v_data, v_at = _pack(stream, s, np.where(mode == 2, 2, 1))
    head["mode"], head["exp"] = mode, np.maximum(exp, 0)
    head["head"] = np.where(mode == 3, bits[s.start].view(np.int64), m[s.start])
    head["step"] = np.where(has_step & (mode == 2), first[np.minimum(s.start + 1, len(m) - 1)], 0)

    m_width, m_data, m_at, m_count = _positions(nan, s)
    odd = samples.status != 0
    o_width, o_data, o_at, o_count = _positions(odd, s)
    cs = _segs(o_count)
    _, codes, c_at = _pack(samples.status[odd], cs, cs.count * 0, np.full(n_blocks, 4))
    has_q = np.logical_or.reduceat(samples.quality != 0, s.start)
    head["t_width"], head["v_width"], head["m_width"], head["o_width"] = (
        t_width, v_width, m_width, o_width)  # fmt: skip
    head["n_missing"], head["n_odd"], head["has_quality"] = m_count, o_count, has_q

    heads = head.tobytes()
    quality = samples.quality.astype(np.uint8)
    size = _HEAD.itemsize
    v_count = np.maximum(s.count - np.where(mode == 2, 2, 1), 0)
    rows = zip(
        s.start.tolist(),
        s.count.tolist(),
        has_q.tolist(),
        (t_at).tolist(),
        (t_at + np.maximum(s.count - 2, 0) * t_width).tolist(),
        v_at.tolist(),
        (v_at + v_count * v_width).tolist(),
        m_at.tolist(),
        (m_at + m_count * m_width).tolist(),
        o_at.tolist(),
        (o_at + o_count * o_width).tolist(),
        c_at.tolist(),
        (c_at + 4 * o_count).tolist(),
        strict=True,
    )
    out = []
    for b, (a, n, q, t0, t1, v0, v1, m0, m1, o0, o1, c0, c1) in enumerate(rows):
        raw = b"".join(
            (
                heads[b * size : (b + 1) * size],
                t_data[t0:t1],
                v_data[v0:v1],
                m_data[m0:m1],
                quality[a : a + n].tobytes() if q else b"",
                o_data[o0:o1],
                codes[c0:c1],
            )
        )
        packer = zlib.compressobj(6, zlib.DEFLATED, -15)  # raw deflate: no header, no checksum
        out.append(packer.compress(raw) + packer.flush())
    return out


def _positions(flag: np.ndarray, s: _Segs) -> tuple[np.ndarray, bytes, np.ndarray, np.ndarray]:
    """Pack the in-block positions of flagged samples, as gaps: (widths, bytes, offsets, counts)."""
    where = np.flatnonzero(flag)
    count = np.bincount(s.block[where], minlength=len(s.count))
    ps = _segs(count)
    local = s.local[where]
    gaps = np.where(ps.local > 0, local - np.roll(local, 1), local)
    width, data, at = _pack(gaps.astype(np.uint64), ps, count * 0)
    return width, data, at, count


def decode_many(blocks: Sequence[bytes]) -> tuple[Samples, np.ndarray]:
    """Return the samples of many blocks, concatenated, and how many each block held."""
    raws = [zlib.decompress(b, -15) for b in blocks]
    size = np.array([len(r) for r in raws], np.int64)
    buf = np.frombuffer(b"".join(raws), np.uint8)
    at = np.cumsum(size) - size
    head = np.frombuffer(b"".join(r[: _HEAD.itemsize] for r in raws), _HEAD)
    if len(head) and (head["version"] != VERSION).any():
        bad = int(head["version"][head["version"] != VERSION][0])
        raise ValueError(f"block format {bad} is not supported (expected {VERSION})")
    n = head["n"].astype(np.int64)
    s = _segs(n)
    mode = head["mode"].astype(np.int64)
    widths = [head[k].astype(np.int64) for k in ("t_width", "v_width", "m_width", "o_width")]
    counts = [
        np.maximum(n - 2, 0),
        np.maximum(n - np.where(mode == 2, 2, 1), 0),
        head["n_missing"].astype(np.int64),
        head["n_odd"].astype(np.int64),
    ]
    base: np.ndarray = at + _HEAD.itemsize

    def take(i: int) -> np.ndarray:
        nonlocal base
        out = _unpack(buf, base, counts[i], widths[i])
        base = base + counts[i] * widths[i]
        return out

    dd, packed, gaps = take(0), take(1), take(2)
    has_q = head["has_quality"].astype(bool)
    quality = np.zeros(len(s.block), np.uint8)
    if has_q.any():
        sel = has_q[s.block]
        quality[sel] = buf[base[s.block[sel]] + s.local[sel]]
    base = base + np.where(has_q, n, 0)
    odd_gaps = take(3)
    codes = _unpack(buf, base, counts[3], np.full(len(n), 4)).astype(np.uint32)

    ts = _times(head, s, dd)
    value = _values(head, s, mode, packed)
    value[_unflag(gaps, counts[2], s)] = np.nan
    status = np.zeros(len(s.block), np.uint32)
    status[_unflag(odd_gaps, counts[3], s)] = codes
    return Samples(ts, value, quality, status), n


def _times(head: np.ndarray, s: _Segs, dd: np.ndarray) -> np.ndarray:
    """Rebuild times from first time, first step and the changes of step."""
    scale = _SCALES[head["scale"]]
    if not head["t_width"].any():  # every block regular: no cumulative sums needed
        return head["t0"][s.block] + s.local * (head["step0"] * scale)[s.block]
    step = np.zeros(len(s.block), np.int64)
    step[np.flatnonzero(s.local >= 2)] = _unzigzag(dd)
    step = np.where(s.local > 0, head["step0"][s.block] + _seg_cumsum(step, s), 0)
    return head["t0"][s.block] + _seg_cumsum(step, s) * scale[s.block]


def _values(head: np.ndarray, s: _Segs, mode: np.ndarray, packed: np.ndarray) -> np.ndarray:
    """Rebuild values from decimal differences or float XORs."""
    skip = np.where(mode == 2, 2, 1)
    full = np.zeros(len(s.block), np.uint64)
    full[np.flatnonzero(s.local >= skip[s.block])] = packed
    floats = None
    if (mode == 3).any():
        xor = np.where(s.local == 0, head["head"].view(np.uint64)[s.block], full)
        total = np.bitwise_xor.accumulate(xor)
        before = np.where(s.start > 0, total[np.maximum(s.start - 1, 0)], np.uint64(0))
        floats = (total ^ before[s.block]).view(np.float64)
        if (mode == 3).all():
            return floats
    diff = _unzigzag(full)
    if (mode == 2).any():
        second = (mode == 2)[s.block] & (s.local > 0)
        diff = np.where(second, head["step"][s.block] + _seg_cumsum(diff, s), diff)
    m = head["head"][s.block] + _seg_cumsum(diff, s)
    value = m / _POW10[head["exp"]][s.block]
    return value if floats is None else np.where((mode == 3)[s.block], floats, value)


def _unflag(gaps: np.ndarray, count: np.ndarray, s: _Segs) -> np.ndarray:
    """Return the flat indices of positions stored as gaps by `_positions`."""
    ps = _segs(count)
    return s.start[ps.block] + _seg_cumsum(gaps.astype(np.int64), ps)


def encode(s: Samples) -> bytes:
    """Return the block of one tag's samples."""
    return encode_many(s, [len(s.ts)])[0]


def decode(block: bytes) -> Samples:
    """Return the samples of one block."""
    return decode_many([block])[0]
