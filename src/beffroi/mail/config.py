"""Config of the SMTP relay (the keys of `[alarms.email]` that say how to reach it)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field

from beffroi.core.config import Credentials, check_emails


def _one_address(v: str) -> str:
    return check_emails([v])[0]


class SmtpConfig(Credentials):
    """The SMTP server every e-mail goes through; its credentials come from the environment."""

    host: str = "127.0.0.1"
    port: int = Field(default=25, ge=1, le=65535)
    security: Literal["none", "starttls", "ssl"] = "starttls"
    sender: Annotated[str, AfterValidator(_one_address)] = "beffroi@localhost"
    ca_file: str = ""
    timeout_s: float = Field(default=10.0, gt=0, le=300)
    retry_min_s: float = Field(default=5.0, gt=0)
    retry_max_s: float = Field(default=300.0, gt=0)
