"""The residents' car-park page `/public/parking`: phone-first HTML, a map, a list, live counts.

The list is rendered on the server, so it reads without JavaScript and without the map; the
script (a static file, like Leaflet: the Content-Security-Policy allows no inline code)
draws the map and refreshes the list from `/public/parking/live.json`, the same cached
snapshot as the open-data feeds, every `page_refresh_s` seconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import unicodedata
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from flask import Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from beffroi.core.model import utcnow
from beffroi.hmi.basemap import public_map_settings
from beffroi.hmi.config import HmiSite
from beffroi.i18n import (
    LOCALES,
    N_,
    _,
    fmt_datetime,
    fmt_number,
    fmt_percent,
    fmt_time,
    in_locale,
    ngettext,
)

if TYPE_CHECKING:
    from beffroi.hmi.public import Park, ParkingFeed

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
QUERY_MAX = 100  # characters of a search kept: a name is far shorter

STATUS_TEXT = {
    "available": N_("Spaces available"),
    "almost_full": N_("Almost full"),
    "full": N_("Full"),
    "closed": N_("Closed"),
    "unavailable": N_("Data unavailable"),
}
TREND_TEXT = {
    "filling": N_("Filling up"),
    "emptying": N_("Emptying"),
    "stable": N_("Stable"),
}
# Occupancy going up, down or flat; always shown beside its words, never alone.
TREND_ARROW = {"filling": "↗", "emptying": "↘", "stable": "→"}
# What a map marker shows when there is no count to show.
MARKER_SYMBOL = {"closed": "×", "unavailable": "?"}


def locale_of(lang: str | None) -> str:
    """Return the locale asked for by ?lang=, French when none or unknown."""
    return lang if lang in LOCALES else "fr"


def sort_key(text: str) -> str:
    """Return a key that sorts names as a French reader expects (É with E, case ignored)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


def _when(ts: datetime | None, tz: ZoneInfo, today: datetime) -> str:
    """Return a time of today as "14:05", of another day with its date."""
    if ts is None:
        return ""
    local = ts.astimezone(tz)
    if local.date() == today.astimezone(tz).date():
        return fmt_time(local)
    return fmt_datetime(local)


def row(park: Park, tz: ZoneInfo, now: datetime) -> dict[str, Any]:
    """Return one car park as the page shows it, its words in the current locale."""
    if park.status == "closed":
        spaces = _("No spaces offered")
    elif park.status == "unavailable" or park.free is None:
        spaces = _("Free spaces: unknown")
    elif park.capacity is None:
        spaces = ngettext("%(free)s free space", "%(free)s free spaces", park.free) % {
            "free": fmt_number(park.free)
        }
    else:
        spaces = ngettext(
            "%(free)s free space out of %(capacity)s",
            "%(free)s free spaces out of %(capacity)s",
            park.free,
        ) % {"free": fmt_number(park.free), "capacity": fmt_number(park.capacity)}
    updated = _when(park.updated, tz, now)
    return {
        "id": park.id,
        "name": park.name,
        "commune": park.commune,
        "lat": park.lat,
        "lon": park.lon,
        "free": park.free,
        "capacity": park.capacity,
        "status": park.status,
        "trend": park.trend,
        "occupancy": park.occupancy,
        "text": {
            "spaces": spaces,
            "status": _(STATUS_TEXT[park.status]),
            "trend": _(TREND_TEXT[park.trend]) if park.trend else "",
            "arrow": TREND_ARROW[park.trend] if park.trend else "",
            "occupancy": _("%(pct)s occupied") % {"pct": fmt_percent(park.occupancy * 100)}
            if park.occupancy is not None
            else "",
            "updated": _("Updated %(time)s") % {"time": updated} if updated else "",
            "marker": MARKER_SYMBOL.get(park.status, fmt_number(park.free)),
        },
    }


def live_doc(generated: datetime, parks: list[Park], tz: ZoneInfo, locale: str) -> dict[str, Any]:
    """Return the page's data: every car park, sorted by commune then name, in one locale."""
    with in_locale(locale):
        rows = [row(p, tz, generated) for p in parks]
        rows.sort(key=lambda r: (sort_key(r["commune"]), sort_key(r["name"])))
        return {
            "generated": generated.astimezone(tz).isoformat(timespec="seconds"),
            "generated_text": _("Figures of %(time)s") % {"time": fmt_time(generated, tz)},
            "locale": locale,
            "car_parks": rows,
        }


def tile_sources(settings: Mapping[str, Any]) -> list[str]:
    """Return the CSP sources the configured tiles and schematic are fetched from."""
    out: list[str] = []
    for tile in settings.get("tiles") or []:
        url = str(tile.get("url", ""))
        parts = urlsplit(url)
        if not parts.scheme or not parts.netloc:
            continue  # relative: served by this site, already 'self'
        subdomains = tile.get("subdomains") or ""
        hosts = (
            [parts.netloc.replace("{s}", s) for s in subdomains]
            if "{s}" in parts.netloc and subdomains
            else [parts.netloc.replace("{s}", "*")]
        )
        out += [f"{parts.scheme}://{h}" for h in hosts if "{" not in h]
    return sorted(set(out))


def _version(path: Path) -> str:
    """Return a short digest of a static file, the ?v= that lets browsers cache it long."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    except OSError:
        return "0"


class ParkingPage:
    """Render the residents' page from the feed's cached snapshot."""

    def __init__(self, cfg: HmiSite, feed: ParkingFeed, static: Path):
        self.cfg, self.feed = cfg, feed
        self.env = Environment(
            loader=FileSystemLoader(TEMPLATES),
            autoescape=select_autoescape(default=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.globals.update(_=_, ngettext=ngettext)
        with in_locale("fr"):
            settings = public_map_settings(cfg)
        schematic = settings.get("schematic")
        schematic_origin = ""
        if schematic and urlsplit(str(schematic)).netloc:
            parts = urlsplit(str(schematic))
            schematic_origin = f"{parts.scheme}://{parts.netloc}"
        images = " ".join(["'self'", *tile_sources(settings)])
        # Scripts and styles from this site only (no inline code), data from here (and the
        # schematic's host if elsewhere), images from here and the tile servers.
        self.csp = (
            "default-src 'none'; script-src 'self'; style-src 'self'; "
            f"img-src {images}; connect-src 'self' {schematic_origin}".rstrip()
            + "; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
        )
        self.versions = {
            name: _version(static / name) for name in ("parking/parking.js", "parking/parking.css")
        }

    def render(self, args: Mapping[str, str]) -> Response:
        """Render the page, filtered by ?commune= and ?q= when given (the no-script filter)."""
        locale = locale_of(args.get("lang"))
        generated, parks = self.feed.snapshot()
        with in_locale(locale):
            doc = live_doc(generated, parks, self.feed.tz, locale)
            communes = sorted({r["commune"] for r in doc["car_parks"]}, key=sort_key)
            commune = args.get("commune", "")
            query = args.get("q", "")[:QUERY_MAX].strip()
            error = ""
            if commune and commune not in communes:
                error = _("Unknown commune: every car park is shown.")
                commune = ""
            rows = [
                r
                for r in doc["car_parks"]
                if (not commune or r["commune"] == commune)
                and (not query or sort_key(query) in sort_key(r["name"] + " " + r["commune"]))
            ]
            texts = {
                "announce": _("%(name)s: %(status)s"),
                "update": _("Update of %(time)s."),
                "failed": _("The figures could not be updated; next try in %(s)s seconds."),
                # Both forms, and the script picks by the locale's rule (French: n > 1).
                "shown_one": ngettext("%(n)s car park shown", "%(n)s car parks shown", 1),
                "shown": ngettext("%(n)s car park shown", "%(n)s car parks shown", 2),
                "none": _("No car park matches this filter."),
                "show": _("Show on the map"),
                "map": _("Map of the car parks"),
            }
            body = self.env.get_template("public_parking.html").render(
                locale=locale,
                other_locale="en" if locale == "fr" else "fr",
                metropolis=self.cfg.metropolis.name,
                doc=doc,
                rows=rows,
                communes=communes,
                commune=commune,
                query=query,
                error=error,
                settings=json.dumps(public_map_settings(self.cfg), ensure_ascii=False),
                texts=json.dumps(texts, ensure_ascii=False),
                live_url=f"/public/parking/live.json?lang={locale}",
                refresh_s=self.cfg.hmi.public.page_refresh_s,
                trend_min=fmt_number(self.cfg.hmi.public.trend_min),
                versions=self.versions,
                year=utcnow().year,
            )
        resp = self._secure(Response(body, 200, mimetype="text/html"))
        resp.headers["Content-Language"] = locale
        return resp

    def too_many(self, resp: Response) -> Response:
        """Turn the rate limit's answer into a short French page with the same Retry-After."""
        with in_locale("fr"):
            text = _("Too many requests from your connection: please try again in a minute.")
        page = (
            '<!doctype html><html lang="fr"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{text}</title></head><body><main><p>{text}</p></main></body></html>"
        )
        out = self._secure(Response(page, 429, mimetype="text/html"))
        out.headers["Retry-After"] = resp.headers.get("Retry-After", "60")
        out.headers["Cache-Control"] = "no-store"  # one client's refusal, not for a shared cache
        return out

    def _secure(self, resp: Response) -> Response:
        """Add the security headers of a public page, and a short shared cache."""
        resp.headers["Content-Security-Policy"] = self.csp
        resp.headers["Cache-Control"] = f"public, max-age={int(self.cfg.hmi.public.cache_s)}"
        resp.headers["Referrer-Policy"] = "no-referrer"
        resp.headers["X-Content-Type-Options"] = "nosniff"
        resp.headers["X-Frame-Options"] = "DENY"
        resp.headers["Content-Language"] = "fr"
        return resp
