"""Config of `[historian.influx]`: the server, API flavour and where secrets come from."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, model_validator

from beffroi.core.config import Credentials, EnvName, check_http_url


class InfluxConfig(Credentials):
    """The InfluxDB server of the `influx` back end; secrets come from environment variables."""

    url: Annotated[str, AfterValidator(check_http_url)] = "http://127.0.0.1:8086"
    api: Literal["v1", "v2"] = "v2"
    database: str = Field(default="beffroi", min_length=1)
    retention_policy: str = ""
    bucket: str = ""
    org: str = ""
    token_env: EnvName = ""
    ca_file: str = ""
    timeout_s: float = Field(default=10.0, gt=0, le=300)

    @model_validator(mode="after")
    def _one_kind_of_secret(self) -> InfluxConfig:
        if self.token_env and (self.username_env or self.password_env):
            raise ValueError("give token_env or username_env and password_env, not both")
        return self
