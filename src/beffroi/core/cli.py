"""The `beffroi` command line: demo, run, check-config, tags, query."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sys
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer

from beffroi.core.config import Config, load_config
from beffroi.core.errors import BeffroiError, ConfigError

app = typer.Typer(
    help="Beffroi: supervision hypervisor and SCADA historian for a metropolis.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="config file (TOML)")]
_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class OutputFormat(StrEnum):
    """Formats of `beffroi query`."""

    csv = "csv"
    json = "json"


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
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """Parse `now`, a relative time like `-15m`/`-2h`/`-7d`, or ISO 8601 (naive = UTC)."""
    now = now or datetime.now(UTC)
    text = text.strip()
    if text == "now":
        return now
    m = _RELATIVE.match(text)
    if m:
        return now - timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})
    try:
        ts = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r}: expected now, -15m, -2h, -7d or ISO 8601") from None
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def parse_every(text: str) -> timedelta:
    """Parse a bucket width like `30s`, `15m`, `1h`, `1d`."""
    m = re.match(r"^(\d+(?:\.\d+)?)([smhdw])$", text.strip())
    if not m or float(m.group(1)) <= 0:
        raise typer.BadParameter(f"{text!r}: expected a width like 30s, 15m, 1h or 1d")
    return timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})


def _serve(cfg: Config, *, simulator: bool, duration: float | None, assets: int | None) -> None:
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
            typer.echo(
                f"HMI: {rt.hmi_server.url}",
            )
        sys.stdout.flush()

    runtime = Runtime(cfg, register, simulator=simulator)
    try:
        asyncio.run(runtime.run(duration=duration, ready=ready))
    except OSError as exc:
        raise _fail([f"cannot start: {exc}"], 1) from None
    except BeffroiError as exc:
        raise _fail(str(exc).splitlines(), 1) from None
    typer.echo(
        f"Stopped cleanly: {runtime.samples_in} samples received, "
        f"{runtime.buffer.written if runtime.buffer else 0} stored."
    )


def demo_config(
    cfg: Config, *, data: Path | None, port: int | None, opcua_port: int | None
) -> Config:
    """Return the config with the demo's overrides: data folder, HMI and simulator ports."""
    updates: dict = {}
    if data is not None:
        path = str((data / "beffroi.duckdb").resolve())
        updates["historian"] = cfg.historian.model_copy(update={"path": path})
    if port is not None:
        updates["hmi"] = cfg.hmi.model_copy(update={"port": port})
    if opcua_port is not None:
        old = cfg.simulator.endpoint
        new = re.sub(r"^(opc\.tcp://[^/:]+)(:\d+)?", rf"\g<1>:{opcua_port}", old)
        updates["simulator"] = cfg.simulator.model_copy(update={"endpoint": new})
        cols = [
            c.model_copy(update={"url": new}) if c.url == old else c for c in cfg.collectors.opcua
        ]
        updates["collectors"] = cfg.collectors.model_copy(update={"opcua": cols})
    out = cfg.model_copy(update=updates)
    out._source = cfg.source
    return out


@app.command()
def demo(
    config: ConfigOpt = Path("config.toml"),
    duration: Annotated[float | None, typer.Option(help="run this many seconds, then stop")] = None,
    port: Annotated[int | None, typer.Option(help="HMI port")] = None,
    data: Annotated[Path | None, typer.Option(help="folder for the historian file")] = None,
    assets: Annotated[int | None, typer.Option(help="generated assets (default: config)")] = None,
    opcua_port: Annotated[int | None, typer.Option(help="simulator's OPC UA port")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start the simulated metropolis, the gateway and the HMI on the embedded store."""
    _setup_logging(verbose)
    cfg = demo_config(_load(config), data=data, port=port, opcua_port=opcua_port)
    _serve(cfg, simulator=True, duration=duration, assets=assets)


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


@app.command()
def query(
    tag: Annotated[list[str], typer.Argument(help="tags, e.g. dijon/LC-0001/power_kw")],
    config: ConfigOpt = Path("config.toml"),
    start: Annotated[str, typer.Option(help="now, -15m, -2h, -7d or ISO 8601")] = "-1h",
    end: Annotated[str, typer.Option(help="now, -15m, -2h, -7d or ISO 8601")] = "now",
    every: Annotated[str | None, typer.Option(help="bucket width: 30s, 15m, 1h, 1d")] = None,
    agg: Annotated[str | None, typer.Option(help="mean|min|max|first|last|count|sum")] = None,
    max_points: Annotated[int | None, typer.Option(help="downsample to this many points")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.csv,
) -> None:
    """Print stored values of tags from the historian as CSV or JSON."""
    cfg = _load(config)
    now = datetime.now(UTC)
    t0, t1 = parse_time(start, now), parse_time(end, now)
    width = parse_every(every) if every else None
    if (width is None) != (agg is None):
        raise _fail(["--every and --agg go together"])
    from beffroi.core.plugins import load

    path = cfg.resolve(cfg.historian.path)
    if not path.exists():
        raise _fail(
            [f"{path}: no historian file yet (run `beffroi demo` or `beffroi run` first)"], 1
        )
    try:
        hist = load("historian", cfg.historian.backend)(path, read_only=True)
    except Exception as exc:
        if "lock" in str(exc).lower():
            raise _fail(
                [f"{path} is in use by a running gateway; stop it or query through its HMI"], 1
            ) from None
        raise _fail([f"{path}: cannot open: {exc}"], 1) from None
    try:
        df = hist.query(tag, t0, t1, every=width, agg=agg, max_points=max_points)
    except ValueError as exc:
        raise _fail([str(exc)]) from None
    finally:
        hist.close()
    unknown = sorted(set(tag) - set(df["tag"]))
    for t in unknown:
        typer.echo(
            f"warning: no values for {t} between {t0.isoformat()} and {t1.isoformat()}", err=True
        )
    df["ts"] = df["ts"].map(lambda ts: ts.isoformat())
    if fmt is OutputFormat.json:
        typer.echo(
            json.dumps(df.to_dict(orient="records"), default=str, allow_nan=False)
            if not df["value"].isna().any()
            else df.to_json(orient="records")
        )
    else:
        typer.echo(df.to_csv(index=False), nl=False)


def main() -> None:
    """Run the CLI; user errors are messages, never tracebacks."""
    try:
        app()
    except BeffroiError as exc:
        typer.echo(str(exc), err=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
