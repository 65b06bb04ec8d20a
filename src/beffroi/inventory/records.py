"""One asset as an inventory file describes it, checked field by field, and what was wrong."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from beffroi.core.model import Asset


@dataclass(frozen=True, slots=True)
class AssetRecord:
    """An asset's record: where it is, what it is, and what the field needs to know of it."""

    id: str
    asset_class: str
    commune: str
    lat: float
    lon: float
    name: str = ""
    address: str = ""
    model: str = ""
    installed: date | None = None
    attributes: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, asset: Asset) -> AssetRecord:
        """Return the record of an asset of the register."""
        return cls(
            asset.id,
            asset.asset_class,
            asset.commune,
            asset.lat,
            asset.lon,
            asset.name,
            asset.address,
            asset.model,
            asset.installed,
            dict(asset.attributes),
        )


@dataclass(frozen=True, slots=True)
class RowError:
    """A row of an inventory file that cannot be used: file, line, field and why."""

    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" + (f": {self.field}" if self.field else "")
        return f"{where}: {self.message}"
