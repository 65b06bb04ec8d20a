"""What the gateway's token API routes share: the bearer check, errors and JSON answers."""

from __future__ import annotations

import hmac
import json
import logging
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from flask import Flask, Response, request

from beffroi.api.routes import Route

log = logging.getLogger(__name__)

TOKEN_REQUIRED = "a valid bearer token is required"
# What a view's exception means to the client: its message, with this status.
BAD_REQUEST: Mapping[type[Exception], int] = {ValueError: 400}
# A request out of shape that a view did not check for (a number where a list was meant, JSON
# nested a thousand deep): 400 saying so, never a 500 with a traceback.
MALFORMED = (TypeError, KeyError, IndexError, AttributeError, OverflowError, RecursionError)


def bearer_ok(token: str) -> bool:
    """Return True when the request bears the token (compared in constant time)."""
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def add_route(
    server: Flask,
    route: Route,
    token: str,
    view: Callable[[], Response],
    errors: Mapping[type[Exception], int] = BAD_REQUEST,
) -> None:
    """Serve a route to requests bearing the token; listed exceptions answer their status."""

    def guarded() -> Response:
        if not bearer_ok(token):
            return error(401, TOKEN_REQUIRED)
        try:
            return view()
        except tuple(errors) as exc:
            status = next(s for kind, s in errors.items() if isinstance(exc, kind))
            return error(status, str(exc))
        except MALFORMED as exc:
            what = f"{type(exc).__name__}: {exc}"[:200]
            log.warning("%s %s: malformed request (%s)", route.method, route.path, what)
            return error(400, f"malformed request ({what})")

    server.add_url_rule(
        route.path, endpoint=f"api {route.path}", view_func=guarded, methods=[route.method]
    )


def json_response(body: Any, status: int = 200) -> Response:
    """Answer with JSON: times in ISO 8601, NaN as null, anything else as its text."""
    text = json.dumps(_finite(body), default=_default, allow_nan=False)
    return Response(text, status, mimetype="application/json")


def _finite(v: Any) -> Any:
    """Replace NaN and infinities by None (json.dumps writes them as invalid `NaN`)."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    return v


def error(status: int, message: str) -> Response:
    """Answer with `{"error": message}`, which the CLI shows."""
    return json_response({"error": message}, status)


def _default(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    return str(v)
