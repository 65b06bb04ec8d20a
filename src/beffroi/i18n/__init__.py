"""Translations and local formats: gettext catalogues kept in the repo, one locale per request."""

from __future__ import annotations

import contextlib
import contextvars
import decimal
import gettext as _stdlib_gettext
import math
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, tzinfo
from functools import cache
from pathlib import Path

from babel import dates, numbers
from babel.messages.plurals import get_plural
from babel.messages.pofile import read_po
from flask import g, has_request_context

# Message ids are English; French is the default interface of a French metropolis.
LOCALES: dict[str, str] = {"fr": "Français", "en": "English"}
DEFAULT_LOCALE = "fr"
SOURCE_LOCALE = "en"
CATALOGUES = Path(__file__).parent / "catalogues"
MISSING = "—"

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "beffroi_locale", default=None
)


def current_locale() -> str:
    """Return the locale of this moment: an explicit `in_locale`, the request's, or French."""
    forced = _override.get()
    if forced is not None:
        return forced
    if has_request_context():
        chosen = g.get("locale")
        if chosen in LOCALES:
            return str(chosen)
    return DEFAULT_LOCALE


def set_request_locale(locale: str | None) -> None:
    """Make a locale the current request's (the HMI sets the logged-in user's)."""
    g.locale = locale if locale in LOCALES else DEFAULT_LOCALE


@contextlib.contextmanager
def in_locale(locale: str | None) -> Iterator[None]:
    """Translate and format in one locale within the block (e-mails, exports, jobs)."""
    token = _override.set(locale if locale in LOCALES else DEFAULT_LOCALE)
    try:
        yield
    finally:
        _override.reset(token)


Entry = str | tuple[str, ...]


@cache
def catalogue(locale: str) -> dict[str | tuple[str, ...], Entry]:
    """Return every translated message of a locale, merged from its folder's .po files."""
    merged: dict[str | tuple[str, ...], Entry] = {}
    for path in sorted((CATALOGUES / locale).glob("*.po")):
        with path.open("rb") as f:
            cat = read_po(f, locale=locale)
        for msg in cat:
            if not msg.id or msg.fuzzy:
                continue  # the header, or a guess nobody checked
            key = tuple(msg.id) if isinstance(msg.id, list | tuple) else msg.id
            raw = msg.string
            text: Entry = tuple(raw) if isinstance(raw, list | tuple) else str(raw or "")
            if key not in merged and (all(text) if isinstance(text, tuple) else text):
                merged[key] = text
    return merged


@cache
def _plural_index(locale: str) -> Callable[[int], int]:
    return _stdlib_gettext.c2py(get_plural(locale).plural_expr)


def gettext(message: str) -> str:
    """Return a message in the current locale (the English id when it has no translation)."""
    locale = current_locale()
    if locale == SOURCE_LOCALE:
        return message
    found = catalogue(locale).get(message)
    return found if isinstance(found, str) else message


_ = gettext


def ngettext(singular: str, plural: str, n: int) -> str:
    """Return the singular or plural form of a message for n, in the current locale."""
    locale = current_locale()
    found = catalogue(locale).get((singular, plural)) if locale != SOURCE_LOCALE else None
    if isinstance(found, tuple):
        return found[min(_plural_index(locale)(n), len(found) - 1)]
    return singular if n == 1 else plural


def N_(message: str) -> str:
    """Mark a message for the catalogue, translated later where it is shown."""
    return message


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def fmt_number(x: float | None, decimals: int = 0) -> str:
    """Format a number the locale's way ("1 234,5" in French); "—" for none."""
    if x is None or _missing(float(x)):
        return MISSING
    pattern = "#,##0" + ("." + "0" * decimals if decimals > 0 else "")
    return _decimal(x, pattern)


def fmt_exact(x: float | None) -> str:
    """Format a number with up to six decimals, as a user may type it back ("12,5")."""
    if x is None or _missing(float(x)):
        return MISSING
    return _decimal(x, "#,##0.######")


def _decimal(x: float, pattern: str) -> str:
    try:
        return numbers.format_decimal(x, format=pattern, locale=current_locale())
    except decimal.InvalidOperation:  # beyond the decimal context's precision, e.g. -1e308
        return numbers.format_scientific(x, locale=current_locale())


def fmt_percent(x: float | None, decimals: int = 0) -> str:
    """Format a percentage given in percent (65 -> "65 %" in French, "65%" in English)."""
    if x is None or _missing(float(x)):
        return MISSING
    sep = "\u202f" if current_locale() == "fr" else ""
    return f"{fmt_number(x, decimals)}{sep}%"


def fmt_quantity(x: float | None, unit: str, decimals: int = 0) -> str:
    """Format a value with its unit, a no-break space between ("12,5 kW")."""
    text = fmt_number(x, decimals)
    return f"{text}\u00a0{unit}" if unit and text != MISSING else text


def _local(dt: datetime, tz: tzinfo | None) -> datetime:
    return dt.astimezone(tz) if tz is not None and dt.tzinfo is not None else dt


def fmt_datetime(dt: datetime | None, tz: tzinfo | None = None, seconds: bool = False) -> str:
    """Format a date and time in the locale's short form ("08/12/2026 14:05" in French)."""
    if dt is None:
        return MISSING
    local = _local(dt, tz)
    locale = current_locale()
    day = dates.format_date(local, "short", locale=locale)
    if locale == "fr":
        day = dates.format_date(local, "dd/MM/yyyy", locale=locale)
    return f"{day} {fmt_time(local, seconds=seconds)}"


def fmt_date(d: date | datetime | None, tz: tzinfo | None = None, long: bool = False) -> str:
    """Format a date: "08/12/2026" (short) or "8 décembre 2026" (long) in French."""
    if d is None:
        return MISSING
    if isinstance(d, datetime):
        d = _local(d, tz)
    locale = current_locale()
    if long:
        return dates.format_date(d, "long", locale=locale)
    return dates.format_date(d, "dd/MM/yyyy" if locale == "fr" else "short", locale=locale)


def fmt_time(t: time | datetime | None, tz: tzinfo | None = None, seconds: bool = False) -> str:
    """Format a time of day on 24 hours in French ("14:05"), the locale's way otherwise."""
    if t is None:
        return MISSING
    if isinstance(t, datetime):
        t = _local(t, tz)
    locale = current_locale()
    if locale == "fr":
        return dates.format_time(t, "HH:mm:ss" if seconds else "HH:mm", locale=locale)
    return dates.format_time(t, "medium" if seconds else "short", locale=locale)
