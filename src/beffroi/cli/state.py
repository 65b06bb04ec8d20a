"""`beffroi state`: move an embedded site's state files into PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import typer

from beffroi.alerts import journal
from beffroi.alerts.config import journal_path
from beffroi.app.config import Config
from beffroi.cli.common import ConfigOpt, fail, load
from beffroi.control import audit
from beffroi.control.audit import AuditLog
from beffroi.control.audit_anchor import AnchorBook
from beffroi.control.config import audit_path
from beffroi.core.errors import BeffroiError
from beffroi.hmi import users
from beffroi.interventions import store as intervention_store
from beffroi.interventions.config import interventions_path
from beffroi.inventory import store as inventory_store
from beffroi.inventory.config import store_path
from beffroi.kpi import store as kpi_store
from beffroi.kpi.config import kpi_store_path
from beffroi.state.config import PgPlace
from beffroi.state.migrate import StoreFile, migrate

commands = typer.Typer(help="The gateway's state stores: DuckDB files or PostgreSQL.")


def store_files(cfg: Config) -> list[StoreFile]:
    """Return every state file of a site as the config places it, with its schema's name."""
    return [
        StoreFile("alarm journal", journal_path(cfg), "journal", journal.MIGRATIONS),
        StoreFile("audit log", audit_path(cfg), "audit", audit.MIGRATIONS),
        StoreFile("users", cfg.resolve(cfg.hmi.users_db), "users", users.MIGRATIONS),
        StoreFile(
            "KPI store",
            kpi_store_path(cfg),
            "kpi",
            kpi_store.MIGRATIONS,
            sequences=(("change_ids", "kpi_changes", "id"),),
        ),
        StoreFile("inventory", store_path(cfg), "inventory", inventory_store.MIGRATIONS),
        StoreFile(
            "interventions", interventions_path(cfg), "interventions", intervention_store.MIGRATIONS
        ),
    ]


@commands.command("migrate")
def migrate_command(config: ConfigOpt = Path("config.toml")) -> None:
    """Copy the DuckDB state files into PostgreSQL (URL from [state] url_env), checked after.

    Stop the gateway first. The target schemas must be empty; nothing is merged. Every table's
    row count is compared, and the audit chain verified where it landed, at the same head.
    """
    cfg = load(config)
    url = cfg.state.url()
    anchors = AnchorBook.from_config(cfg)

    def verify(place: PgPlace, path: Path) -> list[str]:
        if place.schema != "audit":
            return []
        before = AuditLog(path, read_only=True)
        after = AuditLog(place, read_only=True, anchors=anchors)
        try:
            result = after.verify(anchor=False)
            if not result.ok or after.head != before.head:
                raise BeffroiError(
                    f"audit log: the copy does not verify ({result.problem or 'head differs'})"
                )
            return [f"audit chain verified: {result.count} records, head {result.head[:16]}…"]
        finally:
            before.close()
            after.close()

    try:
        moved = migrate(store_files(cfg), url, verify=verify)
    except BeffroiError as exc:
        raise fail([str(exc)], 1) from None
    except Exception as exc:  # a file in use, PostgreSQL refusing: said, never a traceback
        raise fail(
            [
                f"migration stopped, nothing of the store at fault kept: {exc}",
                "stores copied before it stay in PostgreSQL: drop their schemas "
                "(DROP SCHEMA <name> CASCADE) to run the migration again",
            ],
            1,
        ) from None
    for m in moved:
        if m.skipped:
            typer.echo(f"{m.what}: skipped ({m.skipped})")
            continue
        tables = ", ".join(f"{t} {n}" for t, n in m.tables.items())
        typer.echo(f"{m.what} → schema {m.schema}: {tables}; {'; '.join(m.checked)}")
    if cfg.state.backend != "postgres":
        typer.echo(f'{config}: now set [state] backend = "postgres" to run on PostgreSQL')
