"""The inventory routes: import a city's file, export the inventory, list the assets to place.

An import sends the file's text: whole, in the body of `inventory/import`, when it fits the
HTTP front's body limit (`[hmi.http] max_body_bytes`, 1 MiB); otherwise in parts under that
limit to `inventory/upload`, then `inventory/import` names the upload. The front refuses a
larger body before any route (or the token check) sees it, and one authenticated route is no
reason to let anyone send 50 MB: a 40,000-asset CSV (about 6 MB) goes in six or so parts, kept
in memory (at most UPLOADS_MAX at once, UPLOAD_MAX_CHARS each, dropped after UPLOAD_IDLE_S).

`import_text` is the work itself, shared with the command line on the files, so that both
answer alike: the file read row by row, each record checked against the site, a rehearsal on
a copy of the register listing every change (add, move, update, reclassify, retire), then the
import (unless a dry run) through `Inventory.import_records`, which stores and audits it.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Any

from flask import Flask, Response, request

from beffroi.api import routes
from beffroi.api.http import add_route, json_response
from beffroi.core.limits import USER_NAME_MAX, check_text
from beffroi.core.model import AssetState
from beffroi.core.register import Register
from beffroi.inventory.formats import SEPARATORS, Format, parse_file, write_inventory
from beffroi.inventory.records import AssetRecord, RowError
from beffroi.inventory.service import Inventory

log = logging.getLogger(__name__)

UPLOAD_MAX_CHARS = 64 * 1024 * 1024  # a file's text; 40,000 assets are about 6 MB of CSV
UPLOADS_MAX = 4  # uploads in progress at once
UPLOAD_IDLE_S = 600.0  # an upload with no part for this long is dropped
ORIGIN_MAX = 200
FILE_NAME_MAX = 1024
STATES: tuple[AssetState, ...] = ("active", "to_place", "removed", "retired")


# -- the work, on a gateway's inventory or on the files -------------------------------------------


@dataclass(slots=True)
class _Rehearsal:
    """An audit recorder that keeps what it is given: the changes an import would make."""

    entries: list[tuple[str, str, str, str, str, Mapping[str, Any]]] = field(default_factory=list)

    def record_many(
        self, entries: Sequence[tuple[str, str, str, str, str, Mapping[str, Any]]]
    ) -> None:
        """Keep the records."""
        self.entries.extend(entries)


def _split(problem: str) -> tuple[str, str]:
    """Split a record's problem, `field: why`, into its field and why."""
    what, sep, why = problem.partition(": ")
    return (what, why) if sep and " " not in what.replace("attribute ", "") else ("", problem)


def _where(fmt: Format, index: int, what: str) -> str:
    """Name a record's field as its file does (a column; a GeoJSON feature's member)."""
    if fmt is not Format.geojson:
        return what
    if what in ("lat/lon", "lat", "lon"):
        return f"features[{index}].geometry"
    return f"features[{index}].properties.{what.removeprefix('attribute ')}"


def rehearse(
    inventory: Inventory, records: Sequence[AssetRecord], origin: str, user: str, partial: bool
) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Import records into a copy of the register: the changes it makes, and its counts."""
    reg = inventory.register
    copy = Register(reg.communes, dict(reg.assets), dict(reg.tags), dict(reg.retired))
    recorder = _Rehearsal()
    report = Inventory(inventory.site, copy, None, audit=recorder).import_records(
        records, origin, user, partial=partial
    )
    changes = [
        {
            "change": action.removeprefix("inventory."),
            "asset": asset,
            "commune": commune,
            "detail": {k: v for k, v in detail.items() if k != "source"},
        }
        for _, action, asset, commune, _, detail in recorder.entries
    ]
    return changes, _counts(report.as_dict())


def _counts(report: Mapping[str, Any]) -> dict[str, int]:
    return {k: int(report[k]) for k in ("added", "updated", "reclassified", "retired", "unchanged")}


def import_text(
    inventory: Inventory,
    text: str,
    *,
    name: str,
    fmt: Format,
    origin: str,
    user: str,
    partial: bool = False,
    dry_run: bool = False,
) -> dict[str, Any]:
    """Import an inventory file's text as the inventory of `origin` (or rehearse it).

    Answers the changes (each asset's), the counts, and every refused row with its file, line,
    field and why. A row whose id a later row repeats is refused: the later one is used. A
    refused row does not retire its asset: it is kept as it was (`kept`). A file that cannot be
    read as a whole imports nothing.
    """
    parsed = parse_file(text, name, fmt)
    errors, refused = parsed.errors, set(parsed.refused)
    answer: dict[str, Any] = {"file": name, "origin": origin, "partial": partial,
                              "dry_run": dry_run, "imported": False}  # fmt: skip
    if parsed.whole:
        empty = dict.fromkeys(("added", "updated", "reclassified", "retired", "unchanged"), 0)
        return {**answer, "counts": empty, "changes": [], "kept": [], "errors": _json(errors)}
    good: dict[str, AssetRecord] = {}
    line_of: dict[str, int] = {}
    for line, record in parsed.rows:
        problem = inventory.problem(record)
        if problem:
            what, why = _split(problem)
            errors.append(RowError(name, line, _where(fmt, line, what), why))
            refused.add(record.id)
            continue
        if record.id in good:
            at = f"in features[{line}]" if fmt is Format.geojson else f"on line {line}"
            again = f"{record.id} is listed again {at}, which is used"
            first = line_of[record.id]
            errors.append(RowError(name, first, _where(fmt, first, "id"), again))
            del good[record.id]  # the later row is used, in its own place
        good[record.id], line_of[record.id] = record, line
    kept: list[str] = []
    if not partial:  # a typo in a row must not retire the asset (and close its alarms)
        mine = {
            a.id: a
            for a in inventory.register.assets.values()
            if a.source == "inventory" and a.origin == origin
        }
        kept = sorted(i for i in refused if i in mine and i not in good)
        good.update((i, AssetRecord.of(mine[i])) for i in kept)
    records = list(good.values())
    changes, counts = rehearse(inventory, records, origin, user, partial)
    if not dry_run:
        report = inventory.import_records(records, origin, user, partial=partial)
        counts = _counts(report.as_dict())
        errors.extend(RowError(name, 0, *_split(p)) for p in report.errors)  # none: checked
    errors.sort(key=lambda e: e.line)
    return {**answer, "imported": not dry_run, "counts": counts, "changes": changes,
            "kept": kept, "errors": _json(errors)}  # fmt: skip


def _json(errors: Iterable[RowError]) -> list[dict[str, Any]]:
    return [
        {"file": e.file, "line": e.line, "field": e.field, "message": e.message} for e in errors
    ]


def records_in(register: Register, states: Iterable[str]) -> list[AssetRecord]:
    """Return the records of the assets in these states, by id."""
    wanted = set(states)
    assets = [a for a in register.assets.values() if a.state in wanted]
    if "retired" in wanted:
        assets += [a for a in register.retired.values() if a.id not in register.assets]
    return sorted((AssetRecord.of(a) for a in assets), key=lambda r: r.id)


def to_place(register: Register) -> list[dict[str, Any]]:
    """Return the assets found by discovery that wait for an operator to place them."""
    return [
        {
            "id": a.id,
            "class": a.asset_class,
            "commune": a.commune,
            "lat": a.lat,
            "lon": a.lon,
            "origin": a.origin,
            "name": a.name,
        }
        for a in sorted(register.assets.values(), key=lambda a: a.id)
        if a.state == "to_place"
    ]


# -- uploads in parts ----------------------------------------------------------------------------


@dataclass(slots=True)
class _Upload:
    parts: list[str]
    chars: int
    touched: float


class Uploads:
    """Files arriving in parts, each under the HTTP front's body limit, until imported."""

    def __init__(
        self,
        max_chars: int = UPLOAD_MAX_CHARS,
        max_pending: int = UPLOADS_MAX,
        idle_s: float = UPLOAD_IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_chars, self.max_pending, self.idle_s, self.clock = (
            max_chars, max_pending, idle_s, clock
        )  # fmt: skip
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.Lock()

    def add(self, upload: str, part: int, content: str) -> tuple[str, int, int]:
        """Append a part (the first one, `upload` empty, opens an upload): id, parts, chars."""
        now = self.clock()
        with self._lock:
            for key in [k for k, u in self._uploads.items() if now - u.touched > self.idle_s]:
                del self._uploads[key]
            if not upload:
                if part != 0:
                    raise ValueError(f"part {part}: a new upload starts with part 0")
                if len(self._uploads) >= self.max_pending:
                    raise ValueError(
                        f"{self.max_pending} inventory uploads are in progress; try again later"
                    )
                upload = secrets.token_urlsafe(12)
                self._uploads[upload] = _Upload([], 0, now)
            current = self._uploads.get(upload)
            if current is None:
                raise ValueError(f"no upload {upload!r} in progress (dropped after being idle?)")
            if part != len(current.parts):  # a part lost or sent twice: the text would be wrong
                raise ValueError(f"part {part}: expected part {len(current.parts)}")
            if current.chars + len(content) > self.max_chars:
                del self._uploads[upload]
                raise ValueError(f"the file is over {self.max_chars} characters")
            current.parts.append(content)
            current.chars += len(content)
            current.touched = now
            return upload, len(current.parts), current.chars

    def take(self, upload: str) -> str:
        """Return an upload's whole text, and forget it."""
        with self._lock:
            current = self._uploads.pop(upload, None)
        if current is None:
            raise ValueError(f"no upload {upload!r} in progress (dropped after being idle?)")
        return "".join(current.parts)


# -- the routes ----------------------------------------------------------------------------------


def _flag(name: str) -> bool:
    """Return a yes/no query parameter."""
    value = request.args.get(name, "").lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ValueError(f"{name}: expected true or false, got {value!r}")


def _choice(name: str, allowed: Iterable[str], default: str) -> str:
    """Return a query parameter that must be one of some values."""
    value = request.args.get(name, default)
    options = list(allowed)
    if value not in options:
        raise ValueError(f"{name}: expected one of {', '.join(options)}, got {value!r}")
    return value


def _body() -> dict[str, Any]:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise ValueError("expected a JSON object")
    return body


def _content(body: Mapping[str, Any], max_chars: int) -> str:
    text = body.get("content")
    if not isinstance(text, str):
        raise ValueError("content: expected the file's text")
    if len(text) > max_chars:
        raise ValueError(f"content: at most {max_chars} characters")
    return text


def register_inventory_api(
    server: Flask, inventory: Inventory, token: str, uploads: Uploads | None = None
) -> None:
    """Add the inventory routes over the running inventory, for requests bearing the token."""
    staged = uploads or Uploads()

    def upload() -> Response:
        body = _body()
        given = body.get("upload") or ""
        part = body.get("part")
        if not isinstance(given, str) or isinstance(part, bool) or not isinstance(part, int):
            raise ValueError("expected upload (text, empty to start) and part (a number)")
        key, parts, chars = staged.add(given, part, _content(body, staged.max_chars))
        return json_response({"upload": key, "parts": parts, "chars": chars})

    def import_file() -> Response:
        body = _body()
        # The user is the one the caller names: the token holder acts for the operator.
        user = check_text(body.get("user") or "", "user", USER_NAME_MAX)
        if not user:
            raise ValueError("missing user")
        name = check_text(request.args.get("name", ""), "name", FILE_NAME_MAX) or "inventory"
        origin = check_text(request.args.get("origin", ""), "origin", ORIGIN_MAX)
        fmt = Format(_choice("format", [f.value for f in Format], Format.csv.value))
        partial, dry_run = _flag("partial"), _flag("dry_run")
        if body.get("upload"):
            text = staged.take(check_text(body["upload"], "upload", 64))
        else:
            text = _content(body, staged.max_chars)
        answer = import_text(
            inventory,
            text,
            name=name,
            fmt=fmt,
            origin=origin or PurePath(name).name,
            user=user,
            partial=partial,
            dry_run=dry_run,
        )
        log.info(
            "inventory %s of %s (%d characters) by %s through the API: %s, %d rows refused",
            "rehearsal" if dry_run else "import",
            name,
            len(text),
            user,
            answer["counts"],
            len(answer["errors"]),
        )
        return json_response(answer)

    def export() -> Response:
        fmt = Format(_choice("format", [f.value for f in Format], Format.csv.value))
        sep = _choice("sep", SEPARATORS, ",")
        states = request.args.getlist("state") or ["active"]
        unknown = sorted(set(states) - set(STATES))
        if unknown:
            raise ValueError(f"state: expected {', '.join(STATES)}, got {', '.join(unknown)}")
        text = write_inventory(records_in(inventory.register, states), fmt, sep=sep)
        # GeoJSON goes as JSON, the type the API's client reads.
        kind = "text/csv" if fmt is Format.csv else "application/json"
        return Response(text, 200, mimetype=kind)

    def waiting() -> Response:
        return json_response({"assets": to_place(inventory.register)})

    add_route(server, routes.INVENTORY_UPLOAD, token, upload)
    add_route(server, routes.INVENTORY_IMPORT, token, import_file)
    add_route(server, routes.INVENTORY_EXPORT, token, export)
    add_route(server, routes.INVENTORY_TO_PLACE, token, waiting)
