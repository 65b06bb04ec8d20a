"""Inventory files as cities keep them: CSV and GeoJSON, read row by row with clear errors."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path

from beffroi.inventory.records import AssetRecord, RowError

REQUIRED = ("id", "class", "commune", "lat", "lon")
KNOWN = (*REQUIRED, "name", "address", "model", "installed")


def read_inventory(path: Path) -> tuple[list[AssetRecord], list[RowError]]:
    """Read an inventory file (CSV; GeoJSON by its suffix): its records and its bad rows."""
    records: list[AssetRecord] = []
    errors: list[RowError] = []
    with path.open(newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        missing = [c for c in REQUIRED if c not in (reader.fieldnames or [])]
        if missing:
            return [], [RowError(str(path), 1, ",".join(missing), "column missing")]
        for row in reader:
            line = reader.line_num
            try:
                records.append(
                    AssetRecord(
                        row["id"].strip(),
                        row["class"].strip(),
                        row["commune"].strip(),
                        float(row["lat"]),
                        float(row["lon"]),
                        (row.get("name") or "").strip(),
                        (row.get("address") or "").strip(),
                        (row.get("model") or "").strip(),
                        date.fromisoformat(row["installed"]) if row.get("installed") else None,
                        {k: v for k, v in row.items() if k not in KNOWN and k and v},
                    )
                )
            except ValueError as exc:
                errors.append(RowError(str(path), line, "", str(exc)))
    return records, errors
