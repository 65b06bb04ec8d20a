"""Secrets from the environment, or generated at first run and kept in a private file."""

from __future__ import annotations

import os
import secrets
from pathlib import Path


def kept_secret(env_name: str, fallback: Path) -> bytes:
    """Return the secret from the environment, or one generated and kept at first run."""
    value = os.environ.get(env_name) if env_name else None
    if value:
        return value.encode()
    if fallback.exists():
        return fallback.read_bytes()
    fallback.parent.mkdir(parents=True, exist_ok=True)
    secret = secrets.token_bytes(32)
    fd = os.open(fallback, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(secret)
    return secret
