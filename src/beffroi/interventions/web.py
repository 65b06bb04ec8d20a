"""The residents' report page and the crews' field page (placeholder being written)."""

from __future__ import annotations

from flask import Flask

from beffroi.core.live import LiveValues
from beffroi.interventions.service import InterventionService


def register_intervention_pages(
    server: Flask, service: InterventionService, live: LiveValues
) -> None:
    """Add /public/signaler, /public/api/reports and /field/<token>."""
