"""Every entry refuses what is out of shape with 400 and a one-line reason, never a 500.

A real gateway runs (historian, alarms, KPIs, control, the HMI and its token API); the token API
and every Dash callback the HMI registers are swept with wrong types, sizes, depths and ranges:
a table of known cases, then generated ones (hypothesis).
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from beffroi.api import routes
from beffroi.api.gateway_file import gateway_file_path, read_gateway_file
from beffroi.app.config import demo_config
from beffroi.app.runtime import Runtime
from beffroi.core.limits import COMMENT_MAX
from beffroi.core.register import build_register
from beffroi.hmi.users import UserError, UserStore
from tests.conftest import free_port
from tests.test_hmi import logged_in_opener

DEEP = "[" * 5000 + "]" * 5000  # JSON nested deeper than any parser's recursion


@contextlib.contextmanager
def _gateway(cfg: Any) -> Iterator[Runtime]:
    """Run a gateway on its own event loop in a thread, for synchronous tests to call."""
    runtime = Runtime(cfg, build_register(cfg, assets=40), simulator=False, hmi=True, demo=True)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    stack = contextlib.AsyncExitStack()
    try:
        asyncio.run_coroutine_threadsafe(runtime.start(stack), loop).result(60)
        yield runtime
    finally:
        asyncio.run_coroutine_threadsafe(stack.aclose(), loop).result(60)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.fixture(scope="module")
def gateway(demo_config_fixture, tmp_path_factory) -> Iterator[tuple[Runtime, str, str]]:
    """A running gateway, its base URL and API token."""
    data = tmp_path_factory.mktemp("bounds")
    cfg = demo_config(demo_config_fixture, data=data, port=free_port(), opcua_port=free_port())
    with _gateway(cfg) as runtime:
        recorded = read_gateway_file(gateway_file_path(cfg))
        assert recorded is not None and runtime.hmi_server is not None
        yield runtime, runtime.hmi_server.url, recorded.token


def _send(
    base: str,
    method: str,
    path: str,
    data: bytes | None = None,
    token: str | None = None,
    opener: Any = None,
) -> tuple[int, str, bytes]:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base.rstrip("/") + path, data=data, method=method, headers=headers)
    try:
        with (opener or urllib.request.build_opener()).open(req, timeout=30) as resp:
            return resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


Q = routes.QUERY.path
API_CASES = [
    ("GET", f"{Q}?tag=dijon/LC-0001/power_kw&start=-99999999d", None, "too far back"),
    ("GET", f"{Q}?tag=dijon/LC-0001/power_kw&max_points=-5", None, "max_points"),
    ("GET", f"{Q}?tag=dijon/LC-0001/power_kw&max_points=abc", None, "max_points"),
    ("GET", f"{Q}?tag=dijon/LC-0001/power_kw&max_points=100000000000", None, "max_points"),
    ("GET", Q, None, "tag parameters"),
    ("GET", f"{Q}?tag={'x' * 10_000}", None, "tag : 200 caractères au maximum"),
    ("GET", f"{Q}?tag=dijon/LC-0001/power_kw&every=0s&agg=mean", None, "width"),
    ("GET", f"{Q}?tag=dijon/LC-0001/power_kw&every=99999999999999d&agg=mean", None, "wide"),
    ("GET", f"{Q}?tag=dijon/LC-0001/power_kw&every=1h&agg=drop", None, "aggregate"),
    ("GET", f"{routes.ALARMS_EVENTS.path}?limit=-1", None, "limit"),
    ("GET", f"{routes.ALARMS_EVENTS.path}?limit=abc", None, "limit"),
    ("GET", f"{routes.ALARMS_EVENTS.path}?start=-99999999d", None, "too far back"),
    ("POST", routes.ALARMS_ACK.path, b"[]", "JSON object"),
    ("POST", routes.ALARMS_ACK.path, b"{not json", "JSON object"),
    ("POST", routes.ALARMS_ACK.path, DEEP.encode(), ""),
    ("POST", routes.ALARMS_ACK.path, b'{"ids": 5, "user": "u"}', "ids"),
    ("POST", routes.ALARMS_ACK.path, b'{"ids": [{"a": 1}], "user": "u"}', "identifiant d'alarme"),
    (
        "POST",
        routes.ALARMS_ACK.path,
        json.dumps({"ids": ["a"], "user": "u" * 100_000}).encode(),
        "utilisateur : 64 caractères au maximum",
    ),
    ("POST", routes.ALARMS_ACK.path, b'{"ids": ["a"], "user": "a\\u0000b"}', "contrôle"),
    (
        "POST",
        routes.ALARMS_ACK.path,
        json.dumps({"ids": ["a"], "user": "u", "comment": "c" * (COMMENT_MAX + 1)}).encode(),
        "commentaire : 500 caractères au maximum",
    ),
    (
        "POST",
        routes.ALARMS_SHELVE.path,
        b'{"id": "a", "user": "u", "minutes": {"a": 1}}',
        "minutes",
    ),
    ("POST", routes.ALARMS_SERVICE.path, b'{"id": ["x"], "user": "u"}', "identifiant d'alarme"),
    ("POST", routes.KPI_COMPUTE.path, b'{"from": [], "to": 5}', "from and to"),
    ("GET", f"{routes.AUDIT_EXPORT.path}?start=-99999999d", None, "too far back"),
    ("GET", f"{routes.KPI_EXPORT.path}?resolution=week", None, "resolution"),
]


@pytest.mark.parametrize(("method", "path", "body", "said"), API_CASES)
def test_the_api_refuses_what_is_out_of_shape(gateway, method, path, body, said) -> None:
    """Each known case is a 400 whose JSON error says what was wrong."""
    _, base, token = gateway
    status, kind, raw = _send(base, method, path, body, token)
    assert status == 400, raw[:300]
    assert kind.startswith("application/json")
    assert said in json.loads(raw)["error"]


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
BODIES = st.one_of(
    JSON.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries(
        {
            "ids": JSON,
            "id": JSON,
            "user": JSON,
            "comment": JSON,
            "minutes": JSON,
            "out": JSON,
            "from": JSON,
            "to": JSON,
        }
    ).map(lambda v: json.dumps(v).encode()),
    st.binary(max_size=200),
)
PARAMS = st.dictionaries(
    st.sampled_from(
        [
            "tag",
            "start",
            "end",
            "every",
            "agg",
            "max_points",
            "limit",
            "commune",
            "state",
            "from",
            "to",
            "resolution",
            "kpi",
            "all",
            "format",
        ]
    ),
    st.text(max_size=30),
    max_size=6,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(route=st.sampled_from([r for r in routes.ALL if r.method == "POST"]), body=BODIES)
def test_generated_bodies_never_get_a_500(gateway, route, body) -> None:
    """Whatever a client posts to a command route, the answer is JSON and not a server error."""
    _, base, token = gateway
    status, kind, raw = _send(base, route.method, route.path, body, token)
    assert status < 500, raw[:300]
    assert kind.startswith("application/json")


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(route=st.sampled_from([r for r in routes.ALL if r.method == "GET"]), params=PARAMS)
def test_generated_parameters_never_get_a_500(gateway, route, params) -> None:
    """Whatever query a client sends to a read route, the answer is not a server error."""
    _, base, token = gateway
    query = urllib.parse.urlencode(params)
    status, kind, raw = _send(base, "GET", f"{route.path}?{query}", None, token)
    assert status < 500, raw[:300]
    assert kind.startswith(("application/json", "text/csv"))


HOSTILE = [12345, "x" * 100_000, {"a": [1, 2]}, [None, {"b": "c"}], None, True, -1e308, "a\x00b"]


def _callbacks(base: str, opener: Any) -> list[dict[str, Any]]:
    status, _, raw = _send(base, "GET", "/_dash-dependencies", None, None, opener)
    assert status == 200
    deps: list[dict[str, Any]] = json.loads(raw)
    return deps


def _outputs(spec: str) -> list[dict[str, str]]:
    """Turn Dash's output spec ("id.prop" or "..id.prop...id2.prop2..") into its list."""
    parts = spec.strip(".").split("...") if spec.startswith("..") else [spec]
    return [{"id": p.rsplit(".", 1)[0], "property": p.rsplit(".", 1)[1]} for p in parts if p]


def test_every_callback_refuses_hostile_values_with_400_not_500(gateway) -> None:
    """Each callback of every page, given wrong types, huge texts or NUL, answers 2xx/400/403."""
    runtime, base, _ = gateway
    password = runtime.demo_passwords["admin"]
    opener = logged_in_opener(base, "admin", password)
    deps = _callbacks(base, opener)
    assert len(deps) >= 20  # every page's callbacks
    server_errors = []
    for dep in deps:
        if "{" in dep["output"]:  # pattern-matching ids: none in the pages today
            continue
        for value in HOSTILE:
            payload = {
                "output": dep["output"],
                "outputs": _outputs(dep["output"])
                if dep["output"].startswith("..")
                else _outputs(dep["output"])[0],
                "inputs": [{**i, "value": value} for i in dep["inputs"]],
                "state": [{**s, "value": value} for s in dep.get("state", [])],
                "changedPropIds": [f"{i['id']}.{i['property']}" for i in dep["inputs"][:1]],
            }
            status, _, _ = _send(
                base, "POST", "/_dash-update-component", json.dumps(payload).encode(), None, opener
            )
            if status >= 500:
                server_errors.append((dep["output"], repr(value)[:40], status))
    assert server_errors == []


def test_bodies_too_big_or_too_deep_are_refused_before_the_app(gateway) -> None:
    """A 10 MB callback body gets 413 without reaching Dash; a deep one 400."""
    runtime, base, _ = gateway
    opener = logged_in_opener(base, "admin", runtime.demo_passwords["admin"])
    # Announced, not sent: the front answers from the headers, before reading any of it.
    parts = urllib.parse.urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
    conn.putrequest("POST", "/_dash-update-component")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(10_000_000))
    conn.endheaders()
    assert conn.getresponse().status == 413
    conn.close()
    status, _, _ = _send(base, "POST", "/_dash-update-component", DEEP.encode(), None, opener)
    assert status == 400


def test_logins_and_accounts_are_bounded(gateway, tmp_path: Path) -> None:
    """A 100 kB user name or password is refused before any hashing; names are checked."""
    _, base, _ = gateway
    form = urllib.parse.urlencode({"username": "u" * 100_000, "password": "p"}).encode()
    req = urllib.request.Request(base + "login", data=form, method="POST")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req, timeout=30)
    assert err.value.code in (400, 413)
    store = UserStore(tmp_path / "users.duckdb")
    try:
        for name in ("a\x00b", "x" * 65, "a b", "<script>"):
            with pytest.raises(UserError, match="nom d'utilisateur"):
                store.add(name, "long enough password", "viewer", ["*"])
        with pytest.raises(UserError, match="trop long"):
            store.add("marie", "p" * 2000, "viewer", ["*"])
        assert store.add("léa.martin-2", "long enough password", "viewer", ["*"]).name
    finally:
        store.close()
