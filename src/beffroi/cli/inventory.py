"""`beffroi inventory import|export|diff|to-place`: the city's inventory files and the register.

`import`, `export` and `to-place` follow the one rule (cli/common.py): through the running
gateway when one answers (it holds the inventory store, and an import changes its register
live), else on the files: the inventory store laid over the register built from the config,
as the gateway does at start; an import there is audited as the gateway's is. `diff`
compares two files and touches nothing.
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from beffroi.api import routes
from beffroi.api.client import GatewayClient
from beffroi.api.inventory import import_text, records_in, to_place
from beffroi.app.config import Config
from beffroi.cli.audit import offline_audit
from beffroi.cli.common import ConfigOpt, fail, gateway_or_files, load, open_file
from beffroi.core.errors import ConfigError
from beffroi.core.register import build_register
from beffroi.inventory.config import store_place
from beffroi.inventory.diff import changed_fields, diff
from beffroi.inventory.formats import (
    Format,
    decode,
    dump_geojson,
    format_of,
    parse_file,
    read_inventory,
    write_inventory,
)
from beffroi.inventory.records import AssetRecord, RowError
from beffroi.inventory.service import Inventory
from beffroi.inventory.store import InventoryStore
from beffroi.state.config import exists

commands = typer.Typer(
    help="The asset inventory: import a city's CSV or GeoJSON file, export, compare files.",
    no_args_is_help=True,
)

# Room left in a request for what surrounds a part of the file (the JSON keys, the upload id).
PART_MARGIN_BYTES = 512
JsonOpt = Annotated[bool, typer.Option("--json", help="print JSON")]


class State(StrEnum):
    """States of an asset, as `export --state` takes them."""

    active = "active"
    to_place = "to_place"
    removed = "removed"
    retired = "retired"


class Separator(StrEnum):
    """CSV separators of `export --sep`."""

    comma = ","
    semicolon = ";"


def _default_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "operator"


@contextmanager
def _inventory(cfg: Config, *, write: bool) -> Iterator[Inventory]:
    """Open the inventory on the files: the store over the register built from the config."""
    try:
        register = build_register(cfg)
    except ConfigError as exc:
        raise fail(exc.lines) from None
    path = store_place(cfg)
    store = None
    if write or exists(path):  # without a store yet, the inventory is the generated register
        store = open_file(path, lambda: InventoryStore(path, read_only=not write))
    try:
        inventory = Inventory(cfg, register, store)
        inventory.load()
        yield inventory
    finally:
        if store is not None:
            store.close()


def json_parts(text: str, budget: int) -> Iterator[str]:
    """Cut a text into parts whose JSON string is at most `budget` bytes (escapes counted)."""
    start, size = 0, budget
    while start < len(text):
        size = max(size, 1)
        part = text[start : start + size]
        encoded = len(json.dumps(part))
        while encoded > budget and len(part) > 1:  # non-ASCII text takes up to 12 bytes a char
            part = part[: max(1, len(part) * budget // encoded - 1)]
            encoded = len(json.dumps(part))
        yield part
        start += len(part)


def _send(
    gateway: GatewayClient, cfg: Config, text: str, params: Mapping[str, Any], user: str
) -> dict[str, Any]:
    """Import through the gateway: the text in the body, or in parts under its body limit."""
    budget = max(cfg.hmi.http.max_body_bytes - PART_MARGIN_BYTES, 256)
    if len(json.dumps(text)) <= budget:
        answer: dict[str, Any] = gateway.json(
            routes.INVENTORY_IMPORT, params, {"user": user, "content": text}
        )
        return answer
    upload = ""
    for i, part in enumerate(json_parts(text, budget)):
        got = gateway.json(routes.INVENTORY_UPLOAD, body={"upload": upload, "part": i,
                                                          "content": part})  # fmt: skip
        upload = got["upload"]
    answer = gateway.json(routes.INVENTORY_IMPORT, params, {"user": user, "upload": upload})
    return answer


def change_line(change: Mapping[str, Any]) -> str:
    """Format one change of an import or a diff on one line."""
    kind, asset, commune = change["change"], change["asset"], change["commune"]
    detail = change.get("detail") or {}
    if kind == "add":
        rest = f"{detail.get('class', '')} in {commune}"
    elif kind == "reclassify":
        (c0, m0), (c1, m1) = detail["before"], detail["after"]
        rest = f"{c0} in {m0} → {c1} in {m1}"
    elif kind in ("move", "update"):
        rest = f"{commune}: {', '.join(detail.get('fields', []))}"
    else:
        rest = commune + (f" ({detail['reason']})" if detail.get("reason") else "")
    return f"{kind:<10} {asset:<14} {rest}"


def _summary(counts: Mapping[str, int], changes: list[dict[str, Any]]) -> str:
    moved = sum(1 for c in changes if c["change"] == "move")
    return (
        f"{counts['added']} added, {moved} moved, {counts['updated'] - moved} updated, "
        f"{counts['reclassified']} reclassified, {counts['retired']} retired, "
        f"{counts['unchanged']} unchanged"
    )


def _row_errors(errors: list[dict[str, Any]]) -> None:
    for e in errors:
        typer.echo(str(RowError(e["file"], e["line"], e["field"], e["message"])), err=True)


@commands.command("import")
def import_file(
    file: Annotated[Path, typer.Argument(help="CSV or GeoJSON file", exists=True, dir_okay=False)],
    config: ConfigOpt = Path("config.toml"),
    origin: Annotated[
        str, typer.Option(help="the inventory this file is (default: the file's name)")
    ] = "",
    partial: Annotated[
        bool, typer.Option("--partial", help="the file lists some assets only: retire none")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="say what would change; change nothing")
    ] = False,
    fmt: Annotated[Format | None, typer.Option("--format", help="default: by suffix")] = None,
    user: Annotated[str, typer.Option(help="who does it (audited)")] = "",
    as_json: JsonOpt = False,
) -> None:
    """Import an inventory file: print what it adds, moves, reclassifies and retires, and each
    bad row (exit 1 when rows were refused). An asset of the same origin that the file no
    longer lists is retired, unless --partial."""
    cfg = load(config)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise fail([f"{file}: cannot read: {exc.strerror}"]) from None
    name = str(file)
    text, unreadable = decode(data, name)
    if unreadable:
        raise fail([str(e) for e in unreadable], 1)
    kind = fmt or format_of(file.name, text)
    origin = origin or file.name  # as the gateway names the files of `[inventory] files`
    who = user or _default_user()

    def offline() -> dict[str, Any]:
        with _inventory(cfg, write=not dry_run) as inventory:
            if dry_run:
                return import_text(inventory, text, name=name, fmt=kind, origin=origin,
                                   user=who, partial=partial, dry_run=True)  # fmt: skip
            # Opened before anything changes: an import the audit log cannot take is not made.
            with offline_audit(cfg) as audit:
                if audit is not None:
                    inventory.attach_audit(audit)
                return import_text(inventory, text, name=name, fmt=kind, origin=origin,
                                   user=who, partial=partial)  # fmt: skip

    params = {"name": name, "origin": origin, "format": kind.value,
              "partial": int(partial), "dry_run": int(dry_run)}  # fmt: skip
    answer = gateway_or_files(cfg, lambda g: _send(g, cfg, text, params, who), offline)
    if as_json:
        typer.echo(json.dumps(answer, ensure_ascii=False))
    else:
        for change in answer["changes"]:
            typer.echo(change_line(change))
        _row_errors(answer["errors"])
        if answer["kept"]:
            kept = ", ".join(answer["kept"])
            typer.echo(f"kept as they were, their rows being refused: {kept}", err=True)
        if not answer["imported"] and not dry_run:
            typer.echo(f"{file}: nothing imported: the file cannot be read", err=True)
        refused = f"; {len(answer['errors'])} rows refused" if answer["errors"] else ""
        rehearsal = " (dry run: nothing changed)" if dry_run else ""
        summary = _summary(answer["counts"], answer["changes"])
        typer.echo(f"{origin}: {summary}{refused}{rehearsal}")
    if answer["errors"]:
        raise typer.Exit(1)


@commands.command()
def export(
    config: ConfigOpt = Path("config.toml"),
    fmt: Annotated[Format, typer.Option("--format")] = Format.csv,
    out: Annotated[Path | None, typer.Option(help="write to this file (default: stdout)")] = None,
    state: Annotated[
        list[State] | None, typer.Option(help="assets in these states (default: active)")
    ] = None,
    sep: Annotated[
        Separator, typer.Option(help="CSV separator; ';' adds a BOM, as French spreadsheets")
    ] = Separator.comma,
) -> None:
    """Export the inventory as a file that `inventory import` reads back."""
    cfg = load(config)
    states = [s.value for s in state or [State.active]]

    def offline() -> str:
        with _inventory(cfg, write=False) as inventory:
            return write_inventory(records_in(inventory.register, states), fmt, sep=sep.value)

    def online(gateway: GatewayClient) -> str:
        params = {"format": fmt.value, "sep": sep.value, "state": states}
        if fmt is Format.geojson:  # served as JSON; laid out again one feature per line
            return dump_geojson(gateway.json(routes.INVENTORY_EXPORT, params))
        return gateway.text(routes.INVENTORY_EXPORT, params)

    text = gateway_or_files(cfg, online, offline)
    if out is None:
        sys.stdout.write(text)
        return
    out.write_text(text, encoding="utf-8", newline="")
    rows = parse_file(text, str(out), fmt).rows  # read back: what import will find in it
    typer.echo(f"{len(rows)} assets written to {out}", err=True)


def _records(path: Path) -> tuple[dict[str, AssetRecord], list[RowError]]:
    try:
        records, errors = read_inventory(path)
    except OSError as exc:
        raise fail([f"{path}: cannot read: {exc.strerror}"]) from None
    return {r.id: r for r in records}, errors  # a later row of the same id wins, as in import


@commands.command("diff")
def diff_files(
    old: Annotated[Path, typer.Argument(help="the inventory before (CSV or GeoJSON)")],
    new: Annotated[Path, typer.Argument(help="the inventory after")],
    partial: Annotated[
        bool, typer.Option("--partial", help="NEW lists some assets only: none retired")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Print what turns one inventory file into another (exit 1 when rows are unreadable)."""
    before, errors_a = _records(old)
    after, errors_b = _records(new)
    d = diff(before, after, partial=partial)
    changes: list[dict[str, Any]] = [
        {"change": "add", "asset": r.id, "commune": r.commune, "detail": {"class": r.asset_class}}
        for r in d.added
    ]
    for b, a in d.reclassified:
        detail = {"before": [b.asset_class, b.commune], "after": [a.asset_class, a.commune]}
        changes.append({"change": "reclassify", "asset": a.id, "commune": a.commune,
                        "detail": detail})  # fmt: skip
    for b, a in d.updated:
        fields = changed_fields(b, a)
        kind = "move" if {"lat", "lon"} & set(fields) else "update"
        changes.append({"change": kind, "asset": a.id, "commune": a.commune,
                        "detail": {"fields": fields}})  # fmt: skip
    changes += [
        {"change": "retire", "asset": r.id, "commune": r.commune, "detail": {}} for r in d.retired
    ]
    errors = [
        {"file": e.file, "line": e.line, "field": e.field, "message": e.message}
        for e in (*errors_a, *errors_b)
    ]
    if as_json:
        typer.echo(json.dumps({"counts": d.counts(), "changes": changes, "errors": errors}))
    else:
        for change in changes:
            typer.echo(change_line(change))
        _row_errors(errors)
        refused = f"; {len(errors)} rows unreadable" if errors else ""
        typer.echo(f"{old} → {new}: {_summary(d.counts(), changes)}{refused}")
    if errors:
        raise typer.Exit(1)


@commands.command("to-place")
def to_place_list(config: ConfigOpt = Path("config.toml"), as_json: JsonOpt = False) -> None:
    """List the assets found by discovery that wait for an operator to place them."""
    cfg = load(config)

    def offline() -> list[dict[str, Any]]:
        with _inventory(cfg, write=False) as inventory:
            return to_place(inventory.register)

    def online(gateway: GatewayClient) -> list[dict[str, Any]]:
        assets: list[dict[str, Any]] = gateway.json(routes.INVENTORY_TO_PLACE)["assets"]
        return assets

    assets = gateway_or_files(cfg, online, offline)
    if as_json:
        typer.echo(json.dumps(assets, ensure_ascii=False))
        return
    if not assets:
        typer.echo("no asset waits to be placed")
    for a in assets:
        typer.echo(f"{a['id']:<14} {a['class']:<20} {a['commune']:<24} found by {a['origin']}")
