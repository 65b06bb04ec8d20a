"""What the gateway's token API routes share: the bearer check and JSON answers."""

from __future__ import annotations

import hmac
import json
import math
from datetime import datetime
from typing import Any

from flask import Response, request

TOKEN_REQUIRED = "a valid bearer token is required"


def bearer_ok(token: str) -> bool:
    """Return True when the request bears the token (compared in constant time)."""
    given = request.headers.get("Authorization", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


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
