"""`beffroi demo|run|check-config|tags`: run the gateway, check a config, list the tags."""

from __future__ import annotations

import asyncio
import sys
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from beffroi.app.config import Config, demo_config, register_problems
from beffroi.cli.common import ConfigOpt, fail, load, setup_logging
from beffroi.core.errors import BeffroiError, ConfigError
from beffroi.core.register import build_register

if TYPE_CHECKING:  # the runtime imports every part (asyncua, Dash, …): only `demo` and `run`
    from beffroi.app.runtime import Runtime  # need it, so other commands start fast

commands = typer.Typer()


class Role(StrEnum):
    """The part of a site a `beffroi run` process plays."""

    all = "all"
    edge = "edge"
    central = "central"


RoleOpt = Annotated[
    Role,
    typer.Option(
        help="all: one process does everything; edge: collect and publish over Sparkplug B "
        "([sparkplug]); central: the rest, fed by the edges"
    ),
]
EdgeOpt = Annotated[str | None, typer.Option(help="with --role edge: the [[sparkplug.edges]] name")]


def _check_role(role: Role, edge: str | None) -> None:
    if role is Role.edge and not edge:
        raise fail(["--role edge needs --edge NAME (one of [[sparkplug.edges]])"])
    if role is not Role.edge and edge:
        raise fail(["--edge goes with --role edge"])


DurationOpt = Annotated[float | None, typer.Option(help="run this many seconds, then stop")]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v")]


def _serve(
    cfg: Config,
    *,
    simulator: bool,
    duration: float | None,
    assets: int | None,
    demo: bool = False,
    role: Role | None = None,
    node: str | None = None,
    edge: str | None = None,
) -> None:
    from beffroi.app.runtime import Runtime  # see TYPE_CHECKING above

    register = build_register(cfg, assets=assets)

    def ready(rt: Runtime) -> None:
        typer.echo(
            f"Assets: {len(register.assets)} in {len(register.communes)} communes, "
            f"{len(register.tags)} tags"
        )
        if rt.simulator is not None:
            typer.echo(f"Simulator (OPC UA): {rt.simulator.endpoint}")
        if rt.edge is not None:
            sp = cfg.sparkplug
            typer.echo(
                f"Edge {rt.edge.edge.name}: {len(rt.edge.tags_of())} tags to "
                f"{sp.host}:{sp.port}, group {sp.group}, host {sp.name}"
            )
        else:
            typer.echo(f"Historian: {cfg.historian.backend} {cfg.resolve(cfg.historian.path)}")
        if rt.hmi_server is not None and rt.users is not None:
            typer.echo(f"HMI: {rt.hmi_server.url}")
            if rt.demo_passwords:
                typer.echo("Demo users (new passwords at each demo start):")
                for name, password in rt.demo_passwords.items():
                    user = rt.users.get(name)
                    if user is None:
                        continue
                    scope = "all communes" if user.everywhere else ", ".join(user.communes)
                    typer.echo(f"  {name:<18} {password:<14} {user.role}, {scope}")
            elif not rt.users.all():
                typer.echo(
                    "No HMI user yet: create one with "
                    "`beffroi user add NAME --role admin --commune '*'`"
                )
        sys.stdout.flush()

    the_role = (role or Role.all).value
    runtime = Runtime(
        cfg,
        register,
        simulator=simulator,
        demo=demo,
        hmi=the_role != "edge",
        role=the_role,  # type: ignore[arg-type]  # the enum's values are the runtime's roles
        edge=edge,
        node=node,
    )
    try:
        asyncio.run(runtime.run(duration=duration, ready=ready))
    except OSError as exc:
        raise fail([f"cannot start: {exc}"], 1) from None
    except BeffroiError as exc:
        raise fail(str(exc).splitlines(), 1) from None
    typer.echo(stop_summary(runtime))


def stop_summary(runtime: Runtime) -> str:
    """Say what became of the samples: stored, left out by compression, spooled, dropped."""
    comp = runtime.compressor
    within = comp.offered - comp.stored if comp is not None else 0
    text = f"Stopped cleanly: {runtime.samples_in} samples received"
    if within:
        text += f", {within} of them within their compression deadbands (not stored, by design)"
    state = runtime.buffer.status() if runtime.buffer else {}
    where = "published to the central site" if runtime.edge else "written to the historian"
    text += f"; {state.get('written', 0)} samples {where}"
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


@commands.command()
def demo(
    config: ConfigOpt = Path("config.toml"),
    duration: DurationOpt = None,
    port: Annotated[int | None, typer.Option(help="HMI port")] = None,
    data: Annotated[Path | None, typer.Option(help="folder for every file the demo writes")] = None,
    assets: Annotated[int | None, typer.Option(help="generated assets (default: config)")] = None,
    opcua_port: Annotated[int | None, typer.Option(help="simulator's OPC UA port")] = None,
    role: RoleOpt = Role.all,
    edge: EdgeOpt = None,
    history_days: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=400,
            help="days of simulated history written at the first start (default: "
            "[simulator] history_days; 0 with --duration)",
        ),
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Start the simulated metropolis, the gateway and the HMI on the embedded store."""
    setup_logging(verbose)
    _check_role(role, edge)
    cfg = demo_config(load(config), data=data, port=port, opcua_port=opcua_port)
    if history_days is None and duration is not None:
        history_days = 0  # a timed run (scripts, tests) starts at once, without a past
    if history_days is not None:
        source = cfg.source
        sim = cfg.simulator.model_copy(update={"history_days": history_days})
        cfg = cfg.model_copy(update={"simulator": sim})
        cfg._source = source
    simulator = role is not Role.edge  # the equipment is simulated once, beside the central
    _serve(cfg, simulator=simulator, duration=duration, assets=assets, demo=True, role=role,
           edge=edge)  # fmt: skip


@commands.command()
def run(
    config: ConfigOpt = Path("config.toml"),
    duration: DurationOpt = None,
    role: RoleOpt = Role.all,
    edge: EdgeOpt = None,
    data: Annotated[
        Path | None, typer.Option(help="folder for every file this process writes")
    ] = None,
    port: Annotated[int | None, typer.Option(help="the HMI's port (default: [hmi] port)")] = None,
    node: Annotated[
        str | None, typer.Option(help="this gateway's name in its redundant pair ([pair])")
    ] = None,
    verbose: VerboseOpt = False,
) -> None:
    """Run the gateway as configured (the simulator only if [simulator] enabled)."""
    setup_logging(verbose)
    cfg = load(config)
    if data is not None or port is not None:  # several processes on one machine: a folder each
        cfg = demo_config(cfg, data=data, port=port, opcua_port=None)
    _check_role(role, edge)
    if node is not None and not cfg.pair.enabled:
        raise fail([f"{config}: pair.enabled: --node names this gateway in a [pair]: enable it"])
    simulator = cfg.simulator.enabled and role is not Role.edge
    _serve(
        cfg, simulator=simulator, duration=duration, assets=None, role=role, edge=edge, node=node
    )


@commands.command("check-config")
def check_config(config: ConfigOpt = Path("config.toml")) -> None:
    """Validate a config file: exit 0 if good, 2 with one line per problem if not."""
    cfg = load(config)
    try:
        register = build_register(cfg)
    except ConfigError as exc:
        raise fail(exc.lines) from None
    problems = register_problems(cfg, register)  # e.g. a Modbus device's asset
    if problems:
        raise fail([f"{config}: {p}" for p in problems])
    typer.echo(
        f"{config}: OK — {len(cfg.communes)} communes, {len(cfg.asset_classes)} asset "
        f"classes, {len(register.assets)} assets, {len(register.tags)} tags"
    )


@commands.command()
def tags(
    config: ConfigOpt = Path("config.toml"),
    commune: Annotated[list[str] | None, typer.Option(help="only these communes")] = None,
    asset_class: Annotated[
        list[str] | None, typer.Option("--class", help="only these classes")
    ] = None,
) -> None:
    """List the tags of the register: name, kind, unit, writable range."""
    register = build_register(load(config))
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
