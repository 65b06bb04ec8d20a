"""The interventions route: their KPIs of a period as CSV (`beffroi interventions kpis`)."""

from __future__ import annotations

from flask import Flask, Response, request

import beffroi
from beffroi.api import routes
from beffroi.api.http import add_route
from beffroi.core.timeparse import parse_time
from beffroi.interventions.kpis import intervention_kpis, to_csv
from beffroi.interventions.service import InterventionService


def register_interventions_api(server: Flask, service: InterventionService, token: str) -> None:
    """Add the interventions routes, answering only requests bearing the token."""

    def kpis() -> Response:
        start = parse_time(request.args.get("from", "-30d"))
        end = parse_time(request.args.get("to", "now"))
        if start >= end:
            raise ValueError("`from` must be before `to`")
        text = to_csv(intervention_kpis(service.store, start, end))
        return Response(
            text, mimetype="text/csv", headers={"X-Beffroi-Version": beffroi.__version__}
        )

    add_route(server, routes.INTERVENTIONS_KPIS, token, kpis)
