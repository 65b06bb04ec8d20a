"""Login and commune scopes: every page and callback needs a session; data stays in scope."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.parse
import urllib.request
from datetime import timedelta
from pathlib import Path

import pytest

from beffroi.core.live import LiveValues
from beffroi.core.model import Sample, utcnow
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import UserStore
from tests.browser import chromium, log_in
from tests.conftest import ROOT, free_port
from tests.test_hmi import ungroup_markers

SUP, OP, PW = "sup", "op-talant", "correct horse battery"


class NoRedirect(urllib.request.HTTPRedirectHandler):
    """Let tests see redirects instead of following them."""

    def redirect_request(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        return None


@pytest.fixture(scope="module")
def gateway(tmp_path_factory, demo_config, small_register):
    """Serve the HMI with two users: a supervisor of all communes, an operator of Talant."""
    folder = tmp_path_factory.mktemp("auth")
    live = LiveValues()
    now = utcnow()
    live.update(
        [
            Sample(t.name, now, 1.0 if t.kind == "float" else False)
            for t in small_register.tags.values()
            if t.kind != "str"
        ]
    )
    hist = DuckDBHistorian(folder / "h.duckdb")
    hist.write(
        [
            Sample(t, now - timedelta(minutes=1), 3.0)
            for t in small_register.tags
            if t.endswith("/power_kw")
        ]
    )
    users = UserStore(folder / "users.duckdb", set(small_register.communes))
    users.add(SUP, PW, "supervisor", ["*"])
    users.add(OP, PW, "operator", ["talant"])
    app = create_app(demo_config, small_register, live, hist, users=users)
    server = HmiServer(app, "127.0.0.1", free_port(), threads=4)
    server.start()
    yield server
    server.stop()
    users.close()
    hist.close()


def _session(base: str, name: str, password: str = PW):
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    form = urllib.parse.urlencode({"username": name, "password": password}).encode()
    opener.open(base + "login", data=form, timeout=10).read()
    return opener


def _callback(opener, base: str, payload: dict) -> tuple[int, dict | str]:
    req = urllib.request.Request(
        base + "_dash-update-component",
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with opener.open(req, timeout=20) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _trend_request(tag: str) -> dict:
    return {
        "output": "..trends-graph.figure...trends-status.children..",
        "outputs": [
            {"id": "trends-graph", "property": "figure"},
            {"id": "trends-status", "property": "children"},
        ],
        "inputs": [
            {"id": "trends-tags", "property": "value", "value": [tag]},
            {"id": "trends-range", "property": "value", "value": "1h"},
            {"id": "trends-interval", "property": "n_intervals", "value": 1},
            {"id": "trends-zoom", "property": "data", "value": None},
        ],
        "changedPropIds": ["trends-tags.value"],
    }


def _map_request(communes: list[str] | None) -> dict:
    outs = [
        "map-fixed.data",
        "map-fixed.hideout",
        "map-moving.data",
        "map-moving.hideout",
        "map-frame.data",
        "map-legend.children",
        "map-digest.data",
    ]
    return {
        "output": ".." + "...".join(outs) + "..",
        "outputs": [dict(zip(("id", "property"), o.split("."), strict=True)) for o in outs],
        "inputs": [
            {"id": "map-interval", "property": "n_intervals", "value": 1},
            {"id": "map-commune", "property": "value", "value": communes},
            {"id": "map-domain", "property": "value", "value": None},
        ],
        "changedPropIds": ["map-commune.value"],
        "state": [{"id": "map-digest", "property": "data", "value": None}],
    }


def test_logged_out_requests_are_refused(gateway: HmiServer, small_register) -> None:
    """Pages redirect to the login form; callbacks and layouts answer 401; health is public."""
    opener = urllib.request.build_opener(NoRedirect)
    req = urllib.request.Request(gateway.url, headers={"Accept": "text/html"})
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(req, timeout=10)
    assert err.value.code == 302 and err.value.headers["Location"].startswith("/login")
    for path in ("_dash-layout", "_dash-dependencies"):
        with pytest.raises(urllib.error.HTTPError) as err:
            opener.open(gateway.url + path, timeout=10)
        assert err.value.code == 401
    tag = next(t for t in small_register.tags if t.endswith("/power_kw"))
    status, _ = _callback(opener, gateway.url, _trend_request(tag))
    assert status == 401
    with opener.open(gateway.url + "healthz", timeout=10) as resp:
        assert resp.status == 200


def test_session_cookie_is_httponly_and_samesite_strict(gateway: HmiServer) -> None:
    """The session cookie cannot be read by scripts nor sent by other sites."""
    opener = urllib.request.build_opener(NoRedirect)
    form = urllib.parse.urlencode({"username": SUP, "password": PW}).encode()
    with pytest.raises(urllib.error.HTTPError) as err:  # 302 after a good login
        opener.open(gateway.url + "login", data=form, timeout=10)
    cookie = err.value.headers["Set-Cookie"]
    assert "beffroi_session=" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie


def test_wrong_password_then_throttle(gateway: HmiServer) -> None:
    """Bad passwords get 401, and after five failures the name is throttled (429)."""
    form = urllib.parse.urlencode({"username": "intrus", "password": "guess-guess"}).encode()
    codes = []
    for _ in range(6):
        try:
            urllib.request.urlopen(gateway.url + "login", data=form, timeout=10)
        except urllib.error.HTTPError as exc:
            codes.append(exc.code)
    assert codes == [401] * 5 + [429]


def test_login_redirect_stays_on_site(gateway: HmiServer) -> None:
    """`next` pointing to another site is replaced by the home page."""
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(), NoRedirect)
    form = urllib.parse.urlencode(
        {"username": SUP, "password": PW, "next": "https://evil.example/x"}
    ).encode()
    with pytest.raises(urllib.error.HTTPError) as err:
        opener.open(gateway.url + "login", data=form, timeout=10)
    assert err.value.headers["Location"] == "/"


def test_operator_gets_403_on_another_communes_data(gateway: HmiServer, small_register) -> None:
    """A hand-built callback for Dijon's data is refused to Talant's operator, not to Talant's."""
    op = _session(gateway.url, OP)
    dijon = next(
        t
        for t, s in small_register.tags.items()
        if s.commune == "dijon" and t.endswith("/power_kw")
    )
    talant = next(
        t for t, s in small_register.tags.items() if s.commune == "talant" and s.kind == "float"
    )
    assert _callback(op, gateway.url, _trend_request(dijon))[0] == 403
    status, body = _callback(op, gateway.url, _trend_request(talant))
    assert status == 200 and body["response"]["trends-graph"]["figure"]["data"]
    assert _callback(op, gateway.url, _map_request(["dijon"]))[0] == 403
    status, body = _callback(op, gateway.url, _map_request(None))
    assert status == 200
    ids = {
        f["properties"]["id"]
        for layer in ("map-fixed", "map-moving")
        for f in body["response"][layer]["data"]["features"]
    }
    expected = {a.id for a in small_register.assets.values() if a.commune == "talant"}
    assert ids == expected
    sup = _session(gateway.url, SUP)
    assert _callback(sup, gateway.url, _trend_request(dijon))[0] == 200


def test_operator_sees_only_their_communes_markers_in_a_browser(gateway, small_register) -> None:
    """In Chromium, Talant's operator sees Talant's markers and nobody else's."""
    expected = sum(1 for a in small_register.assets.values() if a.commune == "talant")
    with chromium() as browser:
        page = browser.new_page()
        page.goto(gateway.url)
        assert "/login" in page.url
        log_in(page, gateway.url, OP, PW)
        assert "op-talant · opérateur · talant" in page.inner_text("#shell-user-name")
        ungroup_markers(page)
        page.wait_for_function(
            f"document.querySelectorAll('path.beffroi-asset').length === {expected}",
            timeout=20_000,
        )
        ids = page.evaluate(
            "Array.from(document.querySelectorAll('path.beffroi-asset'))"
            ".map(p => Array.from(p.classList).find(c => c.startsWith('beffroi-id-')).slice(11))"
        )
        assert set(ids) == {a.id for a in small_register.assets.values() if a.commune == "talant"}


def test_user_cli_validates_and_creates(tmp_path: Path) -> None:
    """`beffroi user add` refuses weak passwords and unknown communes, and creates users."""
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        (ROOT / "config.toml")
        .read_text()
        .replace("port = 8050", f'port = 8050\nusers_db = "{tmp_path / "u.duckdb"}"')
    )
    env = {**os.environ, "PW": "a-long-enough-password", "SHORT": "short"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "beffroi", "user", *args, "-c", str(cfg)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
        )

    bad = run("add", "x", "--role", "operator", "--commune", "gotham", "--password-env", "PW")
    assert bad.returncode == 2 and "commune(s) inconnue(s) : gotham" in bad.stderr
    weak = run("add", "x", "--role", "operator", "--commune", "talant", "--password-env", "SHORT")
    assert weak.returncode == 2 and "mot de passe trop court" in weak.stderr
    ok = run(
        "add",
        "marie",
        "--role",
        "operator",
        "--commune",
        "talant",
        "--commune",
        "daix",
        "--password-env",
        "PW",
    )
    assert ok.returncode == 0, ok.stderr
    listed = run("list")
    assert "marie\toperator\ttalant,daix\tfr" in listed.stdout  # French unless told otherwise
    english = run("set", "marie", "--language", "en")
    assert english.returncode == 0, english.stderr
    german = run("set", "marie", "--language", "de")
    assert german.returncode == 2 and "langue inconnue 'de'" in german.stderr
    assert "marie\toperator\ttalant,daix\ten" in run("list").stdout
    store = UserStore(tmp_path / "u.duckdb")
    assert store.verify("marie", "a-long-enough-password") is not None
    assert store.get("marie").language == "en"  # type: ignore[union-attr]
    assert store.verify("marie", "wrong-password!") is None
    store.close()
