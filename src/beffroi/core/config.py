"""Config base types, defined once: every section of config.toml is built from these."""

from __future__ import annotations

import os
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from beffroi.core.errors import MissingCredentials

SLUG = r"^[a-z0-9][a-z0-9_-]*$"
ASSET_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
_HHMM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")
_EMAIL = re.compile(r"^[^@\s<>]+@[^@\s<>]+$")
_HTTP_URL = re.compile(r"^https?://[^/\s]+(/\S*)?$")
_OPC_URL = re.compile(r"^opc\.tcp://[^/:\s]+:\d{1,5}(/\S*)?$")


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, values are read-only.

    A field whose TOML key is a Python keyword is read by its alias only (`class`, never the
    attribute's name `asset_class`): one word in the file for one meaning.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_hhmm(v: str) -> str:
    """Return a local time of day `HH:MM` (or `24:00`, the end of a day) unchanged."""
    if not (_HHMM.match(v) or v == "24:00"):
        raise ValueError(f"expected a time HH:MM, got {v!r}")
    return v


def check_emails(values: list[str]) -> list[str]:
    """Return e-mail addresses unchanged, or raise naming the first that is not one."""
    for v in values:
        if not _EMAIL.match(v):
            raise ValueError(f"not an e-mail address: {v!r}")
    return values


def check_http_url(v: str) -> str:
    """Return an http(s) URL unchanged, or raise saying what was expected."""
    if not _HTTP_URL.match(v):
        raise ValueError(f"not an http(s) URL (expected http://host:port), got {v!r}")
    return v


def check_opc_url(v: str) -> str:
    """Return an opc.tcp URL unchanged, or raise ValueError saying what was expected."""
    if not _OPC_URL.match(v):
        raise ValueError(f"not a valid opc.tcp URL (expected opc.tcp://host:port/path), got {v!r}")
    return v


Slug = Annotated[str, Field(pattern=SLUG, max_length=64)]
AssetId = Annotated[str, Field(pattern=ASSET_ID, max_length=64)]
# The name of an environment variable holding a secret; "" when none is used.
EnvName = Annotated[str, Field(pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$", max_length=128)]
HHMM = Annotated[str, AfterValidator(check_hhmm)]
Day = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
DAYS: tuple[Day, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Emails = Annotated[list[str], AfterValidator(check_emails)]
OpcUrl = Annotated[str, AfterValidator(check_opc_url)]


class Credentials(Strict):
    """A user name and password read from environment variables, never from the file."""

    username_env: EnvName = ""
    password_env: EnvName = ""

    @model_validator(mode="after")
    def _both_or_neither(self) -> Credentials:
        if bool(self.username_env) != bool(self.password_env):
            raise ValueError("username_env and password_env go together")
        return self

    def login(self) -> tuple[str, str] | None:
        """Return the user name and password read from the environment (None: none is used)."""
        if not self.username_env or not self.password_env:
            return None
        missing = [n for n in (self.username_env, self.password_env) if n not in os.environ]
        if missing:
            raise MissingCredentials(f"environment variable {', '.join(missing)} is not set")
        return os.environ[self.username_env], os.environ[self.password_env]
