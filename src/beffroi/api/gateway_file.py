"""Where a running gateway says it answers: `gateway.json` (URL, token, pid) beside its data."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from beffroi.core.site import Site


@dataclass(frozen=True, slots=True)
class GatewayFile:
    """The running gateway's record: where its API answers and the token it accepts."""

    url: str
    token: str
    pid: int | None = None


def gateway_file_path(site: Site) -> Path:
    """Return where a running gateway records its HMI URL and API token."""
    return site.data_dir() / "gateway.json"


def new_token() -> str:
    """Return a fresh random API token."""
    return secrets.token_urlsafe(32)


def write_gateway_file(path: Path, url: str, token: str) -> None:
    """Record where the running gateway answers and its token, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.unlink(missing_ok=True)  # O_CREAT keeps the mode of a file left there: made anew, 0600
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"url": url, "token": token, "pid": os.getpid()}, f)
    os.replace(tmp, path)


def read_gateway_file(path: Path) -> GatewayFile | None:
    """Return the recorded gateway, or None when no gateway recorded itself there."""
    try:
        info = json.loads(path.read_text())
        return GatewayFile(str(info["url"]), str(info["token"]), info.get("pid"))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
