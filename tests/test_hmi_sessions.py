"""Sessions end where they should, everywhere; login throttling slows guessing, locks nobody out.

Every test runs a real HMI (waitress, Flask-Login, the users file) and talks to it over HTTP
from loopback addresses chosen per client: 127.0.0.2 is another machine than 127.0.0.1.
"""

from __future__ import annotations

import http.client
import json
import urllib.parse
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import pytest

from beffroi.app.config import Config
from beffroi.control.audit import AuditLog
from beffroi.core.live import LiveValues
from beffroi.core.model import utcnow
from beffroi.core.register import Register
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.auth import Sessions
from beffroi.hmi.server import HmiServer
from beffroi.hmi.users import Session, UserStore
from tests.conftest import free_port
from tests.test_control_helpers import dash_request

PW = "correct horse battery"
NEW_PW = "a-new-long-password"
BUTTONS = ("users-add", "users-update", "users-passwd", "users-remove")


class Clock:
    """A clock the test moves: sessions age without anyone sleeping."""

    def __init__(self) -> None:
        self.now = utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Gateway:
    """A running HMI and what the tests reach besides HTTP."""

    server: HmiServer
    users: UserStore
    clock: Clock
    audit: AuditLog
    historian: DuckDBHistorian
    folder: Path


class Browser:
    """An HTTP client with its own cookies, connecting from a chosen loopback address."""

    def __init__(
        self, gw: Gateway, source: str = "127.0.0.1", cookies: dict[str, str] | None = None
    ) -> None:
        self.port = gw.server.port
        self.source = source
        self.cookies = dict(cookies or {})

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, http.client.HTTPMessage, str]:
        """Send one request; keep the cookies the answer sets (and drop those it deletes)."""
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=30, source_address=(self.source, 0)
        )
        sent = dict(headers or {})
        if self.cookies:
            sent["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        try:
            conn.request(method, path, body=body, headers=sent)
            resp = conn.getresponse()
            text = resp.read().decode()
        finally:
            conn.close()
        for line in resp.headers.get_all("Set-Cookie") or []:
            jar: SimpleCookie = SimpleCookie()
            jar.load(line)
            for key, morsel in jar.items():
                if morsel["max-age"] == "0":
                    self.cookies.pop(key, None)
                else:
                    self.cookies[key] = morsel.value
        return resp.status, resp.headers, text

    def login(self, name: str, password: str = PW) -> tuple[int, str | None]:
        """Open the form as a browser does, post it; return the status and any Retry-After."""
        self.send("GET", "/login")
        form = urllib.parse.urlencode({"username": name, "password": password}).encode()
        status, headers, _ = self.send(
            "POST", "/login", form, {"Content-Type": "application/x-www-form-urlencoded"}
        )
        return status, headers.get("Retry-After")

    def status(self) -> int:
        """Return the status of a request that needs a session (200, or 401 without one)."""
        return self.send("GET", "/_dash-layout")[0]

    def callback(self, payload: dict[str, Any]) -> tuple[int, Any]:
        """Post a hand-built Dash callback; return the status and the JSON answer."""
        status, _, text = self.send(
            "POST",
            "/_dash-update-component",
            json.dumps(payload).encode(),
            {"Content-Type": "application/json"},
        )
        return status, json.loads(text) if status == 200 else text


def _act(
    button: str,
    name: str,
    role: str | None = None,
    communes: list[str] | None = None,
    password: str | None = None,
) -> dict[str, Any]:
    """Build the Users page's callback for a click on one of its buttons."""
    body = dash_request(
        ["users-feedback.children", "users-grid.rowData", "users-password.value"],
        {f"{b}.n_clicks": int(b == button) for b in BUTTONS},
        {
            "users-name.value": name,
            "users-role.value": role,
            "users-communes.value": communes,
            "users-password.value": password,
            "users-language.value": "fr",
        },
    )
    body["changedPropIds"] = [f"{button}.n_clicks"]
    return body


def _feedback(answer: Any) -> str:
    return str(answer["response"]["users-feedback"]["children"])


def _serve(folder: Path, cfg: Config, register: Register, clock: Clock) -> Gateway:
    users = UserStore(folder / "u.duckdb", set(register.communes), clock=clock)
    hist = DuckDBHistorian(folder / "h.duckdb")
    audit = AuditLog(folder / "audit.duckdb")
    app = create_app(cfg, register, LiveValues(), hist, users=users, audit=audit)
    server = HmiServer(app, "127.0.0.1", free_port(), threads=4)
    server.start()
    return Gateway(server, users, clock, audit, hist, folder)


def _stop(gw: Gateway) -> None:
    gw.server.stop()
    gw.audit.close()
    gw.historian.close()
    gw.users.close()


@pytest.fixture
def gw(tmp_path: Path, demo_config: Config, small_register: Register) -> Iterator[Gateway]:
    """Serve the HMI with an admin of all communes and two operators of Talant."""
    clock = Clock()
    store = UserStore(tmp_path / "u.duckdb", set(small_register.communes), clock=clock)
    store.add("admin", PW, "admin", ["*"])
    store.add("op", PW, "operator", ["talant"])
    store.add("marie", PW, "operator", ["talant"])
    store.close()
    gateway = _serve(tmp_path, demo_config, small_register, clock)
    yield gateway
    _stop(gateway)


def test_logout_ends_the_session_even_for_a_copy_of_its_cookie(gw: Gateway) -> None:
    """After logout, the cookie the browser had is refused wherever it is replayed from.

    The old cookie was Flask's signed session naming the user, valid until it expired.
    """
    browser = Browser(gw)
    assert browser.login("op")[0] == 302 and browser.status() == 200
    copy = Browser(gw, cookies=browser.cookies)  # same address and headers: only the cookie
    assert copy.status() == 200
    assert browser.send("GET", "/logout")[0] == 302
    assert copy.status() == 401
    assert browser.status() == 401
    actions = list(gw.audit.frame().action)
    assert actions[-2:] == ["login", "logout"]


def test_a_password_change_ends_every_session_of_the_user(gw: Gateway) -> None:
    """An admin's new password for a user (Users page, or the store as `beffroi user passwd`
    uses it) logs the user out in every browser; other users stay logged in."""
    at_desk, elsewhere = Browser(gw, "127.0.0.1"), Browser(gw, "127.0.0.2")
    for browser in (at_desk, elsewhere):
        assert browser.login("marie")[0] == 302 and browser.status() == 200
    admin = Browser(gw)
    assert admin.login("admin")[0] == 302
    status, answer = admin.callback(_act("users-passwd", "marie", password=NEW_PW))
    assert status == 200
    assert at_desk.status() == 401 and elsewhere.status() == 401
    assert admin.status() == 200
    assert _feedback(answer) == "Mot de passe de marie défini par admin. Déconnecté."
    assert at_desk.login("marie", NEW_PW)[0] == 302 and at_desk.status() == 200

    op = Browser(gw)
    assert op.login("op")[0] == 302 and op.status() == 200
    gw.users.set_password("op", NEW_PW)
    assert op.status() == 401
    assert at_desk.status() == 200  # marie's new session is not op's


def test_an_admin_changing_their_own_password_is_told_to_log_in_again(gw: Gateway) -> None:
    admin = Browser(gw)
    assert admin.login("admin")[0] == 302
    status, answer = admin.callback(_act("users-passwd", "admin", password=NEW_PW))
    assert status == 200 and admin.status() == 401
    assert _feedback(answer).endswith("Vous êtes déconnecté : reconnectez-vous.")


def test_a_password_set_while_the_gateway_is_stopped_ends_the_sessions(
    gw: Gateway, demo_config: Config, small_register: Register
) -> None:
    """Sessions live in the users file: they outlast a restart, but not `beffroi user passwd`
    run on the file meanwhile (the CLI calls UserStore.set_password, as here)."""
    op, marie = Browser(gw), Browser(gw)
    assert op.login("op")[0] == 302 and marie.login("marie")[0] == 302
    _stop(gw)
    offline = UserStore(gw.folder / "u.duckdb")
    offline.set_password("op", NEW_PW)
    offline.close()
    again = _serve(gw.folder, demo_config, small_register, gw.clock)
    gw.server, gw.users, gw.audit, gw.historian = (
        again.server,
        again.users,
        again.audit,
        again.historian,
    )
    for browser in (op, marie):
        browser.port = again.server.port
    assert marie.status() == 200
    assert op.status() == 401


def test_a_role_change_or_a_removal_ends_the_sessions(gw: Gateway) -> None:
    """A new role or scope logs the user out (a change that changes nothing does not); so does
    a removal, and a name given again does not bring the old account's sessions back."""
    admin, marie = Browser(gw), Browser(gw, "127.0.0.2")
    assert admin.login("admin")[0] == 302 and marie.login("marie")[0] == 302
    status, answer = admin.callback(_act("users-update", "marie", "supervisor", ["talant"]))
    assert status == 200 and marie.status() == 401
    assert _feedback(answer).endswith("Déconnecté.")

    assert marie.login("marie")[0] == 302 and marie.status() == 200
    _, answer = admin.callback(_act("users-update", "marie", "supervisor", ["talant"]))
    assert _feedback(answer) == "Utilisateur marie modifié par admin."
    assert marie.status() == 200

    admin.callback(_act("users-update", "marie", "supervisor", ["dijon"]))
    assert marie.status() == 401

    assert marie.login("marie")[0] == 302 and marie.status() == 200
    stale = Browser(gw, "127.0.0.2", cookies=marie.cookies)
    _, answer = admin.callback(_act("users-remove", "marie"))
    assert marie.status() == 401
    assert _feedback(answer) == "Utilisateur marie supprimé par admin. Déconnecté."
    _, answer = admin.callback(_act("users-add", "marie", "operator", ["talant"], NEW_PW))
    assert _feedback(answer) == "Utilisateur marie ajouté par admin."
    assert stale.status() == 401 and marie.status() == 401
    assert admin.status() == 200


def test_a_session_idle_too_long_ends(gw: Gateway) -> None:
    """Idle lifetime (30 min by default): counted from the session's last request."""
    browser = Browser(gw)
    assert browser.login("op")[0] == 302
    gw.clock.advance(minutes=20)
    assert browser.status() == 200
    gw.clock.advance(minutes=20)  # 40 min after the login, 20 after the last request
    assert browser.status() == 200
    gw.clock.advance(minutes=30)
    assert browser.status() == 401
    assert browser.login("op")[0] == 302 and browser.status() == 200


def test_a_busy_session_ends_at_its_lifetime(gw: Gateway) -> None:
    """Absolute lifetime (session_hours, 12 by default): however often the session is used."""
    browser = Browser(gw)
    assert browser.login("op")[0] == 302
    for _ in range(35):  # a request every 20 minutes, up to 11 h 40 after the login
        gw.clock.advance(minutes=20)
        assert browser.status() == 200
    gw.clock.advance(minutes=20)
    assert browser.status() == 401


def test_one_address_guessing_many_names_is_slowed(gw: Gateway) -> None:
    """Past 10 failures from one address, on whatever names, it waits (429, Retry-After) for
    any name; other addresses do not."""
    guesser = Browser(gw, "127.0.0.3")
    results = [guesser.login(f"guess-{i}", "not-the-password")[0] for i in range(10)]
    assert results == [401] * 10
    status, retry_after = guesser.login("guess-10", "not-the-password")
    assert status == 429 and retry_after is not None and int(retry_after) >= 1
    assert guesser.login("op")[0] == 429  # even with the right password: it must wait
    assert Browser(gw, "127.0.0.1").login("op")[0] == 302


def test_a_third_party_cannot_lock_a_user_out(gw: Gateway) -> None:
    """Guesses at a user's name from another address, or from the user's own address with
    another browser, are throttled; the user logs in at once from their browser, and from a
    new browser at an address that has not failed."""
    user = Browser(gw, "127.0.0.1")
    assert user.login("op")[0] == 302
    assert user.send("GET", "/logout")[0] == 302

    for address in ("127.0.0.2", "127.0.0.1"):  # another machine; the same NAT or console
        guesser = Browser(gw, address)
        results = [guesser.login("op", f"guess-{i}-wrong")[0] for i in range(6)]
        assert results == [401] * 5 + [429], address

    assert user.login("op")[0] == 302 and user.status() == 200
    assert Browser(gw, "127.0.0.4").login("op")[0] == 302

    # The user's browser is no way around the throttle: its own failures count.
    results = [user.login("op", f"typo-{i}-wrong")[0] for i in range(5)]
    assert results == [401] * 5
    assert user.login("op")[0] == 429


def test_guessing_one_name_from_many_addresses_waits_longer_each_time(gw: Gateway) -> None:
    """An address that failed 5 times on a name waits 2 ** (failures on the name from
    anywhere - 5) s, up to 300 s: spreading the guesses over addresses does not reset the wait."""
    waits = []
    for address in ("127.0.0.2", "127.0.0.3", "127.0.0.4"):
        guesser = Browser(gw, address)
        assert [guesser.login("op", f"guess-{i}-wrong")[0] for i in range(5)] == [401] * 5
        status, retry_after = guesser.login("op", "guess-5-wrong")
        assert status == 429 and retry_after is not None
        waits.append(int(retry_after))
    assert waits[0] <= 1 and 30 <= waits[1] <= 32 and waits[2] == 300
    assert Browser(gw, "127.0.0.5").login("op")[0] == 302


class CountingStore(UserStore):
    """A users file that counts how often sessions are read from it."""

    reads = 0

    def session(self, token: str) -> Session | None:
        self.reads += 1
        return super().session(token)


def test_sessions_are_read_once_until_a_change_then_at_once(tmp_path: Path) -> None:
    """Refreshes cost no read of the file; any change makes every thread's next check read it,
    and a revocation applies to the very next request whichever thread serves it."""
    clock = Clock()
    store = CountingStore(tmp_path / "u.duckdb", clock=clock)
    store.add("op", PW, "operator", ["talant"])
    store.add("marie", PW, "operator", ["talant"])
    sessions = Sessions(store, lifetime=timedelta(hours=12), idle=timedelta(minutes=30))
    token = sessions.open("op", None)
    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(lambda _: sessions.check(token), range(200)))
        assert {u.name if u else None for u in seen} == {"op"}
        assert store.reads == 1
        store.update("marie", "supervisor", ["talant"])  # another user: op's session holds
        assert sessions.check(token) is not None and store.reads == 2
        store.set_password("op", NEW_PW)
        assert set(pool.map(lambda _: sessions.check(token), range(200))) == {None}
    store.close()
