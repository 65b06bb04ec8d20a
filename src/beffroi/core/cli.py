"""The `beffroi` command line: demo, run, check-config, tags, query."""

from __future__ import annotations

import asyncio
import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from beffroi.app.config import Config, demo_config, load_config, register_problems
from beffroi.core.errors import BeffroiError, ConfigError

app = typer.Typer(
    help="Beffroi: supervision hypervisor and SCADA historian for a metropolis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="config file (TOML)")]


def _fail(lines: list[str], code: int = 2) -> typer.Exit:
    for line in lines:
        typer.echo(line, err=True)
    return typer.Exit(code)


def _load(path: Path) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise _fail(exc.lines) from None


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # asyncua logs every reconnect attempt at length; our collector says it once, clearly.
    logging.getLogger("asyncua").setLevel(logging.ERROR)
    # pymodbus logs an error at every timeout of a silent device; the collector says it once.
    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    # APScheduler logs every run of every job at INFO: the 1 s alarm tick would fill the log.
    logging.getLogger("apscheduler.executors").setLevel(logging.WARNING)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def _serve(
    cfg: Config,
    *,
    simulator: bool,
    duration: float | None,
    assets: int | None,
    demo: bool = False,
) -> None:
    from beffroi.core.register import build_register
    from beffroi.core.runtime import Runtime

    register = build_register(cfg, assets=assets)

    def ready(rt: Runtime) -> None:
        typer.echo(
            f"Assets: {len(register.assets)} in {len(register.communes)} communes, "
            f"{len(register.tags)} tags"
        )
        if rt.simulator is not None:
            typer.echo(f"Simulator (OPC UA): {rt.simulator.endpoint}")
        typer.echo(f"Historian: {cfg.historian.backend} {cfg.resolve(cfg.historian.path)}")
        if rt.hmi_server is not None:
            typer.echo(f"HMI: {rt.hmi_server.url}")
            if rt.demo_passwords:
                typer.echo("Demo users (new passwords at each demo start):")
                for name, password in rt.demo_passwords.items():
                    user = rt.users.get(name)
                    scope = "all communes" if user.everywhere else ", ".join(user.communes)
                    typer.echo(f"  {name:<18} {password:<14} {user.role}, {scope}")
            elif not rt.users.all():
                typer.echo(
                    "No HMI user yet: create one with "
                    "`beffroi user add NAME --role admin --commune '*'`"
                )
        sys.stdout.flush()

    runtime = Runtime(cfg, register, simulator=simulator, demo=demo)
    try:
        asyncio.run(runtime.run(duration=duration, ready=ready))
    except OSError as exc:
        raise _fail([f"cannot start: {exc}"], 1) from None
    except BeffroiError as exc:
        raise _fail(str(exc).splitlines(), 1) from None
    typer.echo(stop_summary(runtime))


def stop_summary(runtime) -> str:  # type: ignore[no-untyped-def]
    """Say what became of the samples: stored, left out by compression, spooled, dropped."""
    comp = runtime.compressor
    within = comp.offered - comp.stored if comp is not None else 0
    text = f"Stopped cleanly: {runtime.samples_in} samples received"
    if within:
        text += f", {within} of them within their compression deadbands (not stored, by design)"
    state = runtime.buffer.status() if runtime.buffer else {}
    text += f"; {state.get('written', 0)} samples written to the historian"
    down = runtime.downtime
    if down.marks:
        text += f", {down.marks} of them marks of the gateway's downtime"
    if down.restamped:
        text += f", {down.restamped} first values after it stored again when received"
    for key, what in (
        ("spooled", "spooled, stored at the next start"),
        ("dropped", "dropped (spool full)"),
        ("memory", "left in memory, not stored"),
    ):
        if state.get(key):
            text += f"; {state[key]} {what}"
    return text + "."


@app.command()
def demo(
    config: ConfigOpt = Path("config.toml"),
    duration: Annotated[float | None, typer.Option(help="run this many seconds, then stop")] = None,
    port: Annotated[int | None, typer.Option(help="HMI port")] = None,
    data: Annotated[Path | None, typer.Option(help="folder for every file the demo writes")] = None,
    assets: Annotated[int | None, typer.Option(help="generated assets (default: config)")] = None,
    opcua_port: Annotated[int | None, typer.Option(help="simulator's OPC UA port")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start the simulated metropolis, the gateway and the HMI on the embedded store."""
    _setup_logging(verbose)
    cfg = demo_config(_load(config), data=data, port=port, opcua_port=opcua_port)
    _serve(cfg, simulator=True, duration=duration, assets=assets, demo=True)


@app.command()
def run(
    config: ConfigOpt = Path("config.toml"),
    duration: Annotated[float | None, typer.Option(help="run this many seconds, then stop")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run the gateway as configured (the simulator only if [simulator] enabled)."""
    _setup_logging(verbose)
    cfg = _load(config)
    _serve(cfg, simulator=cfg.simulator.enabled, duration=duration, assets=None)


@app.command("check-config")
def check_config(config: ConfigOpt = Path("config.toml")) -> None:
    """Validate a config file: exit 0 if good, 2 with one line per problem if not."""
    cfg = _load(config)
    from beffroi.core.register import build_register

    try:
        register = build_register(cfg)
    except ConfigError as exc:
        raise _fail(exc.lines) from None
    problems = register_problems(cfg, register)  # e.g. a Modbus device's asset
    if problems:
        raise _fail([f"{config}: {p}" for p in problems])
    typer.echo(
        f"{config}: OK — {len(cfg.communes)} communes, {len(cfg.asset_classes)} asset "
        f"classes, {len(register.assets)} assets, {len(register.tags)} tags"
    )


@app.command()
def tags(
    config: ConfigOpt = Path("config.toml"),
    commune: Annotated[list[str] | None, typer.Option(help="only these communes")] = None,
    asset_class: Annotated[
        list[str] | None, typer.Option("--class", help="only these classes")
    ] = None,
) -> None:
    """List the tags of the register: name, kind, unit, writable range."""
    cfg = _load(config)
    from beffroi.core.register import build_register

    register = build_register(cfg)
    for asset in register.assets.values():
        if commune and asset.commune not in commune:
            continue
        if asset_class and asset.asset_class not in asset_class:
            continue
        for t in asset.tags:
            rng = ""
            if t.writable:
                low = "" if t.low is None else t.low
                high = "" if t.high is None else t.high
                rng = f"\twritable [{low}, {high}]"
            typer.echo(f"{t.name}\t{t.kind}\t{t.unit}{rng}")


def _register_commands() -> None:
    # Command groups in their own modules, registered on this app (they import _load, _fail).
    from beffroi.core import cli_alarms, cli_audit, cli_kpi, cli_query, cli_users

    cli_alarms.register(app)
    cli_audit.register(app)
    cli_kpi.register(app)
    cli_query.register(app)
    cli_users.register(app)


_register_commands()


def main() -> None:
    """Run the CLI; user errors are messages, never tracebacks."""
    try:
        app()
    except BeffroiError as exc:
        typer.echo(str(exc), err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
