"""`beffroi interventions kpis`: the auditor's CSV of intervention KPIs, with its manifest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from beffroi.api import routes
from beffroi.api.client import GatewayClient
from beffroi.cli.common import RUN_FIRST, ConfigOpt, fail, gateway_or_files, load, open_file
from beffroi.cli.kpi import FromOpt, ToOpt, local_range
from beffroi.interventions.config import interventions_place
from beffroi.interventions.kpis import intervention_kpis, to_csv, write_export
from beffroi.interventions.store import InterventionStore

commands = typer.Typer(help="Interventions (work orders): their KPIs.", no_args_is_help=True)


@commands.command("kpis")
def kpis(
    start: FromOpt,
    end: ToOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV file to write")],
    config: ConfigOpt = Path("config.toml"),
) -> None:
    """Write the intervention KPIs of a period (times, backlog, telemetry first) as CSV."""
    cfg = load(config)
    try:
        t0, t1 = local_range(cfg, start, end)
    except ValueError as exc:
        raise fail([str(exc)]) from None
    place = interventions_place(cfg)

    def offline() -> str:
        store = open_file(
            place, lambda: InterventionStore(place), missing=f"no interventions yet ({RUN_FIRST})"
        )
        try:
            return to_csv(intervention_kpis(store, t0, t1))
        finally:
            store.close()

    def online(gateway: GatewayClient) -> str:
        return gateway.text(
            routes.INTERVENTIONS_KPIS, [("from", t0.isoformat()), ("to", t1.isoformat())]
        )

    text = gateway_or_files(cfg, online, offline)
    manifest = write_export(text, t0, t1, out, cfg.metropolis.name)
    typer.echo(f"{out}: {manifest['rows']} rows, sha256 {manifest['sha256']}")
