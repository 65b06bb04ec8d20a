"""`beffroi kpi compute|export|changes`: KPIs through the running gateway, or from the files.

While a gateway runs it holds the historian and KPI files; the commands then go through its
API, as every command does (`api/client.py`), and say so.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from beffroi.alerts.config import journal_place
from beffroi.alerts.journal import Journal
from beffroi.api import routes
from beffroi.api.client import GatewayClient
from beffroi.app.config import Config
from beffroi.cli.common import ConfigOpt, fail, gateway_or_files, load, open_file
from beffroi.cli.query import open_historian
from beffroi.core.register import build_register
from beffroi.kpi.config import kpi_store_place
from beffroi.kpi.engine import Events, KpiEngine
from beffroi.kpi.export import Exporter, ExportQuery, ExportResult
from beffroi.kpi.periods import resolution_of
from beffroi.kpi.store import KpiStore
from beffroi.state.config import exists

commands = typer.Typer(
    help="Energy and service KPIs: compute, export, changes.", no_args_is_help=True
)

FromOpt = Annotated[str, typer.Option("--from", help="first local day (2026-01-01) or ISO time")]
ToOpt = Annotated[str, typer.Option("--to", help="last local day, included, or ISO time")]


def local_range(cfg: Config, start: str, end: str) -> tuple[datetime, datetime]:
    """Parse --from/--to: dates are whole local days (--to included), times ISO 8601."""
    tz = ZoneInfo(cfg.metropolis.timezone)

    def parse(text: str, is_end: bool) -> datetime:
        text = text.strip()
        try:
            if len(text) == 10:
                d = date.fromisoformat(text) + timedelta(days=1 if is_end else 0)
                return datetime(d.year, d.month, d.day, tzinfo=tz).astimezone(UTC)
            ts = datetime.fromisoformat(text)
        except ValueError:
            raise ValueError(
                f"{text!r}: expected a date (2026-01-31) or an ISO 8601 time"
            ) from None
        return (ts.replace(tzinfo=tz) if ts.tzinfo is None else ts).astimezone(UTC)

    t0, t1 = parse(start, False), parse(end, True)
    if t0 >= t1:
        raise ValueError(f"--from ({start}) must be before --to ({end})")
    return t0, t1


def _config_and_range(config: Path, start: str, end: str) -> tuple[Config, datetime, datetime]:
    """Load the config and parse --from/--to, failing with the reason when they do not parse."""
    cfg = load(config)
    try:
        t0, t1 = local_range(cfg, start, end)
    except ValueError as exc:
        raise fail([str(exc)]) from None
    return cfg, t0, t1


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        transient=True,
    )


def _alarm_events(cfg: Config) -> tuple[Events | None, Journal | None]:
    """Return a reader of the alarm journal's events (None without a journal), and the file."""
    path = journal_place(cfg)
    if not exists(path):
        return None, None
    journal = open_file(path, lambda: Journal(path, read_only=True))
    return (lambda a, b: journal.events(start=a, end=b)), journal


def _compute_here(cfg: Config, t0: datetime, t1: datetime) -> dict[str, Any]:
    """Recompute in this process, on the files."""
    if not cfg.kpi.active:
        raise fail([f"{cfg.source}: kpi: nothing to compute (no [kpi] sections, or disabled)"])
    historian = open_historian(cfg, read_only=False)
    journal: Journal | None = None
    try:
        place = kpi_store_place(cfg)
        store = open_file(place, lambda: KpiStore(place))
        events, journal = _alarm_events(cfg)
        engine = KpiEngine(cfg, build_register(cfg), historian, events=events, store=store)
        try:
            with _progress() as bar:
                task = bar.add_task("computing hours", total=None)
                return engine.recompute(t0, t1, lambda d, t: bar.update(task, completed=d, total=t))
        finally:
            engine.close()
    finally:
        if journal is not None:
            journal.close()
        historian.close()


@commands.command("compute")
def compute(start: FromOpt, end: ToOpt, config: ConfigOpt = Path("config.toml")) -> None:
    """Compute the KPIs of a range again from raw data, recording what changed."""
    cfg, t0, t1 = _config_and_range(config, start, end)
    body = {"from": t0.isoformat(), "to": t1.isoformat()}

    def online(gateway: GatewayClient) -> dict[str, Any]:
        report: dict[str, Any] = gateway.json(routes.KPI_COMPUTE, body=body)
        return report

    report = gateway_or_files(cfg, online, lambda: _compute_here(cfg, t0, t1))
    typer.echo(
        f"computed {report.get('hours', 0)} hours ({report.get('from')} → {report.get('to')}): "
        f"{report.get('values', 0)} values written, {report.get('changes', 0)} changes "
        f"of closed periods recorded, in {report.get('seconds', 0)} s"
    )


def _export_through(
    gateway: GatewayClient, exporter: Exporter, query: ExportQuery, out: Path
) -> ExportResult:
    """Stream the export from the running gateway into the file, then write the manifest."""
    params = [
        ("from", query.start.isoformat()),
        ("to", query.end.isoformat()),
        ("resolution", query.resolution),
    ]
    params += [("kpi", k) for k in query.kpis] + [("commune", c) for c in query.communes]
    with gateway.csv_stream(routes.KPI_EXPORT, params) as chunks, _progress() as bar:
        task = bar.add_task("rows received", total=None)
        progress: Callable[[int], None] = lambda n: bar.update(task, completed=n)  # noqa: E731
        return exporter.from_stream(chunks, query, out, progress)


@commands.command("export")
def export(
    start: FromOpt,
    end: ToOpt,
    out: Annotated[Path, typer.Option("--out", "-o", help="CSV file to write")],
    config: ConfigOpt = Path("config.toml"),
    commune: Annotated[list[str] | None, typer.Option(help="only these communes")] = None,
    kpi: Annotated[list[str] | None, typer.Option(help="only these KPIs")] = None,
    resolution: Annotated[str, typer.Option(help="hour, day or month")] = "day",
) -> None:
    """Write stored KPI values as CSV, with a manifest (definitions, SHA-256) beside it."""
    cfg = load(config)
    try:
        period = resolution_of(resolution)
    except ValueError:
        raise fail([f"--resolution: expected hour, day or month, got {resolution!r}"]) from None
    exporter = Exporter(cfg)
    try:
        t0, t1 = local_range(cfg, start, end)
        query = exporter.query(t0, t1, period, tuple(kpi or ()), tuple(commune or ()))
    except ValueError as exc:
        raise fail([str(exc)]) from None

    def offline() -> ExportResult:
        historian = open_historian(cfg)
        try:
            with _progress() as bar:
                task = bar.add_task("exporting", total=None)
                return exporter.to_file(
                    historian, query, out, lambda d, t: bar.update(task, completed=d, total=t)
                )
        finally:
            historian.close()

    result = gateway_or_files(cfg, lambda g: _export_through(g, exporter, query, out), offline)
    typer.echo(f"{result.rows} rows written to {out}")
    typer.echo(f"sha256 {result.sha256}  manifest {out.name}.manifest.json")


@commands.command("changes")
def changes(
    start: FromOpt = "2000-01-01",
    end: ToOpt = "2100-01-01",
    config: ConfigOpt = Path("config.toml"),
) -> None:
    """List the recorded changes of KPI values of closed periods (late data, recomputes)."""
    cfg, t0, t1 = _config_and_range(config, start, end)
    path = kpi_store_place(cfg)

    def offline() -> list[dict[str, Any]]:
        store = open_file(path, lambda: KpiStore(path, read_only=True), missing="no KPI store yet")
        try:
            df = store.changes(t0, t1)
        finally:
            store.close()
        records = df.astype(object).where(df.notna(), None).to_dict(orient="records")
        return [{str(k): v for k, v in r.items()} for r in records]

    def online(gateway: GatewayClient) -> list[dict[str, Any]]:
        params = [("from", t0.isoformat()), ("to", t1.isoformat())]
        rows: list[dict[str, Any]] = gateway.json(routes.KPI_CHANGES, params)["changes"]
        return rows

    rows = gateway_or_files(cfg, online, offline)
    tz = ZoneInfo(cfg.metropolis.timezone)
    typer.echo("detected_at,kpi,resolution,scope,period_start,old_value,new_value,reason")
    for r in rows:
        when = [_local(r[k], tz) for k in ("detected_at", "period_start")]
        typer.echo(
            f"{when[0]},{r['kpi']},{r['resolution']},{r['scope']},{when[1]},"
            f"{_num(r['old_value'])},{_num(r['new_value'])},{r['reason']}"
        )


def _local(ts: Any, tz: ZoneInfo) -> str:
    """Return a time (ISO text, pandas or datetime; naive is UTC) in local time, ISO 8601."""
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    if hasattr(ts, "to_pydatetime"):
        ts = ts.to_pydatetime()
    when: datetime = ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts
    return when.astimezone(tz).isoformat()


def _num(v: Any) -> str:
    return "" if v is None else repr(float(v))
