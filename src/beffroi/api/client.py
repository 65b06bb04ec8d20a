"""The one client of the gateway's token API, which every command-line command uses.

The rule, the same for every command: ask the running gateway recorded in `gateway.json`
(beside the historian) when one answers — it holds the DuckDB files and the live alarm
states — and work on the files otherwise. A gateway that does not accept a connection is not
running (a stale `gateway.json` after a crash): nothing was sent, so the files are safe to use.
A gateway that accepted the request and then failed or fell silent is an error, never a reason
to do the work a second time on the files.

One timeout policy: CONNECT_TIMEOUT_S to connect, then the route's `timeout_s` for each read
of the answer (60 s; a recomputation of a year of KPIs answers only when it is done, so its
route allows 600 s). One error format: the text of the gateway's `{"error": …}`, as "the gateway
refused: …" (4xx) or "failed: …" (5xx); an answer that is not what the route sends (JSON, or
CSV for exports) is an error too, never read as data.
"""

from __future__ import annotations

import codecs
import http.client
import json
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from beffroi.api.gateway_file import GatewayFile, gateway_file_path, read_gateway_file
from beffroi.api.routes import Route
from beffroi.core.errors import BeffroiError
from beffroi.core.site import Site

CONNECT_TIMEOUT_S = 10.0

Params = Mapping[str, Any] | Sequence[tuple[str, Any]]


class NoGateway(Exception):
    """No gateway is recorded, or the recorded one does not accept connections: nothing sent."""


class GatewayError(BeffroiError):
    """The gateway refused or failed a request, or stopped answering it."""


class GatewayClient:
    """Requests to the running gateway's token API."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url  # as the gateway recorded it, for messages
        parts = urllib.parse.urlsplit(url)
        self._host = parts.hostname or "127.0.0.1"
        self._port = parts.port or 80
        self._base = parts.path.rstrip("/")
        self._token = token
        self.sent = False  # whether a command (not only reads) went through this client

    @classmethod
    def find(cls, site: Site) -> GatewayClient:
        """Return a client of the gateway recorded beside the site's data; raise NoGateway."""
        recorded: GatewayFile | None = read_gateway_file(gateway_file_path(site))
        if recorded is None:
            raise NoGateway
        return cls(recorded.url, recorded.token)

    @contextmanager
    def open(
        self, route: Route, params: Params | None = None, body: Any = None
    ) -> Iterator[http.client.HTTPResponse]:
        """Send a request; yield the response of a success for the caller to read or stream."""
        path = self._base + route.path
        if params:
            items = params.items() if isinstance(params, Mapping) else params
            path += "?" + urllib.parse.urlencode(
                [(k, v) for k, v in items if v is not None], doseq=True
            )
        headers = {"Authorization": f"Bearer {self._token}"}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn = http.client.HTTPConnection(self._host, self._port, timeout=CONNECT_TIMEOUT_S)
        try:
            try:
                conn.connect()
            except OSError:
                raise NoGateway from None
            assert conn.sock is not None  # connect() made it
            conn.sock.settimeout(route.timeout_s)
            self.sent = self.sent or route.method != "GET"
            try:
                conn.request(route.method, path, body=data, headers=headers)
                resp = conn.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise GatewayError(f"the gateway at {self.url} does not answer: {exc}") from None
            if resp.status >= 400:
                verb = "refused" if resp.status < 500 else "failed"
                raise GatewayError(f"the gateway {verb}: {_error_text(resp)}")
            yield resp
        finally:
            conn.close()

    def json(self, route: Route, params: Params | None = None, body: Any = None) -> Any:
        """Send a request and return its JSON answer."""
        with self.open(route, params, body) as resp:
            self._expect(resp, "application/json")
            try:
                return json.loads(_read(resp, self.url))
            except ValueError:
                raise GatewayError(f"the gateway at {self.url} sent broken JSON") from None

    def text(self, route: Route, params: Params | None = None) -> str:
        """Send a request and return its answer as text (CSV)."""
        with self.open(route, params) as resp:
            self._expect(resp, "text/csv")
            return _read(resp, self.url).decode("utf-8")

    @contextmanager
    def csv_stream(self, route: Route, params: Params | None = None) -> Iterator[Iterator[str]]:
        """Send a request; yield its CSV answer as text chunks, read as they come."""
        with self.open(route, params) as resp:
            self._expect(resp, "text/csv")
            yield text_chunks(resp)

    def _expect(self, resp: http.client.HTTPResponse, kind: str) -> None:
        """Refuse an answer of another type (an HTML page is no data, whoever sent it)."""
        got = resp.headers.get("Content-Type", "")
        if not got.startswith(kind):
            raise GatewayError(
                f"the gateway at {self.url} answered {got or 'no type'} where {kind} was expected"
            )


def _read(resp: http.client.HTTPResponse, url: str) -> bytes:
    try:
        return resp.read()
    except (OSError, http.client.HTTPException) as exc:
        raise GatewayError(f"the gateway at {url} stopped answering: {exc}") from None


def _error_text(resp: http.client.HTTPResponse) -> str:
    """Return the error a gateway's JSON answer names, else its first words, else the reason."""
    try:
        raw = resp.read()
    except (TimeoutError, OSError, http.client.HTTPException):
        return resp.reason
    try:
        return str(json.loads(raw)["error"])
    except (ValueError, KeyError, TypeError):
        return raw.decode("utf-8", "replace")[:200] or resp.reason


def text_chunks(resp: http.client.HTTPResponse, size: int = 1 << 16) -> Iterator[str]:
    """Yield a streamed answer as text, decoding UTF-8 across chunk edges."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    while True:
        data = resp.read(size)
        if not data:
            break
        yield decoder.decode(data)
    yield decoder.decode(b"", final=True)
