"""AG Grid options shared by every grid: the grid's own words in the user's language."""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from beffroi.i18n import current_locale

# AG Grid's French texts ("Aucune ligne à afficher", filters, paging), from the npm package
# @ag-grid-community/locale 36.2.0 (MIT, AG Grid Ltd), trimmed to the community grid's keys.
FRENCH = Path(__file__).with_name("ag-grid-fr.json")


@cache
def _french() -> dict[str, str]:
    texts: dict[str, str] = json.loads(FRENCH.read_text(encoding="utf-8"))
    return texts


def grid_options(**options: Any) -> dict[str, Any]:
    """Return a grid's dashGridOptions with its texts in the current locale."""
    if current_locale() == "fr":
        return {**options, "localeText": _french()}
    return dict(options)
