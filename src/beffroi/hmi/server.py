"""Serve the HMI's WSGI app with waitress in a background thread, guarded against slow clients.

waitress reads requests in one event loop and hands only complete ones to its worker threads,
so a slow client holds a connection, never a thread. Its own limits stop there: a fixed number
of connections (100 by default, then nothing is accepted) and an idle timeout that a client
trickling a byte now and then never reaches. The front here adds, per `[hmi.http]`:

- deadlines while the server waits on a client, checked every second whatever it trickles:
  the request line and headers within `header_timeout_s` (counted from the connection's
  opening for its first request), the body within `body_timeout_s`, the next request's first
  bytes within `idle_timeout_s` of an answer (keep-alive);
- at most `max_per_address` connections per client address (an IPv6 /64 counts as one);
- `max_connections` in all, served with poll() (select() fails past descriptor 1023), the
  process's open-file limit raised to fit; when the limit is reached, the connections that
  have waited longest on their client are closed to let new ones in;
- request headers and bodies capped in size (431 and 413, answered by waitress before the app).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import dash
from waitress import wasyncore
from waitress.adjustments import Adjustments
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import TcpWSGIServer
from waitress.task import ThreadedTaskDispatcher
from waitress.trigger import trigger as WaitressTrigger

from beffroi.hmi.config import HttpConfig

log = logging.getLogger(__name__)

# Descriptors kept for the rest of the process (historian, state files, collectors, logs)
# when the open-file limit decides how many connections fit.
FD_RESERVE = 256
# How often deadlines are checked: a slow client is cut within this after its deadline.
CHECK_INTERVAL_S = 1
# Counts of cut and refused connections go to the log at most this often.
REPORT_INTERVAL_S = 60.0


@dataclass(frozen=True)
class FrontStats:
    """What the HTTP front did since it started, and the connections open now."""

    open: int = 0
    peak_open: int = 0
    header_timeouts: int = 0
    body_timeouts: int = 0
    idle_timeouts: int = 0
    refused_per_address: int = 0
    closed_for_room: int = 0


def address_key(host: str) -> str:
    """Return the key a client's connections are counted under: its IPv4 address or IPv6 /64."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return host
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        # One machine on IPv6 usually has a whole /64 to pick addresses from.
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


def fitting_connection_limit(wanted: int) -> int:
    """Raise the open-file limit for `wanted` connections if allowed; return how many fit."""
    try:
        import resource
    except ImportError:  # not on POSIX: nothing to ask
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = wanted + FD_RESERVE
    if soft == resource.RLIM_INFINITY or soft >= need:
        return wanted
    target = need if hard == resource.RLIM_INFINITY else min(hard, need)
    if target > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            log.info("open-file limit raised from %d to %d for the HMI's connections", soft, target)
            soft = target
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open-file limit from %d: %s", soft, exc)
    if soft >= need:
        return wanted
    fits = max(16, soft - FD_RESERVE)
    log.warning(
        "the open-file limit (%d) leaves room for %d HMI connections, not the %d of "
        "[hmi.http] max_connections: raise it (ulimit -n, systemd LimitNOFILE=)",
        soft,
        fits,
        wanted,
    )
    return fits


class _Front:
    """What every listener and connection of one server share: limits, counts, statistics."""

    def __init__(self, cfg: HttpConfig, max_connections: int) -> None:
        self.cfg = cfg
        self.max_connections = max_connections
        self.channels: set[_Channel] = set()
        self.per_address: Counter[str] = Counter()
        self.stats = FrontStats()
        self.accept_paused_until = 0.0
        self._lock = threading.Lock()
        self._exempt = address_key(cfg.trusted_proxy) if cfg.trusted_proxy else None
        self._window = FrontStats()
        self._refused_from: Counter[str] = Counter()
        self._next_report = time.monotonic() + REPORT_INTERVAL_S
        self._full_logged = 0.0

    def admit(self, key: str) -> bool:
        """Count a new connection from `key`, or refuse it when that client holds its share."""
        cap = self.cfg.max_per_address
        with self._lock:
            exempt = self._exempt is not None and (self._exempt == "*" or self._exempt == key)
            if cap and not exempt and self.per_address[key] >= cap:
                self._count(refused_per_address=1)
                self._refused_from[key] += 1
                return False
            self.per_address[key] += 1
            return True

    def release(self, key: str) -> None:
        """Forget a connection of `key` that was admitted."""
        with self._lock:
            self.per_address[key] -= 1
            if self.per_address[key] <= 0:
                del self.per_address[key]

    def opened(self, channel: _Channel) -> None:
        """Track a connection served from now on."""
        with self._lock:
            self.channels.add(channel)
            n = len(self.channels)
            if n > self.stats.peak_open:
                self.stats = replace(self.stats, peak_open=n)

    def closed(self, channel: _Channel) -> None:
        """Forget a connection that closed."""
        with self._lock:
            self.channels.discard(channel)

    def count(self, **increments: int) -> None:
        """Add to the statistics (cut or shed connections)."""
        with self._lock:
            self._count(**increments)

    def _count(self, **increments: int) -> None:
        self.stats = replace(
            self.stats, **{k: getattr(self.stats, k) + v for k, v in increments.items()}
        )
        self._window = replace(
            self._window, **{k: getattr(self._window, k) + v for k, v in increments.items()}
        )

    def snapshot(self) -> FrontStats:
        """Return the statistics with the connections open now."""
        with self._lock:
            return replace(self.stats, open=len(self.channels))

    def full(self) -> bool:
        """Tell whether no new connection may be accepted now."""
        return (
            len(self.channels) >= self.max_connections
            or time.monotonic() < self.accept_paused_until
        )

    def make_room(self) -> None:
        """At the limit, close the connections that have waited longest on their client."""
        now = time.monotonic()
        with self._lock:
            channels = list(self.channels)
        closing = sum(1 for c in channels if c.will_close)
        # Some headroom, so that a flood is not let in one connection at a time.
        want = len(channels) - closing - self.max_connections + max(1, self.max_connections // 50)
        if now - self._full_logged >= REPORT_INTERVAL_S:
            self._full_logged = now
            log.warning(
                "the HMI holds %d connections, its limit ([hmi.http] max_connections): "
                "closing those that wait longest on their client",
                len(channels),
            )
        if want <= 0:
            return
        waiting = sorted(
            (since, id(c), c) for c in channels if (since := c.waiting_since()) is not None
        )
        for _, _, channel in waiting[:want]:
            channel.will_close = True
        if waiting:
            self.count(closed_for_room=min(want, len(waiting)))

    def report(self) -> None:
        """Log what was cut or refused since the last report, at most every minute."""
        now = time.monotonic()
        if now < self._next_report:
            return
        self._next_report = now + REPORT_INTERVAL_S
        with self._lock:
            w, self._window = self._window, FrontStats()
            top = self._refused_from.most_common(3)
            self._refused_from.clear()
        if w == FrontStats():
            return
        log.warning(
            "HTTP front, last %.0f s: %d connections cut at the header deadline, %d at the "
            "body deadline, %d idle; %d refused over the per-address cap (%s), %d closed at "
            "the connection limit; %d open",
            REPORT_INTERVAL_S,
            w.header_timeouts,
            w.body_timeouts,
            w.idle_timeouts,
            w.refused_per_address,
            ", ".join(f"{k}: {n}" for k, n in top) or "none",
            w.closed_for_room,
            len(self.channels),
        )


class _Channel(HTTPChannel):
    """A waitress connection that knows how long it has waited on its client, and until when.

    The clock restarts only when a request begins (its first bytes other than blank lines),
    when its headers end (the body's), and when a request is complete or answered (idle):
    blank lines between requests, which waitress reads as empty requests, restart nothing.
    """

    def __init__(self, server: _Listener, sock: Any, addr: Any, adj: Adjustments, map: Any) -> None:
        self.front = server.front
        self.key = address_key(str(addr[0]))
        now = time.monotonic()
        # The first request's headers are due `header_timeout_s` after the connection opens:
        # a client that connects and says nothing is a slow client too.
        self._phase = "header"
        self._since = now
        self._deadline = now + self.front.cfg.header_timeout_s
        self._fresh = True  # no request received whole yet
        self._request: HTTPRequestParser | None = None  # the one partial after the last read
        self._header_for: HTTPRequestParser | None = None
        self._body_for: HTTPRequestParser | None = None
        self._new: list[HTTPRequestParser] = []
        # Nothing to give back if waitress fails to set the connection up: the listener does.
        self._released = True
        super().__init__(server, sock, addr, adj, map=map)
        self._released = False
        # waitress makes each request's parser through this attribute: see which it made.
        self.parser_class = self._new_parser
        self.front.opened(self)

    def _new_parser(self, adj: Adjustments) -> HTTPRequestParser:
        parser = HTTPRequestParser(adj)
        self._new.append(parser)
        return parser

    def received(self, data: bytes) -> bool:
        """Read request bytes, then restart the clock if a request began, grew or ended."""
        self._new = []
        done: bool = super().received(data)
        now = time.monotonic()
        cfg = self.front.cfg
        if any(p.completed and not p.empty for p in (self._request, *self._new) if p):
            self._fresh = False
            self._phase, self._since, self._deadline = "idle", now, now + cfg.idle_timeout_s
        request = self.request
        if request is not None and request is not self._header_for:
            if request.headers_finished or request.header_plus.strip():
                self._header_for = request
                self._phase = "header"
                if not self._fresh:  # the first request's headers stay due from the opening
                    self._since, self._deadline = now, now + cfg.header_timeout_s
        if request is not None and request.headers_finished and request is not self._body_for:
            self._body_for = request
            self._phase, self._since, self._deadline = "body", now, now + cfg.body_timeout_s
        self._request = request
        return done

    def _busy(self) -> bool:
        # A request being served or an answer being sent: the server is the one at work.
        return bool(self.requests or self.total_outbufs_len)

    def waiting_since(self) -> float | None:
        """Return since when this connection waits on its client, or None if it does not."""
        if self.will_close or self._busy():
            return None
        return self._since

    def overdue(self, now: float) -> str | None:
        """Return the phase ("header", "body", "idle") whose deadline passed, or None."""
        if self.will_close:
            return None
        if self._busy():
            # Pipelined bytes are not read while the server answers, and the idle time
            # starts once the answer is sent: the clock restarts when the server is done.
            cfg = self.front.cfg
            timeout = {"header": cfg.header_timeout_s, "body": cfg.body_timeout_s}
            self._since = now
            self._deadline = now + timeout.get(self._phase, cfg.idle_timeout_s)
            return None
        return self._phase if now >= self._deadline else None

    def del_channel(self, map: Any = None) -> None:
        """Leave the loop's map, and the front's counts (once, whatever closed the connection)."""
        super().del_channel(map)
        if not self._released:
            self._released = True
            self.front.closed(self)
            self.front.release(self.key)


class _Listener(TcpWSGIServer):
    """A waitress listener that applies the front's per-address cap, limit and deadlines."""

    channel_class = _Channel
    next_channel_cleanup: float = 0.0

    def __init__(
        self,
        application: Callable[..., Any],
        map: dict[int, Any],
        *,
        adj: Adjustments,
        dispatcher: ThreadedTaskDispatcher,
        sockinfo: Any,
        front: _Front,
    ) -> None:
        self.front = front
        super().__init__(
            application, map, _start=False, dispatcher=dispatcher, adj=adj, sockinfo=sockinfo
        )

    def readable(self) -> bool:
        """Run the periodic checks; accept while the connection limit leaves room."""
        now = time.time()
        if now >= self.next_channel_cleanup:
            self.next_channel_cleanup = now + self.adj.cleanup_interval
            self.maintenance(now)
        if not self.accepting:
            return False
        if self.front.full():
            self.front.make_room()
            return False
        return True

    def handle_accept(self) -> None:
        """Accept a connection unless its client already holds its share of them."""
        try:
            pair = self.accept()
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):
                # Out of descriptors: the listener stays readable, so pause or it spins.
                self.front.accept_paused_until = time.monotonic() + CHECK_INTERVAL_S
                log.warning("cannot accept a connection: %s", exc)
            return
        if pair is None:
            return
        conn, addr = pair
        key = address_key(str(addr[0]))
        if not self.front.admit(key):
            log.debug("refused a connection from %s: over the per-address cap", key)
            conn.close()
            return
        try:
            self.set_socket_options(conn)
            self.channel_class(self, conn, addr, self.adj, map=self._map)
        except OSError:
            # The client left before we could set the socket up.
            self.front.release(key)
            conn.close()

    def maintenance(self, now: float) -> None:
        """Close idle keep-alive connections (waitress) and those past their deadline."""
        super().maintenance(now)
        mono = time.monotonic()
        for channel in list(self.active_channels.values()):
            phase = channel.overdue(mono)
            if phase is None:
                continue
            channel.will_close = True
            log.debug("cut a connection from %s: past its %s deadline", channel.key, phase)
            self.front.count(**{f"{phase}_timeouts": 1})
        self.front.report()


class HmiServer:
    """Run a Dash app (or any WSGI app) under waitress on host:port in a daemon thread."""

    def __init__(
        self,
        app: dash.Dash | Callable[..., Any],
        host: str = "127.0.0.1",
        port: int = 8050,
        threads: int = 8,
        http: HttpConfig | None = None,
    ) -> None:
        self._wsgi = app.server if isinstance(app, dash.Dash) else app
        self._host = host
        self._port = port
        self._threads = threads
        self._http = http or HttpConfig()
        self._map: dict[int, Any] = {}
        self._listeners: list[_Listener] = []
        self._dispatcher: ThreadedTaskDispatcher | None = None
        self._front: _Front | None = None
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        """Return the bound host (the configured one before start)."""
        return self._host

    @property
    def port(self) -> int:
        """Return the bound port; with port 0, the one the OS chose once started."""
        return self._port

    @property
    def url(self) -> str:
        """Return the base URL of the HMI, e.g. http://127.0.0.1:8050/."""
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}/"

    @property
    def running(self) -> bool:
        """Tell whether the serving thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def max_connections(self) -> int:
        """Return the connection limit in force: the configured one, if the open files fit it."""
        return self._front.max_connections if self._front else self._http.max_connections

    def stats(self) -> FrontStats:
        """Return what the HTTP front cut and refused since the start, and what is open now."""
        return self._front.snapshot() if self._front else FrontStats()

    def start(self) -> None:
        """Bind the socket now (errors surface here) and serve in a background thread."""
        if self._dispatcher is not None:
            raise RuntimeError("the HMI server is already started")
        http = self._http
        limit = fitting_connection_limit(http.max_connections)
        proxy: dict[str, Any] = {}
        if http.trusted_proxy:
            # REMOTE_ADDR becomes the client's address the proxy reports, so that login
            # throttling and the public feed's rate limit see clients, not the proxy.
            proxy = {
                "trusted_proxy": http.trusted_proxy,
                "trusted_proxy_count": 1,
                "trusted_proxy_headers": {"x-forwarded-for", "x-forwarded-proto"},
            }
        adj = Adjustments(
            host=self._host,
            port=self._port,
            threads=self._threads,
            ident="beffroi",
            # The front decides when to accept (see _Listener.readable); waitress's own
            # check counts every socket of the map, listeners and wake-up pipes included.
            connection_limit=limit + 16,
            channel_timeout=http.idle_timeout_s,
            cleanup_interval=CHECK_INTERVAL_S,
            max_request_header_size=http.max_header_bytes,
            # waitress refuses a body of this size or more; the setting is the largest allowed.
            max_request_body_size=http.max_body_bytes + 1,
            asyncore_use_poll=True,
            **proxy,
        )
        self._map = {}
        self._front = front = _Front(http, limit)
        self._dispatcher = dispatcher = ThreadedTaskDispatcher()
        dispatcher.set_thread_count(self._threads)
        try:
            self._listeners = [
                _Listener(
                    self._wsgi,
                    self._map,
                    adj=adj,
                    dispatcher=dispatcher,
                    sockinfo=info,
                    front=front,
                )
                for info in adj.listen
            ]
        except Exception:
            wasyncore.close_all(self._map, ignore_all=True)
            dispatcher.shutdown(cancel_pending=True, timeout=1.0)
            self._dispatcher = None
            raise
        for listener in self._listeners:
            listener.accept_connections()
        first = self._listeners[0]
        self._host, self._port = first.effective_host, int(first.effective_port)
        self._thread = threading.Thread(
            target=self._run, args=(adj.asyncore_loop_timeout,), name="beffroi-hmi", daemon=True
        )
        self._thread.start()
        log.info(
            "HMI serving on %s (up to %d connections, %d per address, headers within %.0f s)",
            self.url,
            limit,
            http.max_per_address,
            http.header_timeout_s,
        )

    def _run(self, timeout: float) -> None:
        try:
            wasyncore.loop(timeout=timeout, map=self._map, use_poll=True)
        except Exception:
            log.exception("HMI server loop failed")

    def stop(self, timeout: float = 5.0) -> None:
        """Close the listener and every connection, end the loop and the worker threads."""
        dispatcher, thread = self._dispatcher, self._thread
        if dispatcher is None:
            return
        for listener in self._listeners:
            listener.accepting = False  # read by the loop's next readable(): no new clients
        # Workers first, while the loop still runs: a request ending after the loop closed
        # would wake it through a closed pipe, or through a descriptor reused meanwhile.
        dispatcher.shutdown(cancel_pending=True, timeout=timeout)
        triggers = [d for d in list(self._map.values()) if isinstance(d, WaitressTrigger)]
        if thread is not None and thread.is_alive() and triggers:
            # Close the sockets from inside the loop thread: an emptied map ends the loop,
            # and nothing touches the map from another thread while poll() waits on it.
            try:
                triggers[0].pull_trigger(lambda: wasyncore.close_all(self._map, ignore_all=True))
            except OSError as exc:
                # The loop closed its wake-up pipe already (it saw the pipe fail): nothing
                # waits on the map any more, so close what is left from here.
                log.warning("HMI server loop's wake-up pipe is closed (%s): closing directly", exc)
                wasyncore.close_all(self._map, ignore_all=True)
            thread.join(timeout)
            if thread.is_alive():
                log.warning("HMI server loop did not stop within %.1f s", timeout)
        else:
            wasyncore.close_all(self._map, ignore_all=True)
        dispatcher.shutdown(cancel_pending=True, timeout=timeout)
        self._dispatcher = None
        self._listeners = []
        self._thread = None
        log.info("HMI server stopped")

    def __enter__(self) -> HmiServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
