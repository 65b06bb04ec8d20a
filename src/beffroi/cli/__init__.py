"""The `beffroi` command line: a module per command group, registered on one typer app."""

from __future__ import annotations

import sys

import typer

from beffroi.cli import alarms, audit, gateway, interventions, inventory, kpi, query, state, users
from beffroi.core.errors import BeffroiError

app = typer.Typer(
    help="Beffroi: supervision hypervisor and SCADA historian for a metropolis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(gateway.commands)
app.add_typer(query.commands)
app.add_typer(alarms.commands, name="alarms")
app.add_typer(audit.commands, name="audit")
app.add_typer(kpi.commands, name="kpi")
app.add_typer(inventory.commands, name="inventory")
app.add_typer(interventions.commands, name="interventions")
app.add_typer(users.commands, name="user")
app.add_typer(state.commands, name="state")


def main() -> None:
    """Run the CLI; user errors are messages, never tracebacks."""
    try:
        app()
    except BeffroiError as exc:
        typer.echo(str(exc), err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
