"""The HMI's HTTP front against slow and abusive clients, on the real server (waitress).

Attackers connect from other loopback addresses than the user (127.0.0.2, 127.0.0.3, …: Linux
routes all of 127.0.0.0/8 to lo), so that the per-address cap can tell them apart.
"""

from __future__ import annotations

import http.client
import json
import select
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta

import pytest

from beffroi.core.live import LiveValues
from beffroi.core.model import Sample, utcnow
from beffroi.historian.duckdb.historian import DuckDBHistorian
from beffroi.hmi.app import create_app
from beffroi.hmi.config import HttpConfig
from beffroi.hmi.server import HmiServer, address_key
from beffroi.hmi.users import UserStore

USER, PW = "sup", "correct horse battery"
# Generous: on a loaded machine answers take longer, but a starved server never answers.
PROMPT_S = 5.0


class SlowClients:
    """Hold connections that send a header line every `every_s` and never end their request."""

    def __init__(
        self, port: int, count: int, sources: list[str], every_s: float = 1.0, body: bool = False
    ) -> None:
        self.port, self.every_s, self.body = port, every_s, body
        self.sel = selectors.DefaultSelector()
        self.socks: dict[socket.socket, list[float]] = {}
        self.sent_lines = 0
        self.cut = 0  # connections the server closed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        for i in range(count):
            s = socket.socket()
            s.bind((sources[i % len(sources)], 0))
            s.setblocking(False)
            try:
                s.connect(("127.0.0.1", port))
            except BlockingIOError:
                pass
            # Spread the first lines over a period, as independent clients would send them.
            self.socks[s] = [time.monotonic() + (i % 20) * every_s / 20, 0]
            self.sel.register(s, selectors.EVENT_READ)
        self._thread.start()

    @property
    def open(self) -> int:
        """Return how many of the connections the server has not closed."""
        return len(self.socks)

    def _line(self, n: int) -> bytes:
        if n == 0:
            head = (
                b"POST / HTTP/1.1\r\nHost: x\r\n" if self.body else b"GET / HTTP/1.1\r\nHost: x\r\n"
            )
            return head + (b"Content-Length: 100000\r\n\r\n" if self.body else b"")
        return b"x" * 10 if self.body else b"X-Slow-%d: 1\r\n" % n

    def _drop(self, s: socket.socket) -> None:
        self.sel.unregister(s)
        del self.socks[s]
        s.close()
        self.cut += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.sel.select(0.05):
                s = key.fileobj
                assert isinstance(s, socket.socket)
                try:
                    data = s.recv(4096)
                except OSError:
                    data = b""
                if not data:
                    self._drop(s)
            now = time.monotonic()
            for s, state in list(self.socks.items()):
                if state[0] > now:
                    continue
                try:
                    s.send(self._line(int(state[1])))
                except BlockingIOError:
                    pass
                except OSError:
                    self._drop(s)
                    continue
                self.sent_lines += 1
                state[0], state[1] = now + self.every_s, state[1] + 1

    def close(self) -> None:
        """Stop sending and close every connection still open."""
        self._stop.set()
        self._thread.join(5)
        for s in list(self.socks):
            self.sel.unregister(s)
            s.close()
        self.socks.clear()
        self.sel.close()


def eventually(predicate: Callable[[], bool], within: float, every: float = 0.1) -> bool:
    """Wait until predicate() holds; return whether it did within the time."""
    end = time.monotonic() + within
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


@pytest.fixture(scope="module")
def hmi_app(tmp_path_factory, demo_config, small_register):  # type: ignore[no-untyped-def]
    """Build the HMI app with one supervisor, some live values and a little history."""
    folder = tmp_path_factory.mktemp("front")
    live, now = LiveValues(), utcnow()
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
    users.add(USER, PW, "supervisor", ["*"])
    yield create_app(demo_config, small_register, live, hist, users=users)
    users.close()
    hist.close()


@pytest.fixture
def serve(hmi_app) -> Iterator[Callable[..., HmiServer]]:  # type: ignore[no-untyped-def]
    """Serve the app on a free port with the [hmi.http] given (defaults otherwise)."""
    servers: list[HmiServer] = []

    def start(app: object = None, **http: object) -> HmiServer:
        wsgi = app or hmi_app
        server = HmiServer(wsgi, "127.0.0.1", 0, threads=4, http=HttpConfig(**http))
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def _logged_in(base: str) -> urllib.request.OpenerDirector:
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor())
    form = urllib.parse.urlencode({"username": USER, "password": PW}).encode()
    opener.open(base + "login", data=form, timeout=PROMPT_S).read()
    return opener


def _map_callback() -> dict:
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
            {"id": "map-commune", "property": "value", "value": None},
            {"id": "map-domain", "property": "value", "value": None},
        ],
        "changedPropIds": ["map-commune.value"],
        "state": [{"id": "map-digest", "property": "data", "value": None}],
    }


def _user_is_served(server: HmiServer) -> None:
    """Health, a login, the page's layout and the map's callback all answer within PROMPT_S."""
    with urllib.request.urlopen(server.url + "healthz", timeout=PROMPT_S) as resp:
        assert resp.status == 200 and json.loads(resp.read())["status"] == "ok"
    user = _logged_in(server.url)
    with user.open(server.url + "_dash-layout", timeout=PROMPT_S) as resp:
        assert resp.status == 200 and "shell-user-name" in resp.read().decode()
    req = urllib.request.Request(
        server.url + "_dash-update-component",
        data=json.dumps(_map_callback()).encode(),
        headers={"Content-Type": "application/json"},
    )
    with user.open(req, timeout=PROMPT_S) as resp:
        assert resp.status == 200 and json.loads(resp.read())["response"]["map-fixed"]["data"]


def test_500_slow_clients_do_not_starve_the_hmi(serve) -> None:  # type: ignore[no-untyped-def]
    """With the default limits, 500 connections trickling a header line a second (20
    addresses, 25 each) are all held, and health, login, a page and a callback still answer
    promptly.

    waitress alone accepts 100 connections, then none: the user would wait behind them."""
    # A long header deadline keeps all 500 held however slow the machine: deadlines have
    # their own tests, here the user competes with every slow connection.
    server = serve(header_timeout_s=120, idle_timeout_s=120)
    sources = [f"127.0.0.{i}" for i in range(2, 22)]
    slow = SlowClients(server.port, 500, sources)
    try:
        assert eventually(lambda: server.stats().open >= 500, within=10)
        time.sleep(1.5)  # every slow client has sent a line or two
        for _ in range(3):
            _user_is_served(server)
        assert slow.open == 500 and slow.cut == 0  # held, not dropped: the attack is real
        assert server.stats().header_timeouts == 0
    finally:
        slow.close()


def test_per_address_cap_hits_the_attacker_only(serve) -> None:  # type: ignore[no-untyped-def]
    """One address opening 200 slow connections keeps 64 (the default cap); the others are
    closed at once, and the user on another address is served."""
    server = serve(header_timeout_s=120, idle_timeout_s=120)
    slow = SlowClients(server.port, 200, ["127.0.0.2"])
    try:
        assert eventually(lambda: slow.open == 64, within=10), slow.open
        stats = server.stats()
        assert stats.refused_per_address == 136 and stats.open <= 64 + 1
        _user_is_served(server)
        assert slow.open == 64
    finally:
        slow.close()


def test_header_deadline_cuts_a_trickling_client(serve) -> None:  # type: ignore[no-untyped-def]
    """A client sending a header line every 0.3 s, and one saying nothing, are closed at the
    header deadline (2 s here), though neither is ever idle long enough for an idle timeout."""
    server = serve(header_timeout_s=2, idle_timeout_s=60)
    trickle = SlowClients(server.port, 1, ["127.0.0.2"], every_s=0.3)
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=PROMPT_S + 5)
    started = time.monotonic()
    try:
        assert eventually(lambda: trickle.cut == 1, within=2 + PROMPT_S)
        took = time.monotonic() - started
        assert took >= 1.5 and trickle.sent_lines >= 5  # it did trickle until cut
        assert silent.recv(1) == b""  # closed by the server, nothing said
        assert server.stats().header_timeouts == 2
        _user_is_served(server)
    finally:
        trickle.close()
        silent.close()


def _cut_after(sock: socket.socket, every_s: float, line: bytes, within: float) -> float:
    """Send `line` every `every_s` until the server closes; return how long that took."""
    started = time.monotonic()
    sock.settimeout(every_s)
    while time.monotonic() - started < within:
        try:
            sock.sendall(line)
            if sock.recv(4096) == b"":
                return time.monotonic() - started
        except TimeoutError:
            continue
        except OSError:
            return time.monotonic() - started
    raise AssertionError(f"still open after {within} s")


def test_blank_lines_restart_no_deadline(serve) -> None:  # type: ignore[no-untyped-def]
    """Blank lines, which waitress reads as empty requests, neither start a request nor end
    one: sent every 0.3 s on a new connection, the header deadline (2 s) still cuts it; after
    a request answered, the idle deadline (2 s) does."""
    server = serve(header_timeout_s=2, idle_timeout_s=2)
    with socket.create_connection(("127.0.0.1", server.port), timeout=PROMPT_S) as fresh:
        assert 1.5 <= _cut_after(fresh, 0.3, b"\r\n", within=2 + PROMPT_S)
    with socket.create_connection(("127.0.0.1", server.port), timeout=PROMPT_S) as used:
        used.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert used.recv(4096).startswith(b"HTTP/1.1 200 ")
        assert 1.5 <= _cut_after(used, 0.3, b"\r\n", within=2 + PROMPT_S)
    stats = server.stats()
    assert stats.header_timeouts == 1 and stats.idle_timeouts == 1


def test_body_deadline_cuts_a_trickling_upload(serve) -> None:  # type: ignore[no-untyped-def]
    """A body of 100,000 bytes announced and sent 10 bytes at a time is cut at the body
    deadline (2 s here)."""
    server = serve(body_timeout_s=2)
    slow = SlowClients(server.port, 1, ["127.0.0.2"], every_s=0.3, body=True)
    try:
        assert eventually(lambda: slow.cut == 1, within=2 + PROMPT_S)
        assert slow.sent_lines >= 5 and server.stats().body_timeouts == 1
    finally:
        slow.close()


def test_keep_alive_requests_get_their_own_deadline(serve) -> None:  # type: ignore[no-untyped-def]
    """A connection that sends prompt requests for longer than the header deadline is kept."""
    server = serve(header_timeout_s=1)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=PROMPT_S)
    try:
        for _ in range(5):
            conn.request("GET", "/healthz")
            resp = conn.getresponse()
            assert resp.status == 200 and resp.getheader("Connection") != "close"
            resp.read()
            time.sleep(0.5)
        assert server.stats().header_timeouts == 0
    finally:
        conn.close()


def _post_chunked(port: int, size: int) -> bytes:
    """Send a chunked body of `size` bytes until the server answers; return its first bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=PROMPT_S) as s:
        s.sendall(
            b"POST /_dash-update-component HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        )
        try:
            for _ in range(0, size, 4096):
                s.sendall(b"1000\r\n" + b" " * 4096 + b"\r\n")
                if select.select([s], [], [], 0)[0]:
                    break  # answered before the end: stop sending, read it
            else:
                s.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # answered and closed while we were sending: the answer is still readable
        return s.recv(1024)


def test_oversized_body_gets_413(serve) -> None:  # type: ignore[no-untyped-def]
    """A body over max_body_bytes is refused with 413 before the app reads it, announced or
    chunked; a body at the limit reaches the app."""
    server = serve(max_body_bytes=64 * 1024)
    big = b"{" + b" " * (64 * 1024) + b"}"
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=PROMPT_S)
    try:
        conn.putrequest("POST", "/_dash-update-component")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(big)))
        conn.endheaders()  # the answer comes on the headers: no need to send the body
        assert conn.getresponse().status == 413
    finally:
        conn.close()
    assert _post_chunked(server.port, len(big)).startswith(b"HTTP/1.1 413 ")
    at_limit = urllib.request.Request(
        server.url + "_dash-update-component",
        data=b" " * (64 * 1024),
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(at_limit, timeout=PROMPT_S)
    assert err.value.code == 401  # the app's answer: login required


def test_at_the_limit_the_longest_waiting_make_room(serve) -> None:  # type: ignore[no-untyped-def]
    """With 120 slow connections against a limit of 50 (no per-address cap), the server closes
    those that wait longest on their client, and the user still gets in."""
    server = serve(max_connections=50, max_per_address=0)
    slow = SlowClients(server.port, 120, [f"127.0.0.{i}" for i in range(2, 14)])
    try:
        assert eventually(lambda: server.stats().closed_for_room >= 70, within=10)
        _user_is_served(server)
        assert server.stats().open <= 50 and server.stats().peak_open <= 50
    finally:
        slow.close()


def _echo_client(environ: dict, start_response: Callable) -> list[bytes]:
    """Answer with the client's address and scheme as the WSGI app sees them."""
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{environ['REMOTE_ADDR']} {environ['wsgi.url_scheme']}".encode()]


def test_trusted_proxy_is_exempt_and_reports_clients(serve) -> None:  # type: ignore[no-untyped-def]
    """Behind a proxy: its connections are not capped, the app sees the client's address and
    scheme it forwards, and nobody else's X-Forwarded-* headers are believed."""
    server = serve(_echo_client, max_per_address=10, trusted_proxy="127.0.0.1")
    proxy = SlowClients(server.port, 30, ["127.0.0.1"])
    others = SlowClients(server.port, 30, ["127.0.0.2"])
    try:
        assert eventually(lambda: others.open == 10 and proxy.open == 30, within=10)
        assert server.stats().refused_per_address == 20
    finally:
        proxy.close()
        others.close()

    def seen(source: str) -> str:
        conn = http.client.HTTPConnection(
            "127.0.0.1", server.port, timeout=PROMPT_S, source_address=(source, 0)
        )
        headers = {"X-Forwarded-For": "198.51.100.7", "X-Forwarded-Proto": "https"}
        try:
            conn.request("GET", "/", headers=headers)
            return conn.getresponse().read().decode()
        finally:
            conn.close()

    assert seen("127.0.0.1") == "198.51.100.7 https"
    assert seen("127.0.0.2") == "127.0.0.2 http"


def test_address_key_counts_an_ipv6_64_as_one_client() -> None:
    """IPv4 addresses count alone, IPv4-mapped IPv6 as IPv4, IPv6 by their /64."""
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:bbbb::2")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("fe80::1%eth0") == "fe80::/64"


def test_connection_limit_fits_the_open_file_limit() -> None:
    """Under a hard open-file limit of 512, 1,000 connections cannot fit: the limit in force
    is lowered (256 descriptors kept for the rest), with a warning naming the setting."""
    code = (
        "import logging, resource\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "resource.setrlimit(resource.RLIMIT_NOFILE, (256, 512))\n"
        "from beffroi.hmi.server import fitting_connection_limit\n"
        "print(fitting_connection_limit(1000), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
        "print(fitting_connection_limit(200), resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.split("\n")[:2] == ["256 512", "200 512"]
    assert "max_connections" in out.stderr and "LimitNOFILE" in out.stderr


def test_metrics_count_what_the_front_cut(demo_config_fixture, tmp_path) -> None:
    """A running gateway's /metrics says how many slow connections the front closed, and why."""
    import socket

    from prometheus_client.parser import text_string_to_metric_families

    from beffroi.app.config import demo_config
    from tests.conftest import free_port
    from tests.test_input_bounds import _gateway

    cfg = demo_config(demo_config_fixture, data=tmp_path, port=free_port(), opcua_port=free_port())
    http = cfg.hmi.http.model_copy(update={"header_timeout_s": 1.0})
    cfg = cfg.model_copy(update={"hmi": cfg.hmi.model_copy(update={"http": http})})
    with _gateway(cfg) as runtime:
        assert runtime.hmi_server is not None
        host, port = runtime.hmi_server.host, runtime.hmi_server.port
        slow = socket.create_connection((host, port), timeout=10)
        slow.sendall(b"GET /healthz HTTP/1.1\r\n")  # and nothing more: cut at the deadline
        assert slow.recv(1) == b""  # closed by the server
        slow.close()
        with urllib.request.urlopen(runtime.hmi_server.url + "metrics", timeout=10) as resp:
            text = resp.read().decode()
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
        }
        assert samples[("beffroi_http_cut_total", (("reason", "header_timeouts"),))] >= 1
        assert samples[("beffroi_http_open", ())] >= 1  # the scrape's own connection
