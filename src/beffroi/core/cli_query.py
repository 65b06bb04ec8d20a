"""`beffroi query`: stored values from the historian file, or through the running gateway."""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from beffroi.app.config import Config
from beffroi.core.timeparse import parse_every, parse_time


class OutputFormat(StrEnum):
    """Formats of `beffroi query`."""

    csv = "csv"
    json = "json"


def _from_gateway(cfg: Config, params: dict) -> pd.DataFrame:
    """Ask the running gateway's read API, using the token it recorded next to its data."""
    from beffroi.core.cli import _fail
    from beffroi.core.runtime import gateway_file_path

    info_path = gateway_file_path(cfg)
    try:
        info = json.loads(info_path.read_text())
    except (OSError, ValueError):
        raise _fail(
            [
                f"{cfg.resolve(cfg.historian.path)} is in use by another process and no running "
                f"gateway is recorded in {info_path}; stop that process and try again"
            ],
            1,
        ) from None
    query = urllib.parse.urlencode(
        [("tag", t) for t in params["tags"]]
        + [(k, str(v)) for k, v in params.items() if k != "tags" and v is not None]
    )
    req = urllib.request.Request(
        f"{info['url']}/api/v1/query?{query}",
        headers={"Authorization": f"Bearer {info['token']}"},
    )
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
        raise _fail([f"the gateway at {info['url']} refused the query: {detail}"], 1) from None
    except OSError as exc:
        raise _fail([f"the gateway at {info['url']} does not answer: {exc}"], 1) from None
    typer.echo(f"(read through the running gateway at {info['url']})", err=True)
    # Raw rows carry the equipment's status code, aggregates do not: as from the file.
    columns = ["ts", "tag", "value", "quality"]
    if body["rows"] and "status" in body["rows"][0]:
        columns.append("status")
    df = pd.DataFrame(body["rows"], columns=columns)
    df["ts"] = pd.to_datetime(df["ts"], utc=True)
    return df


def _from_file(cfg: Config, tags, t0, t1, width, agg, max_points) -> pd.DataFrame | None:
    """Query the historian directly; None when a running gateway holds the file."""
    from beffroi.core.cli import _fail
    from beffroi.core.plugins import load

    backend = load("historian", cfg.historian.backend)
    if cfg.historian.backend == "duckdb":
        path = cfg.resolve(cfg.historian.path)
        if not path.exists():
            hint = "run `beffroi demo` or `beffroi run` first"
            raise _fail([f"{path}: no historian file yet ({hint})"], 1)
        try:
            hist = backend(path, read_only=True)
        except Exception as exc:
            if "lock" in str(exc).lower():
                return None
            raise _fail([f"{path}: cannot open: {exc}"], 1) from None
    else:
        from beffroi.core.register import build_register

        try:
            hist = backend.from_config(cfg, build_register(cfg))
        except Exception as exc:
            raise _fail([f"cannot reach the {cfg.historian.backend} historian: {exc}"], 1) from None
    try:
        return hist.query(tags, t0, t1, every=width, agg=agg, max_points=max_points)
    except ValueError as exc:
        raise _fail([str(exc)]) from None
    except Exception as exc:
        # A server that is down or refuses: say so, no traceback.
        raise _fail([f"the {cfg.historian.backend} historian did not answer: {exc}"], 1) from None
    finally:
        hist.close()


def register(app: typer.Typer) -> None:
    """Add the `query` command to the CLI."""

    @app.command()
    def query(
        tag: Annotated[list[str], typer.Argument(help="tags, e.g. dijon/LC-0001/power_kw")],
        config: Annotated[Path, typer.Option("--config", "-c")] = Path("config.toml"),
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
        from beffroi.core.cli import _fail, _load

        cfg = _load(config)
        now = datetime.now(UTC)
        try:
            t0, t1 = parse_time(start, now), parse_time(end, now)
            width = parse_every(every) if every else None
        except ValueError as exc:
            raise _fail([str(exc)]) from None
        if (width is None) != (agg is None):
            raise _fail(["--every and --agg go together"])
        df = _from_file(cfg, tag, t0, t1, width, agg, max_points)
        if df is None:
            params = {
                "tags": tag,
                "start": t0.isoformat(),
                "end": t1.isoformat(),
                "every": every,
                "agg": agg,
                "max_points": max_points,
            }
            df = _from_gateway(cfg, params)
        for t in sorted(set(tag) - set(df["tag"])):
            typer.echo(
                f"warning: no values for {t} between {t0.isoformat()} and {t1.isoformat()}",
                err=True,
            )
        df["ts"] = df["ts"].map(lambda ts: ts.isoformat())
        if fmt is OutputFormat.json:
            typer.echo(df.to_json(orient="records"))
        else:
            typer.echo(df.to_csv(index=False), nl=False)
