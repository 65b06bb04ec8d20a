"""What differs between two inventories: added, retired, moved, reclassified, renamed assets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from beffroi.inventory.records import AssetRecord

# Attributes of a record that change nothing of its tags (its place and what people call it).
_DESCRIPTIVE = ("lat", "lon", "name", "address", "model", "installed", "attributes")


@dataclass(slots=True)
class InventoryDiff:
    """The changes that turn one inventory into another, by asset id."""

    added: list[AssetRecord] = field(default_factory=list)
    retired: list[AssetRecord] = field(default_factory=list)
    # Same id, another class or commune: its tags change (the old ones keep their history).
    reclassified: list[tuple[AssetRecord, AssetRecord]] = field(default_factory=list)
    # Same id, class and commune: moved, renamed, other attributes.
    updated: list[tuple[AssetRecord, AssetRecord]] = field(default_factory=list)
    unchanged: int = 0

    def __bool__(self) -> bool:
        return bool(self.added or self.retired or self.reclassified or self.updated)

    def counts(self) -> dict[str, int]:
        """Return how many assets each kind of change concerns."""
        return {
            "added": len(self.added),
            "retired": len(self.retired),
            "reclassified": len(self.reclassified),
            "updated": len(self.updated),
            "unchanged": self.unchanged,
        }


def changed_fields(before: AssetRecord, after: AssetRecord) -> list[str]:
    """Return the descriptive fields that differ between two records of one asset."""
    return [f for f in _DESCRIPTIVE if getattr(before, f) != getattr(after, f)]


def diff(
    old: Mapping[str, AssetRecord], new: Mapping[str, AssetRecord], *, partial: bool = False
) -> InventoryDiff:
    """Return the changes from `old` to `new`; `partial`: assets absent from `new` stay."""
    out = InventoryDiff()
    for asset_id, after in new.items():
        before = old.get(asset_id)
        if before is None:
            out.added.append(after)
        elif (before.asset_class, before.commune) != (after.asset_class, after.commune):
            out.reclassified.append((before, after))
        elif changed_fields(before, after):
            out.updated.append((before, after))
        else:
            out.unchanged += 1
    if not partial:
        out.retired = [r for asset_id, r in old.items() if asset_id not in new]
    return out
