"""The living inventory: sources merged into the register, changes applied while running.

Precedence, for one asset id: an operator's confirmation or an inventory file (the newest of
them) wins over discovery, which wins over the generated demo register. Discovery never
changes an asset an inventory or an operator placed: it only adds the assets nobody listed,
"to be placed" at their commune's centre until an operator confirms them, and reports those a
server no longer offers ("removed at source" after `removed_after_s`).

Every change goes through here: it is checked against the site (class, commune, place), kept in
the inventory store, applied to the register in one swap (its listeners bind and unbind alarms,
subscriptions and KPI inputs) and audited: who, what, from which source.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from beffroi.core.limits import check_text
from beffroi.core.model import Asset, AssetSource, AssetState, utcnow
from beffroi.core.register import Register, RegisterChange, tags_for
from beffroi.inventory.config import InventorySite
from beffroi.inventory.diff import changed_fields, diff
from beffroi.inventory.records import AssetRecord
from beffroi.inventory.store import InventoryStore

log = logging.getLogger(__name__)

ASSET_ID_MAX = 64
_SOURCES: dict[str, AssetSource] = {"generated": "generated", "inventory": "inventory",
                                    "discovery": "discovery"}  # fmt: skip
_STATES: dict[str, AssetState] = {"active": "active", "to_place": "to_place",
                                  "removed": "removed", "retired": "retired"}  # fmt: skip
TEXT_MAX = 200  # names, addresses, models, attribute values
_BACK: dict[str, AssetState] = {"discovery": "to_place"}  # state of an asset offered again


class AuditRecorder(Protocol):
    """Where inventory changes are recorded (the hash-chained audit log)."""

    def record_many(
        self, entries: Sequence[tuple[str, str, str, str, str, Mapping[str, Any]]]
    ) -> Any:
        """Append records as one transaction."""
        ...


@dataclass(slots=True)
class ImportReport:
    """What an import changed, and the records it refused (with why)."""

    origin: str
    added: int = 0
    updated: int = 0
    reclassified: int = 0
    retired: int = 0
    unchanged: int = 0
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        """Return the report as JSON-ready data."""
        return dataclasses.asdict(self)


class Inventory:
    """The register's sources, merged; every change checked, stored, applied and audited."""

    def __init__(
        self,
        site: InventorySite,
        register: Register,
        store: InventoryStore | None = None,
        *,
        audit: AuditRecorder | None = None,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.site, self.register, self.store = site, register, store
        self.audit, self.clock = audit, clock
        self._lock = threading.RLock()
        # tag → (since when the server does not offer it, the status code, the collector)
        self._gone: dict[str, tuple[datetime, int, str]] = {}
        # Changes made before the audit log opened (the start's imports), recorded once it does.
        self._unaudited: list[tuple[str, str, str, str, str, Mapping[str, Any]]] = []

    def attach_audit(self, audit: AuditRecorder) -> None:
        """Record changes in the audit log from now on, and those made before it opened."""
        with self._lock:
            self.audit = audit
            pending, self._unaudited = self._unaudited, []
        if pending:
            audit.record_many(pending)

    # -- start ------------------------------------------------------------------------------

    def load(self) -> RegisterChange:
        """Lay the stored records over the generated register (at start, before listeners)."""
        if self.store is None:
            return RegisterChange()
        added, retired, updated = [], [], []
        for row in self.store.records():
            try:
                asset = self._asset(
                    AssetRecord(
                        row["id"],
                        row["class"],
                        row["commune"],
                        row["lat"],
                        row["lon"],
                        row["name"] or "",
                        row["address"] or "",
                        row["model"] or "",
                        row["installed"],
                        row["attributes"],
                    ),
                    _SOURCES.get(row["source"], "inventory"),
                    row["origin"] or "",
                    _STATES.get(row["state"], "active"),
                )
            except ValueError as exc:  # the config changed under a stored record
                log.warning("inventory: stored asset %s is not used: %s", row["id"], exc)
                continue
            old = self.register.assets.get(asset.id)
            if asset.state == "retired":
                retired.append(asset)  # kept known, with its history, out of service
            elif old is None:
                added.append(asset)
            elif _same_tags(old, asset):
                updated.append((old, asset))
            else:
                retired.append(old)
                added.append(asset)
        change = RegisterChange(tuple(added), tuple(retired), tuple(updated), source="store")
        self.register.apply(change)
        log.info(
            "inventory: %d assets (%d from the store), %d retired",
            len(self.register.assets),
            len(added) + len(updated),
            len(self.register.retired),
        )
        return change

    # -- imports ----------------------------------------------------------------------------

    def records(self, origin: str | None = None) -> dict[str, AssetRecord]:
        """Return the records of the assets in service (of one import origin, or all)."""
        return {
            a.id: AssetRecord.of(a)
            for a in self.register.assets.values()
            if origin is None or (a.source == "inventory" and a.origin == origin)
        }

    def import_records(
        self, records: Sequence[AssetRecord], origin: str, user: str, *, partial: bool = False
    ) -> ImportReport:
        """Make the register hold these records as the inventory of `origin`.

        An asset of that origin the records no longer list is retired, unless `partial`. An id
        known from another source (generated, discovered) becomes this inventory's asset.
        """
        report = ImportReport(origin)
        checked: dict[str, AssetRecord] = {}
        for r in records:
            problem = self.problem(r)
            if problem:
                report.errors.append(f"{r.id or '?'}: {problem}")
            else:
                checked[r.id] = r  # a later row of the same id wins
        with self._lock:
            mine = {
                a.id: AssetRecord.of(a)
                for a in self.register.assets.values()
                if a.source == "inventory" and a.origin == origin
            }
            others = {
                a.id: a
                for a in self.register.assets.values()
                if a.id in checked and a.id not in mine
            }
            d = diff({**mine, **{i: AssetRecord.of(a) for i, a in others.items()}}, checked)
            if not partial:
                d.retired = [r for r in d.retired if r.id in mine]
            else:
                d.retired = []
            added: list[Asset] = []
            retired: list[Asset] = []
            updated: list[tuple[Asset, Asset]] = []
            log_rows: list[tuple[str, str, str, dict[str, Any]]] = []
            for rec in d.added:
                added.append(self._asset(rec, "inventory", origin))
                log_rows.append(("add", rec.id, rec.commune, {"class": rec.asset_class}))
            for before, rec in d.reclassified:
                old = self.register.assets[before.id]
                retired.append(old)
                added.append(self._asset(rec, "inventory", origin))
                log_rows.append(
                    (
                        "reclassify",
                        rec.id,
                        rec.commune,
                        {
                            "before": [before.asset_class, before.commune],
                            "after": [rec.asset_class, rec.commune],
                        },
                    )
                )
            for before, rec in d.updated:
                old = self.register.assets[before.id]
                new = self._asset(rec, "inventory", origin)
                updated.append((old, new))
                fields = changed_fields(before, rec)
                kind = "move" if {"lat", "lon"} & set(fields) else "update"
                log_rows.append((kind, rec.id, rec.commune, {"fields": fields}))
            # One set, not a scan per asset: a file taking over 40,000 generated assets that
            # all moved was quadratic (about a minute).
            handled = {r.id for r in d.added}
            handled.update(b.id for b, _ in (*d.updated, *d.reclassified))
            for id_, a in others.items():  # same record, now owned by this inventory
                if id_ in handled:
                    continue
                updated.append(
                    (a, dataclasses.replace(a, source="inventory", origin=origin, state="active"))
                )
            for rec in d.retired:
                old = self.register.assets[rec.id]
                retired.append(dataclasses.replace(old, state="retired"))
                log_rows.append(("retire", rec.id, rec.commune, {"reason": f"not in {origin}"}))
            report.added, report.retired = len(d.added), len(d.retired)
            report.updated, report.reclassified = len(d.updated), len(d.reclassified)
            report.unchanged = d.unchanged
            change = RegisterChange(
                tuple(added), tuple(retired), tuple(updated), user=user, source=f"import {origin}"
            )
            self._commit(change, user, f"inventory:{origin}", log_rows)
        log.info("inventory import %s by %s: %s", origin, user, report.as_dict())
        return report

    def problem(self, r: AssetRecord) -> str | None:
        """Say why a record cannot be an asset of this site, or None."""
        try:
            check_text(r.id, "id", ASSET_ID_MAX)
            for what in ("name", "address", "model"):
                check_text(getattr(r, what), what, TEXT_MAX)
            for k, v in r.attributes.items():
                check_text(k, "attribute name", 64)
                check_text(v, f"attribute {k}", TEXT_MAX)
        except ValueError as exc:
            return str(exc)
        if not r.id or not r.id.replace("-", "").replace("_", "").isalnum():
            return "id: letters, digits, '-' and '_' only"
        if r.asset_class not in self.site.asset_classes:
            return f"class: unknown asset class {r.asset_class!r}"
        if r.commune not in self.register.communes:
            return f"commune: unknown commune {r.commune!r}"
        if not (math.isfinite(r.lat) and math.isfinite(r.lon)):
            return "lat/lon: not a number"
        if not (-90 <= r.lat <= 90 and -180 <= r.lon <= 180):
            return f"lat/lon: outside the globe ({r.lat}, {r.lon})"
        return None

    # -- operators --------------------------------------------------------------------------

    def confirm(
        self, asset_id: str, user: str, *, lat: float, lon: float, name: str = "", address: str = ""
    ) -> Asset:
        """Place an asset found by discovery: it joins the inventory where the operator says."""
        with self._lock:
            old = self.register.assets.get(asset_id)
            if old is None or old.state != "to_place":
                raise ValueError(f"{asset_id} is not an asset to be placed")
            rec = dataclasses.replace(
                AssetRecord.of(old),
                lat=lat,
                lon=lon,
                name=name or old.name,
                address=address or old.address,
            )
            problem = self.problem(rec)
            if problem:
                raise ValueError(problem)
            new = self._asset(rec, "inventory", f"confirmed by {user}")
            self._commit(
                RegisterChange(updated=((old, new),), user=user, source="hmi"),
                user,
                "hmi",
                [("confirm", asset_id, old.commune, {"lat": lat, "lon": lon})],
            )
            return new

    def retire(self, asset_id: str, user: str, reason: str) -> Asset:
        """Take an asset out of service; its history stays, its alarms close with the reason."""
        with self._lock:
            old = self.register.assets.get(asset_id)
            if old is None:
                raise ValueError(f"no asset {asset_id} in service")
            gone = dataclasses.replace(old, state="retired")
            self._commit(
                RegisterChange(retired=(gone,), user=user, source=reason),
                user,
                "hmi",
                [("retire", asset_id, old.commune, {"reason": reason})],
            )
            return gone

    # -- discovery --------------------------------------------------------------------------

    def discovered(self, found: Sequence[Asset], origin: str) -> list[Asset]:
        """Take the assets a collector found: those nobody listed join as to be placed."""
        with self._lock:
            new = []
            for a in found:
                if a.id in self.register.assets or a.id in self.register.retired:
                    continue  # the inventory (or the generated register) has it: it wins
                centre = self.register.communes.get(a.commune)
                if centre is None or a.asset_class not in self.site.asset_classes:
                    continue
                new.append(
                    dataclasses.replace(
                        a,
                        lat=centre.lat,
                        lon=centre.lon,
                        source="discovery",
                        origin=origin,
                        state="to_place",
                    )
                )
            if new:
                log.warning(
                    "inventory: %d asset(s) found by %s are not in the inventory (to be placed):"
                    " %s",
                    len(new),
                    origin,
                    ", ".join(a.id for a in new[:20]) + (" …" if len(new) > 20 else ""),
                )
                rows = [("discover", a.id, a.commune, {"class": a.asset_class}) for a in new]
                self._commit(
                    RegisterChange(added=tuple(new), source=origin), "system", origin, rows
                )
            return new

    def not_offered(self, tags: Mapping[str, int], origin: str) -> None:
        """Note tags a server no longer offers (BadNodeIdUnknown); the grace period starts."""
        now = self.clock()
        with self._lock:
            for tag, code in tags.items():
                self._gone.setdefault(tag, (now, code, origin))

    def offered(self, tags: Sequence[str]) -> list[Asset]:
        """Note tags a server offers again; assets marked removed come back into service."""
        with self._lock:
            for tag in tags:
                self._gone.pop(tag, None)
            back = []
            for tag in tags:
                spec = self.register.tags.get(tag)
                asset = self.register.assets.get(spec.asset) if spec else None
                if asset is not None and asset.state == "removed" and asset not in back:
                    back.append(asset)
            if back:
                # Back as it was: in service, or still to be placed if nobody placed it yet.
                pairs = tuple(
                    (a, dataclasses.replace(a, state=_BACK.get(a.source, "active"))) for a in back
                )
                rows: list[tuple[str, str, str, dict[str, Any]]] = [
                    ("offered_again", a.id, a.commune, {}) for a in back
                ]
                self._commit(RegisterChange(updated=pairs, source="discovery"), "system", "", rows)
            return back

    def check_removed(self) -> list[Asset]:
        """Mark "removed at source" the assets whose every tag has been gone past the grace."""
        grace = timedelta(seconds=self.site.inventory.removed_after_s)
        now = self.clock()
        with self._lock:
            due = {t for t, (since, _, _) in self._gone.items() if now - since >= grace}
            removed = []
            for asset in self.register.assets.values():
                if asset.state in ("removed", "retired") or not asset.tags:
                    continue
                if all(t.name in due for t in asset.tags):
                    removed.append(asset)
            if not removed:
                return []
            pairs = tuple((a, dataclasses.replace(a, state="removed")) for a in removed)
            rows = [
                ("removed_at_source", a.id, a.commune, {"since": self._gone[a.tags[0].name][0]})
                for a in removed
            ]
            self._commit(RegisterChange(updated=pairs, source="discovery"), "system", "", rows)
            for a in removed:
                log.warning("inventory: %s is removed at source (gone for %s)", a.id, grace)
            return [after for _, after in pairs]

    # -- plumbing ---------------------------------------------------------------------------

    def _asset(
        self,
        r: AssetRecord,
        source: AssetSource,
        origin: str,
        state: AssetState = "active",
    ) -> Asset:
        cls = self.site.asset_classes.get(r.asset_class)
        if cls is None:
            raise ValueError(f"unknown asset class {r.asset_class!r}")
        if r.commune not in self.register.communes:
            raise ValueError(f"unknown commune {r.commune!r}")
        return Asset(
            r.id,
            r.asset_class,
            r.commune,
            r.lat,
            r.lon,
            cls.domain,
            tags_for(r.id, r.commune, cls),
            r.name,
            r.address,
            r.model,
            r.installed,
            dict(r.attributes),
            source,
            origin,
            state,
        )

    def _commit(
        self,
        change: RegisterChange,
        user: str,
        source: str,
        rows: Sequence[tuple[str, str, str, dict[str, Any]]],
    ) -> None:
        """Store, audit, then apply a change (nothing is applied that could not be kept)."""
        if not change:
            return
        if self.store is not None:
            self.store.save([*change.retired, *(a for _, a in change.updated), *change.added])
            self.store.log((user, source, c, a, m, d) for c, a, m, d in rows)
        entries = [
            (user, f"inventory.{c}", a, m, "ok", {"source": source, **d}) for c, a, m, d in rows
        ]
        if self.audit is not None:
            self.audit.record_many(entries)
        else:  # the start's imports, before the audit log opens
            self._unaudited.extend(entries)
        self.register.apply(change)


def _same_tags(a: Asset, b: Asset) -> bool:
    return (a.asset_class, a.commune) == (b.asset_class, b.commune)
