"""The MQTT session of a Sparkplug node or host: one way to open it, for both roles."""

from __future__ import annotations

import logging

import aiomqtt

from beffroi.sparkplug.config import SparkplugConfig

# Commands and answers go many at a time (the lighting schedule at dusk): aiomqtt warns from
# 10 publishes in flight.
PENDING_CALLS_WARN = 5000


def client(
    cfg: SparkplugConfig,
    identifier: str,
    *,
    clean_session: bool,
    will: aiomqtt.Will | None,
    logger: logging.Logger,
) -> aiomqtt.Client:
    """Return a client for the broker of `[sparkplug]` (credentials from the environment)."""
    creds = cfg.login()
    session = aiomqtt.Client(
        cfg.host,
        cfg.port,
        identifier=identifier,
        clean_session=clean_session,
        keepalive=cfg.keepalive_s,
        will=will,
        username=creds[0] if creds else None,
        password=creds[1] if creds else None,
        timeout=10,
        logger=logger,
    )
    session.pending_calls_threshold = PENDING_CALLS_WARN
    return session
