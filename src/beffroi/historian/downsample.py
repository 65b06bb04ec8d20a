"""Downsample long series for display while keeping their visual shape."""

from __future__ import annotations

import numpy as np
import pandas as pd
from tsdownsample import MinMaxLTTBDownsampler

_DOWNSAMPLER = MinMaxLTTBDownsampler()


def downsample_frame(df: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """Keep at most max_points rows per tag_id with MinMaxLTTB; non-good rows always stay."""
    if max_points < 3:
        raise ValueError("max_points must be at least 3")
    parts = []
    for _, group in df.groupby("tag_id", sort=True):
        if len(group) <= max_points:
            parts.append(group)
            continue
        x = group["ts"].to_numpy().astype("datetime64[us]").astype(np.int64)
        y = group["value"].to_numpy(dtype=np.float64)
        finite = np.isfinite(y)
        keep = np.zeros(len(group), dtype=bool)
        if finite.sum() > max_points:
            idx = np.flatnonzero(finite)
            chosen = _DOWNSAMPLER.downsample(x[idx], y[idx], n_out=max_points)
            keep[idx[chosen]] = True
        else:
            keep |= finite
        # Gaps (NaN, bad quality) must stay visible in a trend: keep their boundaries.
        keep |= ~finite
        parts.append(group[keep])
    return pd.concat(parts, ignore_index=True) if parts else df
