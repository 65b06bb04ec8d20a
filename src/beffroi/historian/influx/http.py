"""InfluxDB's v1 HTTP endpoints: `/write` with database and retention policy, InfluxQL `/query`."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Sequence
from urllib.parse import urlencode

import urllib3

from beffroi.core.errors import BeffroiError

log = logging.getLogger(__name__)

# Statements sent per /query request: large enough to amortise HTTP, small enough that a
# server answers well before the timeout.
STATEMENTS_PER_REQUEST = 200


class InfluxError(BeffroiError):
    """InfluxDB refused a request (authentication, missing database, bad query)."""


class InfluxUnavailable(InfluxError):
    """InfluxDB could not be reached or failed; retrying later may succeed."""


Series = dict  # {"name": str, "tags": dict, "columns": list[str], "values": list[list]}


class InfluxHttp:
    """Talk to InfluxDB's v1 API with one connection pool, credentials and CA file."""

    def __init__(
        self,
        url: str,
        database: str,
        retention_policy: str = "",
        *,
        token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        timeout_s: float = 10.0,
    ):
        self.url = url.rstrip("/")
        self.database = database
        self.retention_policy = retention_policy
        self.headers: dict[str, str] = {}
        if token:
            self.headers["Authorization"] = f"Token {token}"
        elif username is not None:
            self.headers |= urllib3.make_headers(basic_auth=f"{username}:{password or ''}")
        # Connecting is quick or hopeless; reading may wait for a long query.
        timeout = urllib3.Timeout(connect=min(timeout_s, 3.0), read=timeout_s)
        self.pool = urllib3.PoolManager(
            num_pools=2, maxsize=4, retries=False, timeout=timeout, ca_certs=ca_file
        )

    def close(self) -> None:
        """Close the pooled connections."""
        self.pool.clear()

    def request(
        self, method: str, path: str, params: dict[str, str], body: bytes | None, ctype: str
    ) -> urllib3.BaseHTTPResponse:
        """Send a request; return the response or raise InfluxUnavailable / InfluxError."""
        url = f"{self.url}{path}?{urlencode(params)}"
        headers = self.headers | {"Content-Type": ctype}
        try:
            resp = self.pool.request(method, url, body=body, headers=headers)
        except urllib3.exceptions.HTTPError as exc:
            raise InfluxUnavailable(f"InfluxDB at {self.url} unreachable: {_reason(exc)}") from exc
        if resp.status >= 500:
            raise InfluxUnavailable(f"InfluxDB at {self.url}{path}: {_describe(resp)}")
        if resp.status >= 300:
            raise InfluxError(f"InfluxDB at {self.url}{path} refused: {_describe(resp)}")
        return resp

    def write(self, body: bytes) -> int:
        """Write line protocol (µs timestamps) through the v1 /write; return samples dropped."""
        params = {"db": self.database, "precision": "u"}
        if self.retention_policy:
            params["rp"] = self.retention_policy
        try:
            self.request("POST", "/write", params, body, "text/plain; charset=utf-8")
        except InfluxError as exc:
            return partial_write_dropped(exc)
        return 0

    def query(self, statements: Sequence[str]) -> list[list[Series]]:
        """Run InfluxQL statements; return each statement's series, chunks merged."""
        out: list[list[Series]] = []
        for i in range(0, len(statements), STATEMENTS_PER_REQUEST):
            part = statements[i : i + STATEMENTS_PER_REQUEST]
            params = {"db": self.database, "epoch": "u", "chunked": "true", "chunk_size": "20000"}
            body = urlencode({"q": ";\n".join(part)}).encode()
            resp = self.request("POST", "/query", params, body, "application/x-www-form-urlencoded")
            out.extend(_parse_chunks(resp.data, len(part), part))
        return out


def _parse_chunks(raw: bytes, n: int, statements: Sequence[str]) -> list[list[Series]]:
    """Merge a chunked /query answer (one JSON object per line) into series per statement."""
    merged: list[dict[tuple, Series]] = [{} for _ in range(n)]
    for line in raw.splitlines():
        if not line.strip():
            continue
        answer = json.loads(line)
        if "error" in answer:
            raise InfluxError(f"InfluxQL error: {answer['error']}")
        for result in answer.get("results", []):
            sid = result.get("statement_id", 0)
            if "error" in result:
                raise InfluxError(f"InfluxQL error: {result['error']} in: {statements[sid]}")
            for s in result.get("series", []):
                key = (s.get("name"), tuple(sorted((s.get("tags") or {}).items())))
                known = merged[sid].get(key)
                if known is None:
                    merged[sid][key] = {
                        "name": s.get("name", ""),
                        "tags": s.get("tags") or {},
                        "columns": s["columns"],
                        "values": list(s.get("values") or []),
                    }
                else:
                    known["values"].extend(s.get("values") or [])
    return [list(m.values()) for m in merged]


_DROPPED = re.compile(r"dropped=(\d+)")


def partial_write_dropped(exc: InfluxError) -> int:
    """Return the samples InfluxDB dropped from a partly refused write, or re-raise.

    A field type conflict refuses only the offending points, and sending them again can never
    succeed: raising would make the spool retry them for ever, so they are logged and counted.
    """
    text = str(exc)
    if isinstance(exc, InfluxUnavailable) or "partial write" not in text:
        raise exc
    found = _DROPPED.search(text)
    dropped = int(found.group(1)) if found else 1
    log.error("InfluxDB refused %d samples for good: %s", dropped, text)
    return dropped


def _describe(resp: urllib3.BaseHTTPResponse) -> str:
    """Return the status and the server's error message."""
    text = resp.data[:500].decode("utf-8", "replace").strip()
    try:
        text = json.loads(text).get("error", text)
    except (ValueError, AttributeError):
        pass
    return f"HTTP {resp.status}: {text}"


def _reason(exc: Exception) -> str:
    """Return the root cause of a urllib3 error in a few words."""
    reason = getattr(exc, "reason", None) or exc
    text = str(reason)
    # urllib3 wraps "[Errno 111] Connection refused" in object reprs; keep the human part.
    found = re.search(r"\[Errno -?\d+\] [^'\")]+", text)
    return found.group(0) if found else text
