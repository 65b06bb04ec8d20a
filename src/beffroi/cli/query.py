"""`beffroi query`: stored values, through the running gateway or from the historian itself."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import pandas as pd
import typer

from beffroi.api import routes
from beffroi.api.client import GatewayClient
from beffroi.app.config import Config
from beffroi.cli.common import RUN_FIRST, ConfigOpt, fail, gateway_or_files, load, open_file
from beffroi.core.csv_safe import CRLF, safe_cell
from beffroi.core.register import build_register
from beffroi.core.seams import Historian
from beffroi.core.timeparse import parse_every, parse_time
from beffroi.historian.base import HistorianBackend
from beffroi.historian.duckdb.historian import DuckDBHistorian

commands = typer.Typer()


class OutputFormat(StrEnum):
    """Formats of `beffroi query`."""

    csv = "csv"
    json = "json"


def open_historian(cfg: Config, read_only: bool = True) -> Historian:
    """Open the configured historian here: the DuckDB file, or the InfluxDB server."""
    if cfg.historian.backend == "duckdb":
        path = cfg.resolve(cfg.historian.path)
        return open_file(
            path,
            lambda: DuckDBHistorian(path, read_only=read_only),
            missing=f"no historian file yet ({RUN_FIRST})",
        )
    # The registry imports every collector and back end: only a server back end needs it here.
    from beffroi.app.registry import HISTORIANS

    try:
        return HISTORIANS[cfg.historian.backend].from_config(cfg, build_register(cfg))
    except Exception as exc:
        raise fail([f"cannot reach the {cfg.historian.backend} historian: {exc}"], 1) from None


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """Return the gateway's rows as the historian's frame (raw rows carry the status code)."""
    columns = ["ts", "tag", "value", "quality"]
    if rows and "status" in rows[0]:
        columns.append("status")
    df = pd.DataFrame(rows, columns=columns)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return df


@commands.command()
def query(
    tag: Annotated[list[str], typer.Argument(help="tags, e.g. dijon/LC-0001/power_kw")],
    config: ConfigOpt = Path("config.toml"),
    start: Annotated[str, typer.Option(help="now, -15m, -2h, -7d or ISO 8601")] = "-1h",
    end: Annotated[str, typer.Option(help="now, -15m, -2h, -7d or ISO 8601")] = "now",
    every: Annotated[str | None, typer.Option(help="bucket width: 30s, 15m, 1h, 1d")] = None,
    agg: Annotated[
        str | None, typer.Option(help="mean|min|max|first|last|count|sum|twa|integral")
    ] = None,
    max_points: Annotated[int | None, typer.Option(help="downsample per tag")] = None,
    fmt: Annotated[OutputFormat, typer.Option("--format")] = OutputFormat.csv,
) -> None:
    """Print stored values of tags as CSV or JSON."""
    cfg = load(config)
    now = datetime.now(UTC)
    try:
        t0, t1 = parse_time(start, now), parse_time(end, now)
        width: timedelta | None = parse_every(every) if every else None
    except ValueError as exc:
        raise fail([str(exc)]) from None
    if (width is None) != (agg is None):
        raise fail(["--every and --agg go together"])
    try:
        HistorianBackend.check_query(width, agg, max_points)
    except ValueError as exc:
        raise fail([str(exc)]) from None

    def online(gateway: GatewayClient) -> pd.DataFrame:
        params = {"tag": tag, "start": t0.isoformat(), "end": t1.isoformat(), "every": every,
                  "agg": agg, "max_points": max_points}  # fmt: skip
        return _frame(gateway.json(routes.QUERY, params)["rows"])

    def offline() -> pd.DataFrame:
        historian = open_historian(cfg)
        try:
            how: Any = agg  # checked by the historian against its aggregates
            return historian.query(tag, t0, t1, every=width, agg=how, max_points=max_points)
        except ValueError as exc:
            raise fail([str(exc)]) from None
        except Exception as exc:  # a server that is down or refuses: said, no traceback
            backend = cfg.historian.backend
            raise fail([f"the {backend} historian did not answer: {exc}"], 1) from None
        finally:
            historian.close()

    df = gateway_or_files(cfg, online, offline)
    for t in sorted(set(tag) - set(df["tag"])):
        typer.echo(
            f"warning: no values for {t} between {t0.isoformat()} and {t1.isoformat()}", err=True
        )
    df["ts"] = df["ts"].map(lambda ts: ts.isoformat())
    if fmt is OutputFormat.json:
        typer.echo(df.to_json(orient="records"))
    else:
        # String tags carry text from equipment: no live formulas once opened in a spreadsheet.
        for c in df.select_dtypes(include=["object", "string"]).columns:
            df[c] = df[c].map(safe_cell)
        # CRLF lines, so that a text's own CR is quoted too, not a row break before a formula.
        typer.echo(df.to_csv(index=False, lineterminator=CRLF), nl=False)
