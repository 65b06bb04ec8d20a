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
    return Response(json.dumps(body, default=_default), status, mimetype="application/json")


def error(status: int, message: str) -> Response:
    """Answer with `{"error": message}`, which the CLI shows."""
    return json_response({"error": message}, status)


def _default(v: Any) -> Any:
    if isinstance(v, datetime):
        return v.isoformat()
    if isinstance(v, float) and math.isnan(v):
        return None
    return str(v)
