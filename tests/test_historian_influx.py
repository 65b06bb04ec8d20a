"""The InfluxDB back end against real servers: InfluxDB 1.6.7 (v1 write, InfluxQL) and
VictoriaMetrics (influxdb-client's /api/v2/write). The shared contract runs in
test_historian_contract.py; this file covers what is particular to InfluxDB."""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import math
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from beffroi.app.config import parse_config
from beffroi.core.errors import ConfigError
from beffroi.core.model import Quality, Sample
from beffroi.historian.buffer import WriteBuffer
from beffroi.historian.influx import query as influx_query
from beffroi.historian.influx.historian import InfluxError, InfluxHistorian, InfluxUnavailable
from beffroi.historian.spool import Spool
from tests.conftest import ROOT, eventually
from tests.servers_db import require_binary
from tests.tls_files import make_tls_files

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
POWER = "dijon/LC-0001/power_kw"
DIMMING = "dijon/LC-0001/dimming_pct"
MSG = "dijon/IP-0001/message"
CONNECTED = "_system/collector/simulator/connected"


def _config(influx_table: str, backend: str = "duckdb"):
    """Return the demo config with a [historian.influx] table, as if read from config.toml."""
    text = (ROOT / "config.toml").read_text(encoding="utf-8")
    text = text.replace('backend = "duckdb"', f'backend = "{backend}"', 1)
    return parse_config(text + "\n" + influx_table, str(ROOT / "config.toml"))


def test_layout_is_measurement_per_class_and_field_per_signal(influx_historian, influxd) -> None:
    """Tags of the register land in their class's measurement; others under their first part."""
    influx_historian.write(
        [
            Sample(POWER, T0, 1.5),
            Sample(DIMMING, T0, 80.0),
            Sample(CONNECTED, T0, True),
        ]
    )
    db = influx_historian.http.database
    rows = influxd.query('SELECT * FROM "streetlight_cabinet"', db)["results"][0]["series"][0]
    assert sorted(rows["columns"]) == sorted(
        ["time", "asset", "commune", "power_kw", "power_kw.q", "dimming_pct", "dimming_pct.q"]
    )
    row = dict(zip(rows["columns"], rows["values"][0], strict=True))
    assert (row["asset"], row["commune"], row["power_kw"], row["power_kw.q"]) == (
        "LC-0001",
        "dijon",
        1.5,
        0,
    )
    system = influxd.query('SELECT * FROM "_system"', db)["results"][0]["series"][0]
    row = dict(zip(system["columns"], system["values"][0], strict=True))
    assert row["path"] == "collector/simulator/connected" and row["value"] == 1
    assert influx_historian.tags() == sorted([POWER, DIMMING, CONNECTED])


def test_same_tag_and_time_overwrites(influx_historian) -> None:
    """Writing again at the same tag and time replaces the sample, even with a valueless one."""
    influx_historian.write([Sample(POWER, T0, 5.0), Sample(DIMMING, T0, 40.0)])
    influx_historian.write([Sample(POWER, T0, 7.0)])
    df = influx_historian.query([POWER, DIMMING], T0, T0 + timedelta(seconds=1))
    assert dict(zip(df.tag, df.value, strict=True)) == {POWER: 7.0, DIMMING: 40.0}
    influx_historian.write([Sample(POWER, T0, float("nan"), Quality.COMM_LOSS)])
    df = influx_historian.query([POWER], T0, T0 + timedelta(seconds=1))
    assert math.isnan(df.value.iloc[0]) and df.quality.iloc[0] == Quality.COMM_LOSS
    assert influx_historian.count() == 2


def test_odd_values_and_names_round_trip(influx_historian) -> None:
    """Exponents, text with quotes, backslashes and newlines, and names with spaces survive."""
    odd = {
        POWER: 1e-07,
        DIMMING: 1.5e20,
        MSG: 'Déviation "rue, Berbisey"\\\nsuite',
        "_kpi/énergie par commune/dijon,nord=1": 42.0,
        "solo": -3.25,
    }
    influx_historian.write([Sample(tag, T0, v) for tag, v in odd.items()])
    df = influx_historian.query(list(odd), T0, T0 + timedelta(seconds=1))
    assert dict(zip(df.tag, df.value, strict=True)) == odd
    assert set(influx_historian.tags()) == set(odd)


def _reference(ts_s: list[float], values: list[float], every_s: float, agg: str) -> dict:
    """Integrate (trapezoid, value·h) or time-weight inside each bucket, as the contract says."""
    out: dict[float, float] = {}
    for b in sorted({t // every_s * every_s for t in ts_s}):
        pts = [(t, v) for t, v in zip(ts_s, values, strict=True) if b <= t < b + every_s]
        t = np.array([p[0] for p in pts]) / 3600
        v = np.array([p[1] for p in pts])
        area = float(np.trapezoid(v, t)) if len(v) > 1 else 0.0
        if agg == "integral":
            out[b] = area
        else:
            out[b] = area / (t[-1] - t[0]) if t[-1] > t[0] else float(v[0])
    return out


@pytest.mark.parametrize("where", ["pushed down", "from raw points"])
def test_twa_and_integral_stay_inside_each_bucket(influx_historian, monkeypatch, where) -> None:
    """twa and integral use only samples inside each bucket (not InfluxQL's edge interpolation)."""
    if where == "from raw points":
        monkeypatch.setattr(influx_query, "MAX_PUSHDOWN_STATEMENTS", 0)
    offsets = [0, 40, 50, 130, 170, 175, 245, 300, 410]  # seconds, irregular, across buckets
    values = [10.0, 20.0, 20.0, 5.0, 0.0, 30.0, 12.0, 7.0, 9.0]
    influx_historian.write(
        [Sample(POWER, T0 + timedelta(seconds=o), v) for o, v in zip(offsets, values, strict=True)]
        + [Sample(POWER, T0 + timedelta(seconds=200), float("nan"), Quality.BAD)]
    )
    end = T0 + timedelta(minutes=10)
    t0 = T0.timestamp()
    for agg in ("integral", "twa"):
        df = influx_historian.query([POWER], T0, end, every=timedelta(minutes=2), agg=agg)
        expect = _reference([t0 + o for o in offsets], values, 120, agg)
        got = {ts.timestamp(): v for ts, v in zip(df.ts, df.value, strict=True)}
        assert got == pytest.approx(expect), agg
        # The Bad sample at +200 s makes its bucket's quality Bad, without a value.
        assert list(df.quality) == [0, 2, 0, 0], agg


def test_aggregates_are_pushed_down_to_influxql(influx_historian) -> None:
    """mean per bucket is computed by InfluxDB: one row per bucket comes back, not every point."""
    influx_historian.write([Sample(POWER, T0 + timedelta(seconds=i), float(i)) for i in range(600)])
    sent: list[str] = []
    real = influx_historian.http.query

    def spy(statements):
        sent.extend(statements)
        answers = real(statements)
        assert sum(len(s["values"]) for a in answers for s in a) == 10
        return answers

    influx_historian.http.query = spy
    df = influx_historian.query(
        [POWER], T0, T0 + timedelta(minutes=10), every=timedelta(minutes=1), agg="mean"
    )
    assert list(df.value) == [29.5 + 60 * i for i in range(10)]
    assert len(sent) == 1 and 'mean("power_kw")' in sent[0] and "GROUP BY time(" in sent[0]


def test_v1_write_into_a_retention_policy(influxd, influx_database, small_register) -> None:
    """With retention_policy set, samples go to that policy and are read back from it."""
    influxd.query(
        f'CREATE RETENTION POLICY "raw" ON "{influx_database}" DURATION 520w REPLICATION 1'
    )
    h = InfluxHistorian(
        influxd.url,
        api="v1",
        database=influx_database,
        retention_policy="raw",
        register=small_register,
    )
    h.write([Sample(POWER, T0, 3.0), Sample(MSG, T0, "Travaux")])
    answer = influxd.query('SELECT "power_kw" FROM "raw"."streetlight_cabinet"', influx_database)
    assert answer["results"][0]["series"][0]["values"][0][1] == 3.0
    assert list(h.query([POWER, MSG], T0, T0 + timedelta(seconds=1)).value) == ["Travaux", 3.0]
    assert h.tags() == [MSG, POWER] and h.count() == 2
    assert h.latest([MSG]).value.iloc[0] == "Travaux"
    h.close()


def test_field_type_conflict_is_counted_not_retried(influx_historian, influxd) -> None:
    """Points InfluxDB refuses for good are logged and counted; write() does not raise."""
    influx_historian.write([Sample(POWER, T0, 1.0)])
    # A historian without the register sees power_kw's kind only from the value: text here.
    other = InfluxHistorian(
        influxd.url,
        api="v1",
        database=influx_historian.http.database,
        register={POWER: "streetlight_cabinet"},
    )
    stored = other.write([Sample(POWER, T0 + timedelta(seconds=1), "on")])
    assert stored == 0 and other.rejected == 1
    other.close()


def test_v2_api_on_influxdb_1_6_says_to_use_v1(influxd, influx_database) -> None:
    """InfluxDB before 1.8 has no /api/v2/write: the error says which setting to change."""
    h = InfluxHistorian(influxd.url, api="v2", database=influx_database)
    with pytest.raises(InfluxError, match=r'HTTP 404.*set api = "v1"'):
        h.write([Sample(CONNECTED, T0, True)])
    h.close()


def test_missing_server_binary_skips_or_fails_in_ci(monkeypatch) -> None:
    """Without the Debian package a server test is skipped, but fails when CI=true."""
    missing = Path("/nonexistent/influxd")
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="is not installed"):
        require_binary(missing)
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="is not installed"):
        require_binary(missing)


def test_v2_write_reaches_victoria_metrics(victoria_metrics, small_register) -> None:
    """influxdb-client's /api/v2/write delivers values, times and tags (read back by export)."""
    h = InfluxHistorian(victoria_metrics.url, api="v2", bucket="beffroi", register=small_register)
    samples = [Sample(POWER, T0 + timedelta(milliseconds=250 * i), 1.25 * i) for i in range(8)]
    samples.append(Sample(POWER, T0 + timedelta(seconds=3), float("nan"), Quality.COMM_LOSS))
    samples.append(Sample(CONNECTED, T0, False))
    assert h.write(samples) == len(samples)
    (power,) = victoria_metrics.export('{__name__="streetlight_cabinet_power_kw"}')
    assert power["metric"] | {"__name__": ""} == {
        "__name__": "",
        "asset": "LC-0001",
        "commune": "dijon",
    }
    assert power["values"] == [1.25 * i for i in range(8)]
    t0_ms = int(T0.timestamp() * 1000)
    assert power["timestamps"] == [t0_ms + 250 * i for i in range(8)]
    (quality,) = victoria_metrics.export('{__name__="streetlight_cabinet_power_kw.q"}')
    # 2 × quality + 1 when the sample has no value: CommLoss without value = 7.
    assert quality["values"] == [0] * 8 + [7]
    (connected,) = victoria_metrics.export('{__name__="_system_value"}')
    assert connected["metric"]["path"] == "collector/simulator/connected"
    assert connected["values"] == [0] and connected["timestamps"] == [t0_ms]
    h.close()


def test_user_and_password_come_from_the_environment(db_server_factory, monkeypatch) -> None:
    """Credentials are read from the variables named in config; missing or wrong ones are clear."""
    server = db_server_factory("influxd", auth=("beffroi", "s3cret"))
    server.create_database("city")
    table = f"""
[historian.influx]
url = "{server.url}"
api = "v1"
database = "city"
username_env = "TEST_INFLUX_USER"
password_env = "TEST_INFLUX_PASSWORD"
"""
    cfg = _config(table)
    register = {POWER: "streetlight_cabinet"}
    monkeypatch.delenv("TEST_INFLUX_USER", raising=False)
    with pytest.raises(ConfigError, match="username_env: environment variable TEST_INFLUX_USER"):
        InfluxHistorian.from_config(cfg, register)
    monkeypatch.setenv("TEST_INFLUX_USER", "beffroi")
    monkeypatch.setenv("TEST_INFLUX_PASSWORD", "wrong")
    h = InfluxHistorian.from_config(cfg, register)
    with pytest.raises(InfluxError, match="HTTP 401: authorization failed"):
        h.write([Sample(POWER, T0, 1.0)])
    monkeypatch.setenv("TEST_INFLUX_PASSWORD", "s3cret")
    h = InfluxHistorian.from_config(cfg, register)
    h.write([Sample(POWER, T0, 1.0)])
    assert list(h.query([POWER], T0, T0 + timedelta(seconds=1)).value) == [1.0]


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[tuple[str, str]]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen.append((self.path.split("?")[0], self.headers.get("Authorization", "")))
        if self.path.startswith("/query"):
            body = b'{"results":[{"statement_id":0}]}\n'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(204)
            self.end_headers()

    def log_message(self, *args) -> None:
        pass


def test_token_comes_from_the_environment(monkeypatch) -> None:
    """The token named by token_env is sent on v2 writes and on InfluxQL queries.

    A recording HTTP server stands in here: no real server in the test set checks tokens
    (InfluxDB 1.6.7 predates token auth; VictoriaMetrics ignores the header).
    """
    server = http.server.HTTPServer(("127.0.0.1", 0), _RecordingHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        cfg = _config(f'[historian.influx]\nurl = "{url}"\ntoken_env = "TEST_INFLUX_TOKEN"\n')
        monkeypatch.delenv("TEST_INFLUX_TOKEN", raising=False)
        with pytest.raises(ConfigError, match="environment variable TEST_INFLUX_TOKEN is not set"):
            InfluxHistorian.from_config(cfg, {})
        monkeypatch.setenv("TEST_INFLUX_TOKEN", "tok-123")
        h = InfluxHistorian.from_config(cfg, {})
        h.write([Sample(CONNECTED, T0, True)])
        h.query([CONNECTED], T0, T0 + timedelta(seconds=1))
        h.close()
    finally:
        server.shutdown()
        server.server_close()
    assert _RecordingHandler.seen == [
        ("/api/v2/write", "Token tok-123"),
        ("/query", "Token tok-123"),
    ]


def test_tls_with_a_ca_file(db_server_factory, tmp_path) -> None:
    """HTTPS works with the CA file from config and fails clearly without it."""
    ca, cert, key = make_tls_files(tmp_path / "tls")
    server = db_server_factory("influxd", tls=(ca, cert, key))
    server.create_database("city")
    assert server.url.startswith("https://")
    h = InfluxHistorian.from_config(
        _config(
            f'[historian.influx]\nurl = "{server.url}"\napi = "v1"\n'
            f'database = "city"\nca_file = "{ca}"\n'
        ),
        {},
    )
    h.write([Sample(CONNECTED, T0, True)])
    assert list(h.query([CONNECTED], T0, T0 + timedelta(seconds=1)).value) == [1.0]
    untrusting = InfluxHistorian(server.url, api="v1", database="city")
    with pytest.raises(InfluxUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        untrusting.write([Sample(CONNECTED, T0, True)])


@pytest.mark.parametrize("api", ["v1", "v2"])
def test_a_server_that_is_down_raises_quickly(db_server_factory, api) -> None:
    """write() and query() raise InfluxUnavailable at once, so the spool can take over."""
    kind = "influxd" if api == "v1" else "victoria-metrics"
    server = db_server_factory(kind)
    database = server.create_database("city") if api == "v1" else "city"
    h = InfluxHistorian(server.url, api=api, database=database, timeout_s=5)
    h.write([Sample(CONNECTED, T0, True)])
    server.stop()
    began = time.monotonic()
    with pytest.raises(InfluxUnavailable, match=rf"{server.url}.*(refused|unreachable)"):
        h.write([Sample(CONNECTED, T0 + timedelta(seconds=1), False)])
    with pytest.raises(InfluxUnavailable):
        h.latest()
    assert time.monotonic() - began < 5
    server.start()  # same port, same data
    assert h.write([Sample(CONNECTED, T0 + timedelta(seconds=1), False)]) == 1
    if api == "v1":
        assert list(h.query([CONNECTED], T0, T0 + timedelta(seconds=2)).value) == [1.0, 0.0]
    h.close()


def test_influx_config_is_validated() -> None:
    """Unknown keys, bad URLs and half credentials in [historian.influx] are config errors."""
    with pytest.raises(ConfigError) as err:
        _config('[historian.influx]\nurl = "influx:8086"\nusername_env = "U"\ntokn_env = "T"\n')
    text = str(err.value)
    assert "historian.influx.url: not an http(s) URL" in text
    assert "historian.influx.tokn_env: unknown key" in text
    with pytest.raises(ConfigError, match="username_env and password_env go together"):
        _config('[historian.influx]\nusername_env = "U"\n')
    cfg = _config("", backend="influx")
    assert cfg.historian.backend == "influx" and cfg.historian.influx.api == "v2"


async def _outage_under_load(server, historian, tags, folder, outage_s: float) -> int:
    """Feed the write buffer steadily, stop the server for outage_s, restart it, wait to drain."""
    buffer = WriteBuffer(historian, Spool(folder, max_bytes=10**9), flush_interval_s=0.1)
    loop = asyncio.get_running_loop()
    step = 0

    async def produce(seconds: float) -> None:
        nonlocal step
        until = loop.time() + seconds
        while loop.time() < until:
            at = T0 + timedelta(milliseconds=100 * step)
            buffer.put([Sample(tag, at, float(step)) for tag in tags])
            step += 1
            await asyncio.sleep(0.02)

    async with contextlib.AsyncExitStack() as stack:
        await buffer.start(stack)
        await produce(1.0)
        await asyncio.to_thread(server.stop)
        await produce(outage_s)
        assert not buffer.backend_ok and buffer.spool.pending > 0
        await asyncio.to_thread(server.start)  # same port, same data
        await produce(1.0)
        await eventually(lambda: buffer.backend_ok and not buffer.depth, within=90)
    assert buffer.dropped == 0 and buffer.failures > 0
    return step


OUTAGE_S = 30.0  # as the issue asks: the server is away for 30 s while samples keep coming


async def test_influxdb_outage_under_load_loses_nothing(
    db_server_factory, tmp_path, small_register
):
    """InfluxDB 1.6.7 stopped for 30 s under load: afterwards every sample is there once."""
    server = db_server_factory("influxd")
    database = server.create_database("city")
    h = InfluxHistorian(server.url, api="v1", database=database, register=small_register)
    numeric = [t for t, spec in small_register.tags.items() if spec.kind != "str"][:40]
    numeric.append(CONNECTED)
    steps = await _outage_under_load(server, h, numeric, tmp_path / "spool", OUTAGE_S)
    assert h.count() == steps * len(numeric)
    df = h.query(numeric, T0, T0 + timedelta(days=1))
    assert set(df.tag) == set(numeric)
    for tag, rows in df.groupby("tag"):
        assert list(rows.value) == [float(i) for i in range(steps)], tag
    h.close()


async def test_victoria_metrics_outage_loses_nothing(db_server_factory, tmp_path, small_register):
    """The v2 write path through an outage: every sample reaches VictoriaMetrics once."""
    server = db_server_factory("victoria-metrics")
    h = InfluxHistorian(server.url, api="v2", bucket="city", register=small_register)
    tags = [t for t, spec in small_register.tags.items() if spec.signal == "power_kw"][:20]
    steps = await _outage_under_load(server, h, tags, tmp_path / "spool", 5.0)
    exported = server.export('{__name__=~".+_power_kw"}')
    assert len(exported) == len(tags)
    for series in exported:
        assert series["values"] == [float(i) for i in range(steps)], series["metric"]
        assert len(set(series["timestamps"])) == steps
    h.close()
