"""Real database servers for tests: Debian's InfluxDB 1.x (`influxd`), VictoriaMetrics and
PostgreSQL (a temporary cluster made by initdb).

Each server runs on a free loopback port with its data in a temp folder; `stop()` and `start()`
keep the port and the data, so fault tests can take a server away and bring it back.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

INFLUXD = Path("/usr/bin/influxd")
VICTORIA_METRICS = Path("/usr/bin/victoria-metrics")
# Debian installs PostgreSQL's server programs under its major version.
PG_BIN = next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)), Path("/"))
POSTGRES = PG_BIN / "postgres"
PACKAGES = {INFLUXD: "influxdb", VICTORIA_METRICS: "victoria-metrics", POSTGRES: "postgresql"}


def require_binary(path: Path) -> None:
    """Skip the test when a server binary is missing; fail instead when CI=true."""
    if path.is_file() and os.access(path, os.X_OK):
        return
    reason = (
        f"{path} is not installed (Debian package {PACKAGES.get(path, path.name)!r}; "
        "`make system-deps` as root installs it)"
    )
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """A server binary bound to 127.0.0.1 with its own data folder and log file."""

    binary: Path
    ready_path = "/"

    def __init__(self, root: Path, *, https: bool = False, ca_file: Path | None = None):
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.https = https
        self.ca_file = ca_file
        self.log_path = root / "server.log"
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        """Return the base URL of the HTTP API."""
        return f"{'https' if self.https else 'http'}://127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        """Return True while the process is alive."""
        return self._proc is not None and self._proc.poll() is None

    def command(self) -> list[str]:
        """Return the command line that starts the server."""
        raise NotImplementedError

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server (same port, same data) and wait until it answers."""
        if self.running:
            return
        log = self.log_path.open("ab")
        self._proc = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        log.close()
        _ALIVE.add(self)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"{self.binary} exited at start:\n{self.log_tail()}")
            if self._ready():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.binary} not ready after {timeout_s}s:\n{self.log_tail()}")

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop the server gracefully (SIGTERM), killing it if it does not exit in time."""
        if self._proc is None:
            return
        if self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        self._proc = None
        _ALIVE.discard(self)

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would."""
        if self.running:
            self._proc.send_signal(signal.SIGKILL)
            self._proc.wait()
        self._proc = None
        _ALIVE.discard(self)

    def restart(self) -> None:
        """Stop then start again on the same port and data."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        """Return the end of the server's log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.https:
            return None
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)

    def http(
        self, method: str, path: str, data: bytes | None = None, headers: dict | None = None
    ) -> tuple[int, bytes]:
        """Send one request to the server; return the status and body (errors included)."""
        req = urllib.request.Request(self.url + path, data=data, method=method)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10, context=self._ssl_context()) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def _ready(self) -> bool:
        try:
            status, _ = self.http("GET", self.ready_path)
        except (OSError, urllib.error.URLError):
            return False
        return 200 <= status < 300


_ALIVE: set[ServerProcess] = set()


@atexit.register
def _stop_all() -> None:
    # A crashed or interrupted test session must not leave servers behind.
    for server in list(_ALIVE):
        with contextlib.suppress(Exception):
            server.kill()


class InfluxServer(ServerProcess):
    """InfluxDB 1.x with a temp config: data, meta and WAL in the folder, HTTP only on loopback."""

    binary = INFLUXD
    ready_path = "/ping"

    def __init__(
        self,
        root: Path,
        *,
        auth: tuple[str, str] | None = None,
        tls: tuple[Path, Path, Path] | None = None,
    ):
        super().__init__(root, https=tls is not None, ca_file=tls[0] if tls else None)
        self.rpc_port = _free_port()
        self.auth = auth
        self.tls = tls
        self.config_path = root / "influxdb.conf"
        self._write_config()
        self._admin_created = False

    def _write_config(self) -> None:
        r = self.root
        cert, key = (str(self.tls[1]), str(self.tls[2])) if self.tls else ("", "")
        self.config_path.write_text(
            f"""\
# Debian's build reads reporting-enabled; upstream 1.x reads reporting-disabled.
reporting-enabled = false
reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc_port}"
[meta]
  dir = "{r}/meta"
  logging-enabled = false
[data]
  dir = "{r}/data"
  wal-dir = "{r}/wal"
  query-log-enabled = false
[retention]
  enabled = false
[shard-precreation]
  enabled = false
[monitor]
  store-enabled = false
[subscriber]
  enabled = false
[continuous_queries]
  enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = {"true" if self.auth else "false"}
  log-enabled = false
  pprof-enabled = false
  https-enabled = {"true" if self.tls else "false"}
  https-certificate = "{cert}"
  https-private-key = "{key}"
[logging]
  level = "warn"
  suppress-logo = true
""",
            encoding="utf-8",
        )

    def command(self) -> list[str]:
        """Return `influxd run -config <temp config>`."""
        return [str(self.binary), "run", "-config", str(self.config_path)]

    def start(self, timeout_s: float = 30.0) -> None:
        """Start influxd; with auth, create the admin user the first time."""
        super().start(timeout_s)
        if self.auth and not self._admin_created:
            user, password = self.auth
            # With auth on and no user yet, InfluxDB 1.x accepts exactly this statement.
            self.query(f"CREATE USER \"{user}\" WITH PASSWORD '{password}' WITH ALL PRIVILEGES")
            self._admin_created = True

    def query(self, q: str, db: str | None = None) -> dict:
        """Run InfluxQL as the admin; raise on an error in the answer."""
        params = {"q": q} | ({"db": db} if db else {})
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if self.auth and self._admin_created:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {token}"
        body = urllib.parse.urlencode(params).encode()
        status, raw = self.http("POST", "/query", body, headers)
        answer = json.loads(raw or b"{}")
        errors = [r["error"] for r in answer.get("results", []) if "error" in r]
        if status >= 300 or "error" in answer or errors:
            raise RuntimeError(f"InfluxQL {q!r} failed ({status}): {answer}")
        return answer

    def create_database(self, name: str | None = None) -> str:
        """Create a database (a fresh random name by default) and return its name."""
        name = name or f"t_{uuid.uuid4().hex[:10]}"
        self.query(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database and its data."""
        self.query(f'DROP DATABASE "{name}"')


class VictoriaMetricsServer(ServerProcess):
    """Single-node VictoriaMetrics; keeps data for 100 years so fixed test dates are accepted."""

    binary = VICTORIA_METRICS
    ready_path = "/health"

    def command(self) -> list[str]:
        """Return the command line: HTTP on loopback only, data in the temp folder."""
        return [
            str(self.binary),
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.root / 'data'}",
            # The default retention (1 month) silently drops samples with older timestamps.
            "-retentionPeriod=100y",
            "-search.disableCache",
            "-loggerLevel=WARN",
        ]

    def force_flush(self) -> None:
        """Make recently written samples visible to searches and exports."""
        self.http("GET", "/internal/force_flush")

    def export(self, match: str) -> list[dict]:
        """Return /api/v1/export lines for a series selector: metric, values, timestamps (ms)."""
        self.force_flush()
        status, raw = self.http(
            "GET", "/api/v1/export?" + urllib.parse.urlencode({"match[]": match})
        )
        if status != 200:
            raise RuntimeError(f"export {match} failed ({status}): {raw[:300]!r}")
        return [json.loads(line) for line in raw.splitlines() if line.strip()]

    def delete_all(self) -> None:
        """Delete every series, so that each test starts empty."""
        q = urllib.parse.urlencode({"match[]": '{__name__=~".+"}'})
        self.http("POST", f"/api/v1/admin/tsdb/delete_series?{q}")


@pytest.fixture(scope="session")
def influxd(tmp_path_factory) -> Iterator[InfluxServer]:
    """Yield one InfluxDB 1.x server for the session (tests use their own database)."""
    require_binary(INFLUXD)
    server = InfluxServer(tmp_path_factory.mktemp("influxd"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def influx_database(influxd: InfluxServer) -> Iterator[str]:
    """Yield the name of a fresh, empty database on the session's InfluxDB."""
    name = influxd.create_database()
    yield name
    if influxd.running:
        influxd.drop_database(name)


@pytest.fixture
def influx_historian(influxd: InfluxServer, influx_database: str, small_register):
    """Yield an InfluxHistorian on a fresh database (v1 write, InfluxQL read)."""
    from beffroi.historian.influx.historian import InfluxHistorian

    h = InfluxHistorian(
        influxd.url, api="v1", database=influx_database, register=small_register, timeout_s=10
    )
    yield h
    h.close()


@pytest.fixture(scope="session")
def _victoria_metrics_session(tmp_path_factory) -> Iterator[VictoriaMetricsServer]:
    require_binary(VICTORIA_METRICS)
    server = VictoriaMetricsServer(tmp_path_factory.mktemp("victoria-metrics"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def victoria_metrics(_victoria_metrics_session: VictoriaMetricsServer) -> VictoriaMetricsServer:
    """Return the session's VictoriaMetrics, emptied of every series."""
    server = _victoria_metrics_session
    if not server.running:
        server.start()
    server.delete_all()
    return server


@pytest.fixture
def db_server_factory(tmp_path) -> Iterator[Callable[..., ServerProcess]]:
    """Return `make(kind, **options)` starting private servers ("influxd" or "victoria-metrics").

    Each server is stopped when the test ends; use these for tests that stop, kill or
    reconfigure a server, so that the session's servers stay untouched.
    """
    started: list[ServerProcess] = []

    def make(kind: str, **options) -> ServerProcess:
        root = tmp_path / f"{kind}-{len(started)}"
        if kind == "influxd":
            require_binary(INFLUXD)
            server: ServerProcess = InfluxServer(root, **options)
        elif kind == "victoria-metrics":
            require_binary(VICTORIA_METRICS)
            server = VictoriaMetricsServer(root, **options)
        else:
            raise ValueError(f"unknown server kind {kind!r}")
        started.append(server)
        server.start()
        return server

    yield make
    for server in reversed(started):
        server.stop()


class PostgresServer:
    """A PostgreSQL cluster of its own: initdb'd in a temp folder, on a free loopback port.

    PostgreSQL refuses to run as root: as root the cluster belongs to Debian's `postgres` user
    and its programs run through runuser. `kill()` is a crash (SIGKILL to the postmaster).
    """

    def __init__(self, root: Path, *, durable: bool = False):
        require_binary(POSTGRES)
        self.root, self.durable = root, durable
        self.port = _free_port()
        self.data = root / "data"
        self.log_path = root / "postgres.log"
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        root.mkdir(parents=True, exist_ok=True)
        if self._as:
            shutil.chown(root, "postgres", "postgres")
        self._run(
            PG_BIN / "initdb",
            "-D",
            str(self.data),
            "-U",
            "beffroi",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
        )
        self._proc: subprocess.Popen | None = None
        _ALIVE_PG.add(self)

    def _run(self, *args: object) -> None:
        subprocess.run([*self._as, *map(str, args)], check=True, capture_output=True)

    def url(self, database: str = "postgres") -> str:
        """Return the libpq URL of a database of this cluster."""
        return f"postgresql://beffroi@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        """Return True while the postmaster is alive."""
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 30.0) -> None:
        """Start the server (same port, same data) and wait until it accepts connections."""
        if self.running:
            return
        log = self.log_path.open("ab")
        # Tests do not check PostgreSQL's own durability: no fsync, to spare the disk (the
        # benchmarks keep it: `durable`).
        fsync = "on" if self.durable else "off"
        self._proc = subprocess.Popen(
            [*self._as, str(POSTGRES), "-D", str(self.data), "-p", str(self.port),
             "-c", "listen_addresses=127.0.0.1", "-c", f"unix_socket_directories={self.root}",
             "-c", f"fsync={fsync}", "-c", "max_connections=200"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"postgres exited at start:\n{self.log_tail()}")
            try:
                with psycopg.connect(self.url(), connect_timeout=2):
                    return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError(f"postgres not ready after {timeout_s}s:\n{self.log_tail()}")

    def _postmaster(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Stop the server with a fast shutdown (SIGINT to the postmaster)."""
        self._signal(signal.SIGINT)

    def kill(self) -> None:
        """Kill the server with SIGKILL, as a crash would."""
        self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        pid = self._postmaster()
        if pid is not None and self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        if self._proc is not None:
            self._proc.wait(30)
        self._proc = None

    def create_database(self, name: str) -> str:
        """Create an empty database; return its URL."""
        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def log_tail(self, lines: int = 30) -> str:
        """Return the end of the server's log, for failure messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


_ALIVE_PG: set[PostgresServer] = set()


@atexit.register
def _stop_postgres() -> None:
    for server in list(_ALIVE_PG):
        with contextlib.suppress(Exception):
            server.kill()
        shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One PostgreSQL cluster for the session (each test gets a database of its own)."""
    server = PostgresServer(Path(tempfile.mkdtemp(prefix="beffroi-pg-")))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """The URL of a new empty database for this test."""
    postgres.start()  # a test may have stopped or killed it
    return postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
