"""InfluxDB back end: line-protocol writes (v2 API or v1 /write), InfluxQL reads.

The only module that imports influxdb_client. Layout and encoding: `layout.py`; the v1
HTTP endpoints: `http.py`; statements: `query.py`; their answers as frames:
`frames.py`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Literal

import pandas as pd
import urllib3
from influxdb_client import InfluxDBClient, WritePrecision
from influxdb_client.client.write_api import SYNCHRONOUS
from influxdb_client.rest import ApiException

from beffroi.core.errors import ConfigError
from beffroi.core.model import Sample
from beffroi.core.register import Register
from beffroi.core.seams import Agg
from beffroi.historian.base import RAW_COLUMNS, HistorianBackend
from beffroi.historian.config import HistorianSite
from beffroi.historian.downsample import downsample_frame
from beffroi.historian.influx.frames import contract_frame
from beffroi.historian.influx.http import (
    InfluxError,
    InfluxHttp,
    InfluxUnavailable,
    partial_write_dropped,
)
from beffroi.historian.influx.layout import Layout, LineEncoder, to_us
from beffroi.historian.influx.query import QueryBuilder

log = logging.getLogger(__name__)

# Lines per HTTP write: InfluxDB advises thousands per request; 1.x refuses bodies over 25 MB.
LINES_PER_REQUEST = 20_000

__all__ = ["InfluxError", "InfluxHistorian", "InfluxUnavailable"]


class InfluxHistorian(HistorianBackend):
    """Store samples in InfluxDB 1.x, 2.x or 3.x, or a server speaking its write API."""

    name = "influx"

    def __init__(
        self,
        url: str,
        *,
        api: Literal["v1", "v2"] = "v2",
        database: str = "beffroi",
        retention_policy: str = "",
        bucket: str = "",
        org: str = "",
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        timeout_s: float = 10.0,
        register: Register | Mapping[str, str] | None = None,
    ):
        if api not in ("v1", "v2"):
            raise ValueError(f"api must be 'v1' or 'v2', got {api!r}")
        self.url = url.rstrip("/")
        self.api = api
        self.layout = Layout(register)
        self._encoder = LineEncoder(self.layout)
        self.http = InfluxHttp(
            url,
            database,
            retention_policy,
            token=token,
            username=username,
            password=password,
            ca_file=ca_file,
            timeout_s=timeout_s,
        )
        self._queries = QueryBuilder(self.layout, self.http, database, retention_policy)
        self.rejected = 0  # samples InfluxDB refused for good (field type conflicts)
        self._client: InfluxDBClient | None = None
        if api == "v2":
            if token is None and username is not None:
                # InfluxDB 1.8+ serves /api/v2/write with "user:password" as the token.
                token = f"{username}:{password or ''}"
            self._client = InfluxDBClient(
                url=self.url,
                token=token,  # type: ignore[arg-type]  # typed `str = None`: None is no token
                org=org or "-",
                timeout=int(timeout_s * 1000),
                ssl_ca_cert=ca_file,
            )
            self._writer = self._client.write_api(write_options=SYNCHRONOUS)
            # Without a bucket, 1.8+'s v2 compatibility maps "database/retention_policy".
            self.bucket = bucket or "/".join(p for p in (database, retention_policy) if p)

    @classmethod
    def from_config(cls, cfg: HistorianSite, register: Register) -> InfluxHistorian:
        """Build from `[historian.influx]`, reading secrets from the environment variables named."""
        ic = cfg.historian.influx
        source = str(cfg.source or "config.toml")

        def secret(key: str) -> str | None:
            name = getattr(ic, key)
            if not name:
                return None
            value = os.environ.get(name)
            if value is None:
                raise ConfigError(
                    source, [f"historian.influx.{key}: environment variable {name} is not set"]
                )
            return value

        return cls(
            ic.url,
            api=ic.api,
            database=ic.database,
            retention_policy=ic.retention_policy,
            bucket=ic.bucket,
            org=ic.org,
            token=secret("token_env"),
            username=secret("username_env"),
            password=secret("password_env"),
            ca_file=str(cfg.resolve(ic.ca_file)) if ic.ca_file else None,
            timeout_s=ic.timeout_s,
            register=register,
        )

    def write(self, batch: Sequence[Sample]) -> int:
        """Write a batch; raise InfluxUnavailable or InfluxError when it was not stored."""
        if not batch:
            return 0
        lines = self._encoder.lines(batch)
        dropped = 0
        for i in range(0, len(lines), LINES_PER_REQUEST):
            body = "\n".join(lines[i : i + LINES_PER_REQUEST]).encode()
            dropped += self.http.write(body) if self.api == "v1" else self._write_v2(body)
        self.rejected += dropped
        return len(batch) - dropped

    def _write_v2(self, body: bytes) -> int:
        """Write through influxdb-client's /api/v2/write; return the samples refused for good."""
        try:
            self._writer.write(
                self.bucket,
                record=body,
                write_precision=WritePrecision.US,  # type: ignore[arg-type]  # its members are str
            )
        except ApiException as exc:
            message = f"InfluxDB at {self.url}/api/v2/write: HTTP {exc.status}: {_api_message(exc)}"
            if exc.status is None or exc.status >= 500 or exc.status == 429:
                raise InfluxUnavailable(message) from exc
            if exc.status == 404 and "bucket" not in message.lower():
                message += ' (no /api/v2/write before InfluxDB 1.8: set api = "v1")'
                raise InfluxError(message) from exc
            return partial_write_dropped(InfluxError(message))
        except urllib3.exceptions.HTTPError as exc:
            reason = getattr(exc, "reason", exc)
            raise InfluxUnavailable(f"InfluxDB at {self.url} unreachable: {reason}") from exc
        return 0

    def query(
        self,
        tags: Sequence[str],
        start: datetime,
        end: datetime,
        every: timedelta | None = None,
        agg: Agg | None = None,
        max_points: int | None = None,
    ) -> pd.DataFrame:
        """Return raw, aggregated (`every` + `agg`, pushed down) or downsampled values."""
        self.check_query(every, agg, max_points)
        locs = [self.layout.locate(t) for t in dict.fromkeys(tags)]
        lo, hi = to_us(start), to_us(end)
        if every is not None:
            assert agg is not None  # check_query: `every` and `agg` go together
            every_us = every // timedelta(microseconds=1)
            return contract_frame(self._queries.aggregate(locs, lo, hi, every_us, agg))
        raw = self._queries.raw(locs, lo, hi)
        if max_points is not None and not raw.empty:
            raw = _downsample(raw, max_points)
        return contract_frame(raw, RAW_COLUMNS)

    def latest(self, tags: Sequence[str] | None = None) -> pd.DataFrame:
        """Return the newest sample of each tag."""
        locs = None if tags is None else [self.layout.locate(t) for t in dict.fromkeys(tags)]
        return contract_frame(self._queries.latest(locs))

    def tags(self) -> list[str]:
        """Return every tag that has stored samples, sorted."""
        return sorted(self._queries.latest(None, values=False)["tag"])

    def count(self) -> int:
        """Return the number of stored samples."""
        return self._queries.count()

    def close(self) -> None:
        """Close the HTTP connections."""
        self.http.close()
        if self._client is not None:
            self._client.close()


def _downsample(raw: pd.DataFrame, max_points: int) -> pd.DataFrame:
    """Downsample numeric rows per tag with the shared MinMaxLTTB; text rows stay as they are."""
    is_text = (
        raw["value"].map(lambda v: isinstance(v, str)) if raw["value"].dtype == object else None
    )
    numbers = raw if is_text is None else raw[~is_text]
    frame = numbers.rename(columns={"tag": "tag_id"}).astype({"value": "float64"})
    frame["ts"] = pd.to_datetime(frame["ts"], unit="us")
    thin = downsample_frame(frame, max_points).rename(columns={"tag_id": "tag"})
    thin["ts"] = thin["ts"].astype("datetime64[us]").astype("int64")
    if is_text is None or not is_text.any():
        return thin
    return pd.concat([thin.astype({"value": object}), raw[is_text]], ignore_index=True)


def _api_message(exc: ApiException) -> str:
    """Return the server's message from an influxdb-client error."""
    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else exc.body or ""
    try:
        parsed = json.loads(body)
    except ValueError:
        return body.strip() or str(exc.reason)
    if isinstance(parsed, dict):
        return str(parsed.get("message") or parsed.get("error") or body)
    return body
