"""`beffroi kpi compute|export|changes`: KPIs from the files, or through the running gateway.

While a gateway runs it holds the historian and KPI files; the commands then go through its
token API (`/api/v1/kpi/...`, token in gateway.json beside the historian), and say so.
"""

from __future__ import annotations

import codecs
import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer

from beffroi.app.config import Config

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="config file (TOML)")]
FromOpt = Annotated[str, typer.Option("--from", help="first local day (2026-01-01) or ISO time")]
ToOpt = Annotated[str, typer.Option("--to", help="last local day, included, or ISO time")]


class FileLocked(Exception):
    """A running gateway holds a DuckDB file."""


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
    from beffroi.core.cli import _fail, _load

    cfg = _load(config)
    try:
        t0, t1 = local_range(cfg, start, end)
    except ValueError as exc:
        raise _fail([str(exc)]) from None
    return cfg, t0, t1


def _locked(exc: Exception) -> bool:
    return "lock" in str(exc).lower()


def open_historian(cfg: Config, read_only: bool) -> Any:
    """Open the configured historian; raise FileLocked when a gateway holds the DuckDB file."""
    from beffroi.core.cli import _fail
    from beffroi.core.plugins import load

    backend = load("historian", cfg.historian.backend)
    if cfg.historian.backend != "duckdb":
        from beffroi.core.register import build_register

        return backend.from_config(cfg, build_register(cfg))
    path = cfg.resolve(cfg.historian.path)
    if not path.exists():
        raise _fail([f"{path}: no historian file yet (run `beffroi demo` or `beffroi run`)"], 1)
    try:
        return backend(path, read_only=read_only)
    except Exception as exc:
        if _locked(exc):
            raise FileLocked(str(path)) from None
        raise _fail([f"{path}: cannot open: {exc}"], 1) from None


def alarm_events(cfg: Config) -> Any:
    """Return a reader of the alarm journal's events (None when there is no journal)."""
    from beffroi.alerts.config import journal_path
    from beffroi.core.plugins import load

    path = journal_path(cfg)
    if not path.exists():
        return None
    try:
        journal = load("alerts", "journal")(path, read_only=True)
    except Exception as exc:
        if _locked(exc):
            raise FileLocked(str(path)) from None
        raise
    return lambda a, b: journal.events(start=a, end=b)


class Gateway:
    """The running gateway's token API, found through gateway.json."""

    def __init__(self, cfg: Config):
        from beffroi.core.cli import _fail
        from beffroi.core.runtime import gateway_file_path

        path = gateway_file_path(cfg)
        try:
            info = json.loads(path.read_text())
        except (OSError, ValueError):
            raise _fail(
                [
                    f"{cfg.resolve(cfg.historian.path)} is in use by another process and no "
                    f"running gateway is recorded in {path}; stop that process and try again"
                ],
                1,
            ) from None
        self.url, self.token = info["url"].rstrip("/"), info["token"]
        typer.echo(f"(through the running gateway at {self.url})", err=True)

    def open(self, method: str, path: str, params: list | None = None, body: dict | None = None):
        """Send a request; return the open response (the caller reads or streams it)."""
        from beffroi.core.cli import _fail

        url = f"{self.url}{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method)
        req.add_header("Authorization", f"Bearer {self.token}")
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            return urllib.request.urlopen(req, timeout=600)
        except urllib.error.HTTPError as exc:
            detail = json.loads(exc.read() or b"{}").get("error", exc.reason)
            raise _fail([f"the gateway at {self.url} refused: {detail}"], 1) from None
        except OSError as exc:
            raise _fail([f"the gateway at {self.url} does not answer: {exc}"], 1) from None

    def json(self, method: str, path: str, **kw: Any) -> Any:
        """Send a request and return its JSON answer."""
        with self.open(method, path, **kw) as resp:
            return json.loads(resp.read())


def _text(resp: Any, size: int = 1 << 16) -> Iterator[str]:
    """Yield a response body as text, decoding UTF-8 across chunk edges."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    while True:
        data = resp.read(size)
        if not data:
            break
        yield decoder.decode(data)
    yield decoder.decode(b"", final=True)


def _progress() -> Any:
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        transient=True,
    )


def register(app: typer.Typer) -> None:
    """Add the `kpi` command group to the CLI."""
    kpi_app = typer.Typer(
        help="Energy and service KPIs: compute, export, changes.", no_args_is_help=True
    )
    app.add_typer(kpi_app, name="kpi")

    @kpi_app.command("compute")
    def compute(
        start: FromOpt,
        end: ToOpt,
        config: ConfigOpt = Path("config.toml"),
    ) -> None:
        """Compute the KPIs of a range again from raw data, recording what changed."""
        cfg, t0, t1 = _config_and_range(config, start, end)
        try:
            report = _compute_here(cfg, t0, t1)
        except FileLocked:
            body = {"from": t0.isoformat(), "to": t1.isoformat()}
            report = Gateway(cfg).json("POST", "/api/v1/kpi/compute", body=body)
        typer.echo(
            f"computed {report.get('hours', 0)} hours ({report.get('from')} → {report.get('to')}): "
            f"{report.get('values', 0)} values written, {report.get('changes', 0)} changes "
            f"of closed periods recorded, in {report.get('seconds', 0)} s"
        )

    @kpi_app.command("export")
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
        from beffroi.core.cli import _fail, _load
        from beffroi.core.plugins import load

        cfg = _load(config)
        if resolution not in ("hour", "day", "month"):
            raise _fail([f"--resolution: expected hour, day or month, got {resolution!r}"])
        exporter = load("kpi", "exporter")(cfg)
        try:
            t0, t1 = local_range(cfg, start, end)
            query = exporter.query(t0, t1, resolution, tuple(kpi or ()), tuple(commune or ()))
        except ValueError as exc:
            raise _fail([str(exc)]) from None
        try:
            historian = open_historian(cfg, read_only=True)
        except FileLocked:
            result = _export_through_gateway(cfg, exporter, query, out)
        else:
            try:
                with _progress() as bar:
                    task = bar.add_task("exporting", total=None)
                    result = exporter.to_file(
                        historian, query, out, lambda d, t: bar.update(task, completed=d, total=t)
                    )
            finally:
                historian.close()
        typer.echo(f"{result.rows} rows written to {out}")
        typer.echo(f"sha256 {result.sha256}  manifest {out.name}.manifest.json")

    @kpi_app.command("changes")
    def changes(
        start: FromOpt = "2000-01-01",
        end: ToOpt = "2100-01-01",
        config: ConfigOpt = Path("config.toml"),
    ) -> None:
        """List the recorded changes of KPI values of closed periods (late data, recomputes)."""
        from beffroi.core.cli import _fail
        from beffroi.core.plugins import load
        from beffroi.kpi.config import kpi_journal_path

        cfg, t0, t1 = _config_and_range(config, start, end)
        path = kpi_journal_path(cfg)
        if not path.exists():
            raise _fail([f"{path}: no KPI store yet"], 1)
        try:
            store = load("kpi", "store")(path, read_only=True)
        except Exception as exc:
            if not _locked(exc):
                raise
            params = [("from", t0.isoformat()), ("to", t1.isoformat())]
            rows = Gateway(cfg).json("GET", "/api/v1/kpi/changes", params=params)["changes"]
        else:
            df = store.changes(t0, t1)
            store.close()
            rows = df.astype(object).where(df.notna(), None).to_dict(orient="records")
        tz = ZoneInfo(cfg.metropolis.timezone)
        typer.echo("detected_at,kpi,resolution,scope,period_start,old_value,new_value,reason")
        for r in rows:
            when = [_local(r[k], tz) for k in ("detected_at", "period_start")]
            typer.echo(
                f"{when[0]},{r['kpi']},{r['resolution']},{r['scope']},{when[1]},"
                f"{_num(r['old_value'])},{_num(r['new_value'])},{r['reason']}"
            )


def _local(ts: Any, tz: ZoneInfo) -> str:
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts)
    if hasattr(ts, "to_pydatetime"):
        ts = ts.to_pydatetime()
    return (ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts).astimezone(tz).isoformat()


def _num(v: Any) -> str:
    return "" if v is None else repr(float(v))


def _compute_here(cfg: Config, t0: datetime, t1: datetime) -> dict:
    """Recompute in this process; raise FileLocked when a gateway holds a file."""
    from beffroi.core.plugins import load
    from beffroi.core.register import build_register
    from beffroi.kpi.config import kpi_journal_path

    if not cfg.kpi.active:
        from beffroi.core.cli import _fail

        raise _fail([f"{cfg.source}: kpi: nothing to compute (no [kpi] sections, or disabled)"])
    historian = open_historian(cfg, read_only=False)
    try:
        try:
            store = load("kpi", "store")(kpi_journal_path(cfg))
        except Exception as exc:
            if _locked(exc):
                raise FileLocked(str(kpi_journal_path(cfg))) from None
            raise
        events = alarm_events(cfg)
        engine = load("kpi", "engine")(
            cfg, build_register(cfg), historian, events=events, store=store
        )
        try:
            with _progress() as bar:
                task = bar.add_task("computing hours", total=None)
                return engine.recompute(t0, t1, lambda d, t: bar.update(task, completed=d, total=t))
        finally:
            engine.close()
    finally:
        historian.close()


def _export_through_gateway(cfg: Config, exporter: Any, query: Any, out: Path) -> Any:
    """Stream the export from the running gateway into the file, then write the manifest."""
    params = [
        ("from", query.start.isoformat()),
        ("to", query.end.isoformat()),
        ("resolution", query.resolution),
    ]
    params += [("kpi", k) for k in query.kpis] + [("commune", c) for c in query.communes]
    gateway = Gateway(cfg)
    with gateway.open("GET", "/api/v1/kpi/export", params=params) as resp, _progress() as bar:
        task = bar.add_task("rows received", total=None)
        return exporter.from_stream(
            _text(resp), query, out, lambda n: bar.update(task, completed=n)
        )
