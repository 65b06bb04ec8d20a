"""While a gateway owns the DuckDB file, `beffroi query` reads through its HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from beffroi.api.gateway_file import gateway_file_path
from beffroi.app.config import demo_config
from beffroi.app.runtime import Runtime
from beffroi.core.register import build_register
from tests.conftest import ROOT, eventually, free_port


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "beffroi", *args], capture_output=True, text=True, timeout=60
    )


async def test_query_goes_through_the_running_gateway(demo_config_fixture, tmp_path: Path) -> None:
    """The CLI finds the gateway, says so, and returns the rows the gateway stored."""
    cfg = demo_config(demo_config_fixture, data=tmp_path, port=free_port(), opcua_port=free_port())
    cfg_file = tmp_path / "gw.toml"
    text = (ROOT / "config.toml").read_text()
    text = text.replace('path = "var/beffroi.duckdb"', f'path = "{tmp_path / "beffroi.duckdb"}"')
    cfg_file.write_text(text)
    register = build_register(cfg, assets=30)
    runtime = Runtime(cfg, register, simulator=True, hmi=True)
    tag = next(t for t in register.tags if t.endswith("/power_kw"))
    async with contextlib.AsyncExitStack() as stack:
        await runtime.start(stack)
        await eventually(lambda: runtime.buffer.written > len(register.tags), within=30)
        info = json.loads(gateway_file_path(cfg).read_text())
        assert gateway_file_path(cfg).stat().st_mode & 0o777 == 0o600
        proc = await asyncio.to_thread(_cli, "query", "-c", str(cfg_file), tag, "--start", "-1h")
        assert proc.returncode == 0, proc.stderr
        assert f"read through the running gateway at {info['url']}" in proc.stderr
        rows = pd.read_csv(io.StringIO(proc.stdout))
        assert set(rows.tag) == {tag} and len(rows) >= 1
        # The same columns as read from the file: quality and the equipment's status code.
        assert list(rows.columns) == ["ts", "tag", "value", "quality", "status"]
        assert set(rows.quality) == {0} and set(rows.status) == {0}  # Good

        bad = urllib.request.Request(
            f"{info['url']}/api/v1/query?tag={tag}", headers={"Authorization": "Bearer nope"}
        )
        with pytest.raises(urllib.error.HTTPError) as err:
            await asyncio.to_thread(urllib.request.urlopen, bad, timeout=10)
        assert err.value.code == 401
    assert not gateway_file_path(cfg).exists()  # removed at shutdown


def test_api_answers_are_valid_json_with_nan_as_null() -> None:
    """A KPI without a value (NaN) reaches the CLI as null, never as invalid `NaN`."""
    from beffroi.api.http import json_response

    body = {"value": float("nan"), "rows": [{"v": 1.5}, {"v": float("inf")}], "n": 2}
    text = json_response(body).get_data(as_text=True)
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text) == {"value": None, "rows": [{"v": 1.5}, {"v": None}], "n": 2}


async def test_commands_use_the_gateway_when_it_answers_and_the_files_otherwise(
    demo_config_fixture, tmp_path: Path
) -> None:
    """One rule for every command: the running gateway (its refusals said, exit 1), else the files,
    also when gateway.json is left behind by a gateway that no longer runs."""
    from beffroi.api.gateway_file import write_gateway_file

    cfg = demo_config(demo_config_fixture, data=tmp_path, port=free_port(), opcua_port=free_port())
    cfg_file = tmp_path / "gw.toml"
    text = (ROOT / "config.toml").read_text()
    text = text.replace('path = "var/beffroi.duckdb"', f'path = "{tmp_path / "beffroi.duckdb"}"')
    cfg_file.write_text(text)
    register = build_register(cfg, assets=30)
    runtime = Runtime(cfg, register, simulator=True, hmi=True)
    tag = next(t for t in register.tags if t.endswith("/power_kw"))
    async with contextlib.AsyncExitStack() as stack:
        await runtime.start(stack)
        await eventually(lambda: runtime.buffer.written > len(register.tags), within=30)
        too_many = [f"{tag}{i}" for i in range(501)]
        proc = await asyncio.to_thread(_cli, "query", "-c", str(cfg_file), *too_many)
        assert proc.returncode == 1
        assert "the gateway refused: give between 1 and 500 tag parameters" in proc.stderr
        assert "Traceback" not in proc.stderr

    # A crashed gateway leaves its file: nobody answers at that address, the files are free.
    write_gateway_file(gateway_file_path(cfg), f"http://127.0.0.1:{free_port()}/", "stale")
    proc = await asyncio.to_thread(_cli, "query", "-c", str(cfg_file), tag, "--start", "-1h")
    assert proc.returncode == 0, proc.stderr
    assert "through the running gateway" not in proc.stderr
    rows = pd.read_csv(io.StringIO(proc.stdout))
    assert set(rows.tag) == {tag} and len(rows) >= 1
    listed = await asyncio.to_thread(
        _cli, "alarms", "list", "-c", str(cfg_file), "--format", "json"
    )
    assert listed.returncode == 0, listed.stderr
    assert isinstance(json.loads(listed.stdout), list)


def test_api_answers_json_whatever_runs_and_never_the_hmi_page(
    demo_config_fixture, small_register, tmp_path: Path
) -> None:
    """A gateway without alarms and audit log still answers their routes, in JSON (409, why);
    unknown paths and wrong methods under the API's prefix get JSON, not the HMI's page; and
    the CLI says the gateway refused, instead of reading a page as data."""
    from beffroi.api.client import GatewayClient, GatewayError
    from beffroi.api.gateway_file import new_token
    from beffroi.api.routes import AUDIT_EXPORT, AUDIT_VERIFY, Route
    from beffroi.core.live import LiveValues
    from beffroi.historian.duckdb.historian import DuckDBHistorian
    from beffroi.hmi.app import create_app
    from beffroi.hmi.server import HmiServer
    from beffroi.hmi.users import UserStore

    hist = DuckDBHistorian(tmp_path / "h.duckdb")
    users = UserStore(tmp_path / "users.duckdb")
    token = new_token()
    app = create_app(
        demo_config_fixture, small_register, LiveValues(), hist, users=users, api_token=token
    )
    server = HmiServer(app, "127.0.0.1", free_port(), threads=4)
    server.start()
    try:
        base = server.url.rstrip("/")

        def call(method: str, path: str) -> tuple[int, str, dict]:
            req = urllib.request.Request(
                base + path, method=method, headers={"Authorization": f"Bearer {token}"}
            )
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return resp.status, resp.headers["Content-Type"], json.loads(resp.read())
            except urllib.error.HTTPError as exc:
                return exc.code, exc.headers["Content-Type"], json.loads(exc.read())

        status, kind, body = call("GET", "/api/v1/audit/verify")
        assert (status, kind) == (409, "application/json") and "not open" in body["error"]
        status, _, body = call("POST", "/api/v1/alarms/ack")
        assert status == 409 and "alarms are not running" in body["error"]
        assert call("GET", "/api/v1/nope")[:2] == (404, "application/json")
        status, _, body = call("POST", "/api/v1/query")
        assert status == 405 and "GET" in body["error"]

        client = GatewayClient(server.url, token)
        with pytest.raises(GatewayError, match="the gateway refused: the audit log is not open"):
            client.json(AUDIT_VERIFY)
        with pytest.raises(GatewayError, match="the gateway refused"):
            client.text(AUDIT_EXPORT)
        # Whatever answers with a page (a proxy's login, an older gateway) is no data either.
        page = r"answered text/html.* where application/json was expected"
        with pytest.raises(GatewayError, match=page):
            client.json(Route("GET", "/login"))
    finally:
        server.stop()
        users.close()
        hist.close()
